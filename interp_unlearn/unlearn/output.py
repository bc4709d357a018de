"""Where an unlearning run writes, safely: never over the input model, never over a
non-empty directory unless asked, and atomically.

The run builds its directory as a hidden sibling ``.<name>.partial`` and renames it to
``<name>`` only when the checkpoint is complete (also at a non-finite stop), so a killed
run never leaves old weights beside a new config, and a reader never sees half a
checkpoint. (Issue 18: ``unlearn --out`` used to overwrite silently, the input checkpoint
itself included.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["OutputDirError", "check_out_dir", "partial_dir", "publish"]


class OutputDirError(ValueError):
    """The output directory cannot be used (it is the input model or holds files)."""


def _inside(a: Path, b: Path) -> bool:
    """``a`` is ``b`` or below it."""
    try:
        a.relative_to(b)
        return True
    except ValueError:
        return False


def check_out_dir(out: Path, model_path: Path | None, overwrite: bool) -> None:
    """Raise :class:`OutputDirError` before any work when ``out`` would overwrite the input
    model (whatever ``overwrite`` says) or is a non-empty directory and not ``overwrite``."""
    out_r = out.expanduser().resolve()
    if model_path is not None:
        src = Path(model_path).expanduser().resolve()
        if _inside(out_r, src) or _inside(src, out_r):
            raise OutputDirError(f"output directory {out} would overwrite the input model "
                                 f"{src}; choose another --out")
    if out_r.exists() and not out_r.is_dir():
        raise OutputDirError(f"output path {out} exists and is not a directory")
    if out_r.is_dir() and any(out_r.iterdir()) and not overwrite:
        n = sum(1 for _ in out_r.iterdir())
        raise OutputDirError(f"output directory {out} is not empty ({n} entries); pass "
                             "--overwrite (overwrite=True) to replace it, or choose another --out")


def partial_dir(out: Path) -> Path:
    """The hidden sibling a run writes into before :func:`publish` (emptied first)."""
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, out: Path) -> Path:
    """Move the finished ``tmp`` to ``out`` (replacing what is there; checked beforehand by
    :func:`check_out_dir`)."""
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    tmp.rename(out)
    return out
