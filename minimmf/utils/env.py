"""Process-level set-up, as in MMF's ``mmf.utils.env``."""

from __future__ import annotations

import importlib.util
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

from minimmf.utils.configuration import ConfigError
from minimmf.utils.general import get_minimmf_root

# modules whose import registers models, encoders, processors, ...; each dataset's
# builder (datasets/builders/<name>/builder.py) is found on disk, as MMF finds them
_REGISTERING_MODULES = (
    "minimmf.modules.encoders",
    "minimmf.modules.losses",
    "minimmf.modules.metrics",
    "minimmf.modules.optimizers",
    "minimmf.modules.schedulers",
    "minimmf.models.transformers.backends.huggingface",
    "minimmf.models.transformers.heads.mlp",
    "minimmf.models.mmf_transformer",
    "minimmf.datasets.processors",
)


def _builder_modules() -> list[str]:
    builders = get_minimmf_root() / "datasets" / "builders"
    return sorted(f"minimmf.datasets.builders.{path.parent.name}.builder" for path in builders.glob("*/builder.py"))


def setup_imports() -> None:
    """Import every module that registers a component, so that configs can
    name them. Idempotent and cheap after the first call."""
    for module in (*_REGISTERING_MODULES, *_builder_modules()):
        importlib.import_module(module)


def pick_seed(seed: int | None) -> int:
    """``seed`` itself, or a random one for ``-1`` or None (MMF's "pick one")."""
    if seed is None or seed == -1:
        return int.from_bytes(os.urandom(4), "little") % (2**31)
    return int(seed)


def set_seed(seed: int | None) -> int:
    """Seed Python, NumPy and torch; returns the seed used (see ``pick_seed``)."""
    seed = pick_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed


def import_user_dir(user_dir: str | os.PathLike | None) -> None:
    """Import ``env.user_dir`` (a package directory or a .py file) once, so that
    the components it registers can be named in configs, as MMF does.

    A relative path is looked up from the current directory.
    """
    if not user_dir:
        return
    path = _find_user_dir(Path(user_dir))
    init_file = path / "__init__.py" if path.is_dir() else path
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() != init_file.resolve():
            raise ConfigError(f"env.user_dir={user_dir}: a module named {name!r} is already imported from "
                              f"elsewhere ({loaded.__file__}); rename your directory")
        return
    locations = [str(path)] if path.is_dir() else None
    spec = importlib.util.spec_from_file_location(name, init_file, submodule_search_locations=locations)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def _find_user_dir(user_dir: Path) -> Path:
    candidate = user_dir if user_dir.is_absolute() else Path.cwd() / user_dir
    if (candidate / "__init__.py").is_file() or (candidate.suffix == ".py" and candidate.is_file()):
        return candidate.resolve()
    raise ConfigError(f"env.user_dir={user_dir}: not a package directory (with an __init__.py) nor a .py file "
                      f"(looked for {candidate})")
