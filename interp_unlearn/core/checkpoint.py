"""Checkpoint metadata: the ``interp_unlearn.json`` the toolkit writes next to every model
it saves (kind, preset, default scoring, where the world lives, how it was unlearned ...).

One file name (:data:`META_FILE`) and one reader/writer for every layer; a malformed file
is an error naming it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["META_FILE", "meta_path", "read_meta", "write_meta"]

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
