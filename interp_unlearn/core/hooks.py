"""One raw-hook context manager for PyTorch modules: remove exactly the hooks it added.

Every HF-side intervention of the toolkit registers its hooks through :func:`hooked` (or
keeps the handles it returns and calls :func:`remove_all`), so a hook never outlives the
block that added it -- whether the body returns, raises, or a hook raises mid-forward --
and hooks the caller added beforehand are left alone. (TransformerLens bridges use
``bridge.hooks(...)``, the same contract; see :func:`interp_unlearn.interventions.attach`.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["hooked", "register_all", "remove_all"]


def remove_all(handles: Iterable[Any]) -> None:
    """Remove ``handles`` (``torch.utils.hooks.RemovableHandle``), last added first."""
    for h in reversed(list(handles)):
        h.remove()


def register_all(registrations: Iterable[Callable[[], Any]]) -> list[Any]:
    """Call each registration (a zero-argument callable returning a handle); if one fails,
    remove the handles already added and re-raise. Returns the handles."""
    handles: list[Any] = []
    try:
        for register in registrations:
            handles.append(register())
    except BaseException:
        remove_all(handles)
        raise
    return handles


@contextmanager
def hooked(registrations: Iterable[Callable[[], Any]]) -> Iterator[list[Any]]:
    """``with hooked([lambda: m.register_forward_hook(f), ...]) as handles:`` -- the hooks
    live for the block and are removed in ``finally``."""
    handles = register_all(registrations)
    try:
        yield handles
    finally:
        remove_all(handles)
