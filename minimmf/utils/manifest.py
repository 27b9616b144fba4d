"""The one record of what a run left for serving: ``manifest.json`` in
``save/`` (and in every archive), naming each file by its role and holding
its SHA-256, so that the trainer, archiving and the served model agree on
the files without each hard-coding their names, and archiving can refuse
files that do not belong together (a run interrupted after it rewrote some
of them, or files copied in from another run).

Roles: ``weights`` (the model's plain state dict), ``config`` (the complete
config the run saved), ``labels`` (the class list) and ``vocabulary`` (the
tokenizer's, when the model reads text). A folder without a manifest (MMF's,
or one saved before manifests) is read by the names those runs used.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from minimmf.utils.file_io import atomic_write

MANIFEST_NAME = "manifest.json"
ROLES = ("weights", "config", "labels", "vocabulary")
FORMAT = 1


class ManifestError(ValueError):
    """The files of a run do not belong together, or its manifest cannot be read; the message says which."""


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass
class RunManifest:
    run_id: str
    model: str  # the config's model (mmf_transformer)
    dataset: str  # the config's dataset (charades)
    files: dict[str, str]  # role -> file name, beside the manifest
    sha256: dict[str, str] = field(default_factory=dict)  # file name -> digest
    created: str = ""
    format: int = FORMAT

    @classmethod
    def of_files(cls, run_id: str, model: str, dataset: str, paths: dict[str, Path]) -> RunManifest:
        """The manifest of ``paths`` (role -> file) as they are now, to be written beside them."""
        unknown = set(paths) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown manifest role(s) {sorted(unknown)}; roles: {ROLES}")
        return cls(run_id, model, dataset, {role: Path(path).name for role, path in paths.items()},
                   {Path(path).name: sha256_of(path) for path in paths.values()},
                   time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def write(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / MANIFEST_NAME
        with atomic_write(path) as handle:
            json.dump(asdict(self), handle, indent=2)
            handle.write("\n")
        return path

    @classmethod
    def read(cls, folder: str | os.PathLike) -> RunManifest | None:
        """The manifest in ``folder``, or None when there is none."""
        path = Path(folder) / MANIFEST_NAME
        if not path.is_file():
            return None
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            manifest = cls(**data)
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as error:
            raise ManifestError(f"{path} cannot be read as a run manifest ({error}); train again, or delete it to "
                                "archive by the file names older runs used") from None
        if manifest.format > FORMAT:
            raise ManifestError(f"{path} has format {manifest.format}, newer than this minimmf reads ({FORMAT})")
        return manifest

    def path(self, folder: str | os.PathLike, role: str) -> Path | None:
        name = self.files.get(role)
        return Path(folder) / name if name else None

    def check(self, folder: str | os.PathLike, roles: tuple[str, ...] = ROLES) -> None:
        """Raise a ManifestError when a file of ``roles`` is missing or is not the one the run wrote."""
        for role in roles:
            path = self.path(folder, role)
            if path is None:
                continue
            if not path.is_file():
                raise ManifestError(f"{path} ({role}) is missing from the run {self.run_id}'s files")
            if self.sha256.get(path.name) not in (None, sha256_of(path)):
                raise ManifestError(
                    f"{path} ({role}) is not the file run {self.run_id} wrote ({MANIFEST_NAME} holds another "
                    "SHA-256): the run was interrupted after it rewrote it, or it comes from another run. Train "
                    "again to completion, or pass the files you mean explicitly")
