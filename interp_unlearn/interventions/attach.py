"""Attach head interventions to a ``TransformerBridge`` for the duration of a ``with`` block.

An *intervention* is any object with a method ``fwd_hooks(model=None) -> list[(hook_name,
fn)]``: the hook points it edits and the TransformerLens hook functions ``fn(activation,
hook)`` that edit them (returning the new activation). :class:`HeadScale`,
:class:`HeadPerturbation` and :class:`HeadAblation` are interventions; their hook names
come from :func:`interp_unlearn.core.bridge.hook_z_name` (``blocks.{l}.attn.hook_z``,
``[batch, pos, head, d_head]``). When ``fwd_hooks`` accepts an argument, :func:`attach`
passes the bridge, and the intervention validates its layers, heads and ``d_head``
against it before any hook is added.

    with attach(bridge, HeadScale.for_model(bridge), HeadAblation([(2, 1)])):
        logits = bridge(input_ids, attention_mask=mask)

The hooks are added with ``bridge.hooks(...)``, which removes exactly the hooks it added
in a ``finally`` -- when the body returns, raises, or a hook raises during a forward
pass. Hooks the caller attached beforehand are left alone; nested ``attach`` blocks
compose (hooks on one point run in the order they were attached).

The (layer, head) parsing and validation live in :mod:`interp_unlearn.core.heads` and are
re-exported here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable


from interp_unlearn.core.bridge import TransformerBridge
from interp_unlearn.core.heads import (Head, ModelLike, check_d_head, device_of, dims_of,
                                     normalize_heads, validate_heads)

__all__ = [
    "Head",
    "Intervention",
    "ModelLike",
    "attach",
    "check_d_head",
    "collect_hooks",
    "device_of",
    "dims_of",
    "normalize_heads",
    "validate_heads",
]

HookFn = Callable[..., Any]


@runtime_checkable
class Intervention(Protocol):
    """What :func:`attach` needs from an intervention."""

    def fwd_hooks(self, model: Any = None) -> list[tuple[str, HookFn]]:
        """``(hook_name, fn)`` pairs; validate against ``model`` when it is given."""
        ...


def _fwd_hooks_of(intervention: Any, bridge: TransformerBridge) -> list[tuple[str, HookFn]]:
    method = getattr(intervention, "fwd_hooks", None)
    if not callable(method):
        raise TypeError(f"{type(intervention).__name__} is not an intervention: it has no "
                        "fwd_hooks() method")
    try:
        takes_model = len(inspect.signature(method).parameters) >= 1
    except (TypeError, ValueError):  # builtins without a signature
        takes_model = False
    hooks = list(method(bridge) if takes_model else method())
    for item in hooks:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                and callable(item[1])):
            raise TypeError(f"{type(intervention).__name__}.fwd_hooks() must return "
                            f"(hook_name, fn) pairs, got {item!r}")
    return hooks


def collect_hooks(bridge: TransformerBridge, *interventions: Any) -> list[tuple[str, HookFn]]:
    """All ``(hook_name, fn)`` pairs of ``interventions``, validated against ``bridge``,
    in order. Unknown hook names raise ``KeyError`` naming the hook."""
    hooks: list[tuple[str, HookFn]] = []
    for iv in interventions:
        hooks.extend(_fwd_hooks_of(iv, bridge))
    hook_dict = bridge.hook_dict
    for name, _ in hooks:
        if name not in hook_dict:
            raise KeyError(f"hook {name!r} does not exist on this bridge")
    return hooks


@contextmanager
def attach(bridge: TransformerBridge, *interventions: Any) -> Iterator[TransformerBridge]:
    """Register every intervention's forward hooks on ``bridge`` inside the block.

    All interventions are validated before any hook is added (a bad layer or head raises
    ``ValueError`` naming the valid range and leaves the bridge untouched). On exit --
    normal or by an exception -- exactly the hooks added here are removed.

    Yields:
        ``bridge`` itself.
    Raises:
        TypeError: ``bridge`` is not a ``TransformerBridge`` or an argument is not an
            intervention.
    """
    if not isinstance(bridge, TransformerBridge):
        raise TypeError(
            f"attach needs a TransformerBridge, got {type(bridge).__name__}; wrap an HF model "
            "with interp_unlearn.core.bridge.to_bridge(hf_model, tokenizer)")
    hooks = collect_hooks(bridge, *interventions)
    with bridge.hooks(fwd_hooks=hooks):
        yield bridge
