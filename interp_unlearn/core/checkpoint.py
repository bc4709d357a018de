"""Checkpoint metadata: the ``interp_unlearn.json`` the toolkit writes next to every model
it saves (kind, preset, default scoring, where the world lives, how it was unlearned ...).

One file name (:data:`META_FILE`) and one reader/writer for every layer; a malformed file
is an error naming it. Beside it, ``checksums.json`` (:func:`write_checksums`) records the
SHA-256 of every weight/config/tokenizer file so that loading (:func:`verify_checksums`)
names a truncated or silently corrupted file instead of scoring it (issue 18: a same-size
corruption scored forget 0.28, indistinguishable from unlearning).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["CHECKSUM_FILE", "META_FILE", "IntegrityError", "meta_path", "read_meta",
           "verify_checksums", "write_checksums", "write_meta"]

META_FILE = "interp_unlearn.json"


def meta_path(checkpoint: str | os.PathLike) -> Path:
    """Where ``checkpoint``'s metadata lives."""
    return Path(checkpoint) / META_FILE


def read_meta(checkpoint: str | os.PathLike | None) -> dict[str, Any]:
    """``checkpoint``'s metadata, ``{}`` when there is none (or ``checkpoint`` is None).

    Raises:
        ValueError: the file exists but is not a JSON object (naming the file).
    """
    if checkpoint is None:
        return {}
    f = meta_path(checkpoint)
    if not f.is_file():
        return {}
    try:
        meta = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{f}: not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{f}: expected a JSON object, got {type(meta).__name__}")
    return meta


def write_meta(checkpoint: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write ``meta`` as ``checkpoint/interp_unlearn.json``; returns the path."""
    f = meta_path(checkpoint)
    f.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return f


# ------------------------------------------------------------------------- integrity

#: the checksum manifest the toolkit writes beside every checkpoint it saves
CHECKSUM_FILE = "checksums.json"
#: what is hashed: the weights and every file that decides how they are read or scored
_HASHED_NAMES = frozenset({"config.json", "generation_config.json", "tokenizer.json",
                           "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                           "vocab.json", "merges.txt", "model.safetensors.index.json",
                           "chat_template.jinja", META_FILE})


class IntegrityError(ValueError):
    """A checkpoint file does not match its checksum manifest (or is truncated)."""


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_checksums(checkpoint: str | os.PathLike) -> Path:
    """Write ``checksums.json`` (SHA-256 and size of every weight, config and tokenizer file
    in ``checkpoint``); returns its path."""
    d = Path(checkpoint)
    files = sorted(p for p in d.iterdir() if p.is_file()
                   and (p.suffix == ".safetensors" or p.name in _HASHED_NAMES))
    manifest = {"algorithm": "sha256",
                "files": {p.name: {"sha256": _sha256(p), "size": p.stat().st_size}
                          for p in files}}
    out = d / CHECKSUM_FILE
    out.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return out


def verify_checksums(checkpoint: str | os.PathLike) -> bool:
    """Check ``checkpoint`` against its ``checksums.json``; ``False`` when it has none.

    Raises:
        IntegrityError: a listed file is missing, truncated/extended, or changed (naming it).
    """
    d = Path(checkpoint)
    f = d / CHECKSUM_FILE
    if not f.is_file():
        return False
    try:
        manifest = json.loads(f.read_text(encoding="utf-8"))["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise IntegrityError(f"{f}: not a checksum manifest ({err})") from None
    for name, want in manifest.items():
        p = d / name
        if not p.is_file():
            raise IntegrityError(f"{p}: listed in {CHECKSUM_FILE} but missing")
        size = p.stat().st_size
        if size != want["size"]:
            raise IntegrityError(f"{p}: {size} bytes, {CHECKSUM_FILE} says {want['size']} "
                                 "(truncated or replaced)")
        if _sha256(p) != want["sha256"]:
            raise IntegrityError(f"{p}: contents differ from {CHECKSUM_FILE} (corrupted or "
                                 "modified after saving)")
    return True
