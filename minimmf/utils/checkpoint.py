"""Checkpoints: reading weights safely (MMF's ``*_final.pth``, a plain state
dict; MMF or minimmf training checkpoints, a dict with ``model``; DDP's
``module.`` prefixes; always ``torch.load(weights_only=True)``), and the
trainer's saving and resuming in MMF's checkpoint layout, so that MMF resumes
minimmf's checkpoints and minimmf resumes MMF's.

Every file is written whole or not at all (``atomic_save``): a run killed
mid-write leaves the previous file and a temporary, which the next run
removes. Resuming trusts no file: it continues from the newest checkpoint
that reads back whole. A write that fails (disk full, I/O error, file size
limit) keeps the previous checkpoint and is reported by ``write_failed``, for
the trainer to stop on."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from minimmf.utils import distributed
from minimmf.utils.configuration import ConfigError
from minimmf.utils.file_io import atomic_save
from minimmf.utils.general import get_minimmf_root

logger = logging.getLogger(__name__)

# kept by old transformers versions (and so in MMF checkpoints); harmless to
# fill in from the model when a checkpoint written elsewhere lacks it
_OPTIONAL_BUFFERS = ("backend.transformer.embeddings.position_ids",)


def final_weights_name(model: str) -> str:
    """MMF's name for a run's final weights (the best model's plain state dict)."""
    return f"{model}_final.pth"


class CheckpointMismatchError(RuntimeError):
    """The checkpoint's keys or shapes do not fit the model built from the config."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (the previous one is intact)."""


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True`` and a clear error if the file
    is missing or not a PyTorch checkpoint."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise CheckpointMismatchError(
            f"{path} cannot be read as a PyTorch checkpoint with weights_only=True: {error}"
        ) from error


def extract_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The model weights inside any supported checkpoint layout."""
    state = checkpoint
    if "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    elif "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    return {_strip_prefix(key): value for key, value in state.items()}


def _strip_prefix(key: str) -> str:
    while key.startswith("module."):
        key = key[len("module."):]
    return key


def load_state_dict_checked(model: nn.Module, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
    """Load ``state_dict`` into ``model`` (a BaseModel), naming every missing,
    unexpected or mis-shaped key when they do not match."""
    state = _model_keyed_state(model, state_dict)
    if strict:
        missing, unexpected, mis_shaped = compare_state_keys(model.state_dict(), state)
        if missing or unexpected or mis_shaped:
            raise CheckpointMismatchError(_mismatch_message(missing, unexpected, mis_shaped) + "\nCheck that "
                                          "config.yaml is the one the checkpoint was trained with "
                                          "(number of labels, BERT size, modalities).")
    return model._load_state_dict_unchecked(state, strict=strict, assign=assign)


def _model_keyed_state(model: nn.Module, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The checkpoint's weights under the model's own key names."""
    state = {model.format_state_key(key): value for key, value in extract_state_dict(state_dict).items()}
    own = model.state_dict()
    for key in _OPTIONAL_BUFFERS:
        if key in own and key not in state:
            state[key] = own[key]
    return state


def compare_state_keys(own: Mapping[str, torch.Tensor],
                       state: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """The model's keys the checkpoint lacks, the checkpoint's keys the model
    lacks, and the shared keys whose shapes differ (described)."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mis_shaped = sorted(
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(own[key].shape)}"
        for key in set(own) & set(state)
        if isinstance(state[key], torch.Tensor) and state[key].shape != own[key].shape
    )
    return missing, unexpected, mis_shaped


def _shown(keys: list[str]) -> str:
    return ", ".join(keys[:10]) + (f", ... ({len(keys) - 10} more)" if len(keys) > 10 else "")


def _mismatch_message(missing: list[str], unexpected: list[str], mis_shaped: list[str]) -> str:
    lines = ["the checkpoint does not fit the model built from this config:"]
    for title, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mis_shaped)):
        if keys:
            lines.append(f"  {len(keys)} {title} key(s): {_shown(keys)}")
    return "\n".join(lines)


def load_partial_state(model: nn.Module, state_dict: Mapping[str, Any], source: str | os.PathLike) -> None:
    """Load what fits, as MMF (``strict=False``): missing and unexpected keys
    are warnings; weights of another shape are an error, since they cannot load."""
    state = _model_keyed_state(model, state_dict)
    missing, unexpected, mis_shaped = compare_state_keys(model.state_dict(), state)
    if mis_shaped:
        raise CheckpointMismatchError(
            f"{source}: " + _mismatch_message([], [], mis_shaped) + "\nTo start from the parts that fit, set "
            "checkpoint.resume_pretrained=True and checkpoint.pretrained_state_mapping={<model prefix>: "
            "<checkpoint prefix>, ...}, e.g. \"{'backend': 'backend', 'encoders': 'encoders'}\".")
    if missing:
        logger.warning("%s lacks %d of the model's weights, which keep their initial values: %s",
                       source, len(missing), _shown(missing))
    if unexpected:
        logger.warning("%s has %d weights the model does not use, left out: %s", source, len(unexpected),
                       _shown(unexpected))
    model.load_state_dict(state, strict=False)


def load_mapped_state(model: nn.Module, state_dict: Mapping[str, Any], mapping: Mapping[str, str],
                      source: str | os.PathLike) -> None:
    """MMF's ``pretrained_state_mapping``: for each ``{model prefix: checkpoint
    prefix}``, copy the checkpoint weight whose name, without its prefix, is
    the model weight's name without its own. Weights of another shape are
    skipped; what is left out is logged."""
    state = {model.format_state_key(key): value for key, value in extract_state_dict(state_dict).items()}
    own = model.state_dict()
    copied: list[str] = []
    skipped: list[str] = []
    for own_prefix, checkpoint_prefix in mapping.items():
        own_part, checkpoint_part = f"{own_prefix}.", f"{checkpoint_prefix}."
        by_rest = {key.replace(checkpoint_part, ""): key for key in state if checkpoint_part in key}
        for own_key in own:
            checkpoint_key = by_rest.get(own_key.replace(own_part, "")) if own_part in own_key else None
            if checkpoint_key is None:
                continue
            if state[checkpoint_key].shape != own[own_key].shape:
                skipped.append(f"{own_key} (checkpoint {tuple(state[checkpoint_key].shape)} "
                               f"vs model {tuple(own[own_key].shape)})")
                continue
            with torch.no_grad():
                own[own_key].copy_(state[checkpoint_key])
            copied.append(own_key)
    if not copied:
        raise CheckpointMismatchError(f"checkpoint.pretrained_state_mapping={dict(mapping)} matches no weight of "
                                      f"{source}; its keys look like: {_shown(sorted(state))}")
    logger.info("loaded %d weights from %s (checkpoint.pretrained_state_mapping)", len(copied), source)
    if skipped:
        logger.warning("skipped %d weights of another shape: %s", len(skipped), _shown(skipped))
    left_out = sorted(set(own) - set(copied))
    if left_out:
        logger.warning("%d of the model's weights are not in the mapping and keep their initial values: %s",
                       len(left_out), _shown(left_out))


def git_details(directory: str | os.PathLike) -> dict[str, str]:
    """MMF's ``git/*`` checkpoint fields for the code in ``directory``, or none
    outside a git checkout (or without git)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        return {
            "git/branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "git/commit_hash": git("rev-parse", "HEAD"),
            "git/commit_author": git("log", "-1", "--format=%an"),
            "git/commit_message": git("log", "-1", "--format=%B"),
            "git/diff": git("diff", "--no-prefix"),
        }
    except (OSError, subprocess.CalledProcessError):
        return {}


def checkpoint_to_load(config: Any) -> tuple[Path, bool] | None:
    """The file a run starts from, and whether only ``pretrained_state_mapping``
    is taken from it, with MMF's precedence: ``checkpoint.resume`` (the first of
    ``resume_candidates``) when save_dir holds a checkpoint, then
    ``resume_file``. None: start from scratch."""
    checkpoint_config = config.checkpoint
    if checkpoint_config.resume:
        candidates = resume_candidates(Path(config.env.save_dir), bool(checkpoint_config.resume_best))
        if candidates:
            return candidates[0], False
    if checkpoint_config.resume_file:
        path = Path(checkpoint_config.resume_file)
        if not path.is_file():
            raise ConfigError(f"checkpoint.resume_file={path}: no such file")
        return path, bool(checkpoint_config.resume_pretrained)
    if checkpoint_config.resume_zoo:
        raise ConfigError(f"checkpoint.resume_zoo={checkpoint_config.resume_zoo}: MMF's model zoo is a download, "
                          "and nothing is downloaded here; download the checkpoint yourself and pass "
                          "checkpoint.resume_file=<path> (with checkpoint.resume_pretrained=True to finetune)")
    return None


def periodic_checkpoints(save_dir: Path) -> list[Path]:
    """``models/model_<update>.ckpt``, newest first."""
    found = [(int(path.stem.split("_", 1)[1]), path) for path in (save_dir / "models").glob("model_*.ckpt")
             if path.stem.split("_", 1)[1].isdigit()]
    return [path for _, path in sorted(found, reverse=True)]


def resume_candidates(save_dir: Path, resume_best: bool) -> list[Path]:
    """The checkpoints ``checkpoint.resume`` continues from, in the order tried:
    current.ckpt, the periodic ones newest first, then best.ckpt (as MMF, the
    other one when the first is missing); with ``resume_best``, best.ckpt first."""
    current, best = save_dir / "current.ckpt", save_dir / "best.ckpt"
    order = [best, current, *periodic_checkpoints(save_dir)] if resume_best \
        else [current, *periodic_checkpoints(save_dir), best]
    return [path for path in order if path.is_file()]


def _update_of(path: Path) -> int | None:
    """The update in a periodic checkpoint's name."""
    return int(path.stem.split("_", 1)[1]) if path.parent.name == "models" else None


def read_newest_whole(candidates: list[Path], map_location: Any) -> tuple[Path, dict[str, Any]]:
    """The first of ``candidates`` that reads back whole, or, when that is
    current.ckpt, a periodic checkpoint of a later update that does (written
    just before a write of current.ckpt failed). Files that do not read are
    logged and skipped; when none reads, an error: a run never starts over
    silently."""
    failures: list[str] = []

    def read(path: Path) -> dict[str, Any] | None:
        try:
            return load_checkpoint_file(path, map_location=map_location)
        except CheckpointMismatchError as error:
            logger.warning("%s does not read back whole, skipped (%s)", path, error.__cause__ or error)
            failures.append(f"{path} ({error.__cause__ or error})")
            return None

    for position, path in enumerate(candidates):
        checkpoint = read(path)
        if checkpoint is None:
            continue
        if path.name == "current.ckpt":
            updates = int(checkpoint.get("num_updates") or 0)
            for later in (p for p in candidates[position + 1:] if (_update_of(p) or 0) > updates):
                newer = read(later)
                if newer is not None:
                    logger.info("%s holds update %d and %s a later one: resuming from the later", path, updates,
                                later)
                    return later, newer
        if failures:
            logger.warning("resuming from %s, the newest checkpoint that reads back whole", path)
        return path, checkpoint
    raise CheckpointMismatchError(
        "checkpoint.resume=True but no checkpoint in the save_dir reads back whole: " + "; ".join(failures)
        + ". Start from one of them with checkpoint.resume_file=<path>, or move them away to start afresh.")


def check_save_dir(config: Any, trains: bool) -> None:
    """A training run that does not resume refuses a save_dir holding the
    checkpoints of an earlier run: it would mix its own with them (and a
    later resume would pick the newest of either). Resuming (``checkpoint.resume``),
    another ``env.save_dir`` or moving the files away are the ways on."""
    if not trains or config.checkpoint.resume:
        return
    save_dir = Path(config.env.save_dir)
    found = [path for path in (save_dir / "current.ckpt", save_dir / "best.ckpt",
                               save_dir / final_weights_name(config.model)) if path.is_file()]
    periodic = periodic_checkpoints(save_dir)
    if not found and not periodic:
        return
    names = [path.name for path in found] + ([f"models/ ({len(periodic)} checkpoints)"] if periodic else [])
    differences = config_differences(save_dir / "config.yaml", config)
    said = f"; its config.yaml differs in {', '.join(differences)}" if differences else ""
    raise ConfigError(f"env.save_dir={save_dir} already holds the checkpoints of an earlier run ({', '.join(names)})"
                      f"{said}. To continue that run, add checkpoint.resume=True; to start afresh, choose another "
                      f"env.save_dir or move {save_dir} away.")


# what the saved config records about the machine, and the paths: not a difference between runs
_RECORDED_KEYS = ("training.seed", "training.device", "distributed.world_size", "distributed.backend", "env.")


def config_differences(saved_path: Path, config: Any, shown: int = 5) -> list[str]:
    """The leaves of ``config`` that differ from the config saved at ``saved_path``, as ``key (saved -> now)``."""
    if not saved_path.is_file():
        return []
    saved = _leaves(OmegaConf.to_container(OmegaConf.load(saved_path), resolve=False))
    now = _leaves(OmegaConf.to_container(config, resolve=False))
    keys = sorted(key for key in set(saved) | set(now)
                  if saved.get(key) != now.get(key) and not key.startswith(_RECORDED_KEYS))
    changes = [f"{key} ({saved.get(key, '<absent>')} -> {now.get(key, '<absent>')})" for key in keys[:shown]]
    return changes + ([f"... ({len(keys) - shown} more)"] if len(keys) > shown else [])


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        return {key: value for name, child in node.items() for key, value in _leaves(child, f"{prefix}{name}.").items()}
    return {prefix.rstrip("."): node}


def state_bytes(obj: Any) -> int:
    """The bytes of the tensors in ``obj`` (nested dicts and lists), each storage once."""
    storages: dict[tuple[str, int], int] = {}

    def visit(node: Any) -> None:
        if isinstance(node, torch.Tensor):
            storage = node.untyped_storage()
            storages[(str(node.device), storage.data_ptr())] = storage.nbytes()
        elif isinstance(node, Mapping):
            for value in node.values():
                visit(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                visit(value)

    visit(obj)
    return sum(storages.values())


def _os_error(error: BaseException) -> OSError | None:
    """The OSError behind a failed write (torch.save wraps it in a RuntimeError)."""
    while error is not None:
        if isinstance(error, OSError):
            return error
        error = error.__cause__ or error.__context__
    return None


def _size(count: int) -> str:
    return f"{count / 1e9:,.1f} GB" if count >= 10**10 else f"{count / 1e6:,.0f} MB"


class Checkpoint:
    """Saving and resuming a trainer's state under ``env.save_dir``:

    - ``current.ckpt``: the training state, MMF's fields (model, optimizer,
      lr_scheduler, fp16_scaler, num_updates, current_iteration,
      current_epoch, best_update, best_iteration, best_metric_value, config
      and, with ``save_git_details``, git/*) and, for an exact resume, every
      process's ``rank_states`` and the ``train_position`` in the epoch;
    - ``best.ckpt``: the same at the best evaluation so far;
    - ``models/model_<update>.ckpt``: one per ``checkpoint_interval`` (the
      last ``max_to_keep``);
    - ``<model>_final.pth``: the best model's plain state dict (MMF's final file).

    Every process calls ``save`` and ``save_best`` (they gather every
    process's state); the main one writes.
    """

    def __init__(self, trainer: Any):
        self.trainer = trainer
        self.config = trainer.config
        self.save_dir = trainer.save_dir
        self.models_dir = self.save_dir / "models"
        self.best_state: dict[str, torch.Tensor] | None = None
        save_git = self.config.checkpoint.save_git_details and trainer.is_main
        self.git_fields = git_details(get_minimmf_root()) if save_git else {}
        self.saved_update: int | None = None
        self.newest: tuple[Path, int] | None = None  # the newest checkpoint on disk and its update
        self.write_failed: CheckpointWriteError | None = None

    @property
    def final_path(self) -> str:
        return os.path.join(self.save_dir, final_weights_name(self.config.model))

    def _model_state(self) -> dict[str, torch.Tensor]:
        return self.trainer.unwrapped_model.state_dict()

    def state(self) -> dict[str, Any]:
        """The training state (every process takes part: ``rank_states`` are gathered)."""
        trainer = self.trainer
        early_stopping = trainer.early_stopping
        state = {
            "model": self._model_state(),
            "optimizer": trainer.optimizer.state_dict(),
            "best_iteration": early_stopping.best_iteration,
            "current_iteration": trainer.current_iteration,
            "current_epoch": trainer.current_epoch,
            "num_updates": trainer.num_updates,
            "best_update": early_stopping.best_update,
            "best_metric_value": early_stopping.best_value,
            "fp16_scaler": trainer.scaler.state_dict(),
            "config": _plain_config(self.config),
            **self.git_fields,
            "rank_states": distributed.all_gather_objects(trainer.rank_state()),
            "train_position": trainer.train_position(),
        }
        # MMF loads lr_scheduler whenever the key is there, so it is left out rather than None
        if trainer.scheduler is not None:
            state["lr_scheduler"] = trainer.scheduler.state_dict()
        return state

    def save(self, periodic: bool = True) -> None:
        """models/model_<update>.ckpt (unless not ``periodic``: a stop between
        two intervals, when time is short, writes current.ckpt alone), then
        current.ckpt. After a failed write, ``write_failed`` says why and the
        files written before are intact."""
        state = self.state()
        update = self.trainer.num_updates
        if self.trainer.is_main:
            self.models_dir.mkdir(parents=True, exist_ok=True)
            if periodic and not self._write(state, self.models_dir / f"model_{update}.ckpt"):
                return
            if not self._write(state, self.save_dir / "current.ckpt"):
                return
            self._prune()
        self.saved_update = update

    def _write(self, obj: Any, path: Path) -> bool:
        """Write ``obj`` to ``path`` whole; False, with ``write_failed`` set, when
        the file system refuses it."""
        try:
            atomic_save(obj, path)
        except (OSError, RuntimeError) as error:
            cause = _os_error(error)
            if cause is None:
                raise
            self.write_failed = CheckpointWriteError(self._write_failure(path, cause, state_bytes(obj)))
            return False
        if "model" in obj:
            self.newest = (path, self.trainer.num_updates)
        return True

    def _write_failure(self, path: Path, error: OSError, needed: int) -> str:
        free = shutil.disk_usage(path.parent).free
        reason = os.strerror(error.errno) if error.errno else str(error)
        kept = (f"the newest checkpoint on disk, {self.newest[0]} (update {self.newest[1]}), is intact"
                if self.newest else "no checkpoint of this run was written before")
        hint = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some of your quota",
                errno.EFBIG: "raise the file size limit (ulimit -f)"}.get(error.errno, "fix the file system")
        return (f"cannot write {path}: {reason} (it needs about {_size(needed)}; {_size(free)} free on "
                f"{path.parent}); {kept}; {hint}, then continue with checkpoint.resume=True")

    def _prune(self) -> None:
        keep = int(self.config.checkpoint.max_to_keep)
        if keep <= 0:
            return
        for old in periodic_checkpoints(self.save_dir)[keep:]:
            old.unlink()

    def save_best(self) -> None:
        self.best_state = {key: value.detach().cpu().clone() for key, value in self._model_state().items()}
        state = self.state()
        if self.trainer.is_main:
            self._write(state, self.save_dir / "best.ckpt")

    def restore_best(self) -> None:
        """Load the best weights back into the model (used for the final evaluation)."""
        if self.best_state is not None:
            self.trainer.unwrapped_model.load_state_dict(self.best_state)

    def finalize(self) -> None:
        """``<model>_final.pth``; raises ``CheckpointWriteError`` when it cannot be written."""
        if self.trainer.is_main:
            weights = self.best_state if self.best_state is not None else self._model_state()
            if not self._write(weights, Path(self.final_path)):
                raise self.write_failed

    def load_state_dict(self) -> None:
        """Start from the checkpoint ``checkpoint_to_load`` picks, if any: with
        ``checkpoint.resume``, the newest of save_dir's that reads back whole."""
        resume_config = self.config.checkpoint
        candidates = resume_candidates(self.save_dir, bool(resume_config.resume_best)) if resume_config.resume else []
        if candidates:
            path, checkpoint = read_newest_whole(candidates, self.trainer.device)
            pretrained = False
        else:
            found = checkpoint_to_load(self.config)
            if found is None:
                if resume_config.resume:
                    logger.info("checkpoint.resume=True but %s holds no checkpoint: starting from scratch",
                                self.save_dir)
                return
            path, pretrained = found
            checkpoint = load_checkpoint_file(path, map_location=self.trainer.device)
        mapping = self.config.checkpoint.pretrained_state_mapping if pretrained else {}
        model = self.trainer.unwrapped_model
        if mapping:
            load_mapped_state(model, checkpoint, mapping, path)
            return
        load_partial_state(model, checkpoint, path)
        if "model" in checkpoint:  # a training checkpoint; a .pth holds the weights alone
            self._restore_training_state(checkpoint, path)
        if path.name == "best.ckpt" and not self.config.checkpoint.resume_best and self.config.checkpoint.resume:
            logger.warning("no current.ckpt in %s: resumed from best.ckpt instead", self.save_dir)
        if candidates:
            self.newest = (path, self.trainer.num_updates)
        logger.info("resumed from %s at update %d (iteration %d, epoch %d)", path, self.trainer.num_updates,
                    self.trainer.current_iteration, self.trainer.current_epoch)

    def _restore_training_state(self, checkpoint: Mapping[str, Any], path: Path) -> None:
        """The optimizer, counters with the scheduler and best metric, and the fp16
        scaler, each unless ``checkpoint.reset`` says to start it afresh."""
        reset = self.config.checkpoint.reset
        if not (reset.all or reset.optimizer):
            self._load_optimizer(checkpoint, path)
        if not (reset.all or reset.counts):
            self._load_counts(checkpoint)
            self._load_scheduler(checkpoint)
            self._load_best_weights()
            self._load_resume_point(checkpoint, path)
        if not (reset.all or reset.fp16_scaler) and checkpoint.get("fp16_scaler"):
            # an empty state comes from a run without fp16, and would not load into an enabled scaler
            self.trainer.scaler.load_state_dict(checkpoint["fp16_scaler"])

    def _load_optimizer(self, checkpoint: Mapping[str, Any], path: Path) -> None:
        if "optimizer" not in checkpoint:
            logger.warning("%s has no optimizer state: the optimizer starts afresh", path)
            return
        try:
            self.trainer.optimizer.load_state_dict(checkpoint["optimizer"])
        except ValueError as error:
            raise ConfigError(f"{path}: its optimizer state does not fit this model ({error}); set "
                              "checkpoint.reset.optimizer=True to start the optimizer afresh") from None

    def _load_counts(self, checkpoint: Mapping[str, Any]) -> None:
        trainer, early_stopping = self.trainer, self.trainer.early_stopping
        resume_best = bool(self.config.checkpoint.resume_best)
        if "best_update" in checkpoint:
            trainer.num_updates = int(checkpoint["best_update" if resume_best else "num_updates"])
            trainer.current_iteration = int(checkpoint.get("best_iteration" if resume_best else "current_iteration",
                                                           trainer.current_iteration))
            trainer.current_epoch = int(checkpoint.get("current_epoch", trainer.current_epoch))
            early_stopping.best_update = int(checkpoint["best_update"])
        elif "best_iteration" in checkpoint:
            # MMF's older layout counted iterations only; MMF reads it this way round
            use_current = resume_best and "current_iteration" in checkpoint
            trainer.current_iteration = int(checkpoint["current_iteration" if use_current else "best_iteration"])
            trainer.num_updates = trainer.current_iteration
        early_stopping.best_iteration = int(checkpoint.get("best_iteration", early_stopping.best_iteration))
        if checkpoint.get("best_metric_value") is not None:
            early_stopping.best_value = float(checkpoint["best_metric_value"])

    def _load_best_weights(self) -> None:
        """The weights of the best evaluation so far, which the run ends with
        unless it finds better (MMF reads them from best.ckpt too)."""
        best_path = self.save_dir / "best.ckpt"
        if not best_path.is_file():
            return
        try:
            self.best_state = extract_state_dict(load_checkpoint_file(best_path))
        except CheckpointMismatchError as error:
            logger.warning("%s does not read back whole (%s): the run ends with the weights of its best evaluation "
                           "from now on", best_path, error.__cause__ or error)

    def _load_resume_point(self, checkpoint: Mapping[str, Any], path: Path) -> None:
        """Where in its epoch the run was and this process's random states
        (minimmf's extra keys), for an exact continuation. Without them (MMF's
        checkpoints) the next epoch starts, as in MMF."""
        position = checkpoint.get("train_position")
        if position is None:
            return
        rank_states = checkpoint.get("rank_states") or []
        world_size = distributed.get_world_size()
        if len(rank_states) != world_size:
            logger.warning("%s was written by %d process(es) and this run has %d: the epoch goes on where it "
                           "stopped, but the random streams (dropout) start afresh, so the run does not continue "
                           "exactly", path, len(rank_states), world_size)
        own = rank_states[distributed.get_rank()] if len(rank_states) == world_size else None
        self.trainer.resume_at(position, own)

    def _load_scheduler(self, checkpoint: Mapping[str, Any]) -> None:
        scheduler = self.trainer.scheduler
        if scheduler is None:
            return
        if checkpoint.get("lr_scheduler") is not None:
            scheduler.load_state_dict(checkpoint["lr_scheduler"])
        else:
            logger.warning("the checkpoint has no lr_scheduler state: the schedule continues from update %d",
                           self.trainer.num_updates)
            scheduler.last_epoch = self.trainer.num_updates


def _plain_config(config: Any) -> Any:
    return OmegaConf.to_container(config, resolve=True) if OmegaConf.is_config(config) else config
