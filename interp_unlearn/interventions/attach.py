"""Attach head interventions to a ``TransformerBridge`` for the duration of a ``with`` block.

An *intervention* is any object with a method ``fwd_hooks(model=None) -> list[(hook_name,
fn)]``: the hook points it edits and the TransformerLens hook functions ``fn(activation,
hook)`` that edit them (returning the new activation). :class:`HeadScale`,
:class:`HeadPerturbation` and :class:`HeadAblation` are interventions; their hook names
come from :func:`interp_unlearn.bridge.hook_z_name` (``blocks.{l}.attn.hook_z``,
``[batch, pos, head, d_head]``). When ``fwd_hooks`` accepts an argument, :func:`attach`
passes the bridge, and the intervention validates its layers, heads and ``d_head``
against it before any hook is added.

    with attach(bridge, HeadScale.for_model(bridge), HeadAblation([(2, 1)])):
        logits = bridge(input_ids, attention_mask=mask)

The hooks are added with ``bridge.hooks(...)``, which removes exactly the hooks it added
in a ``finally`` -- when the body returns, raises, or a hook raises during a forward
pass. Hooks the caller attached beforehand are left alone; nested ``attach`` blocks
compose (hooks on one point run in the order they were attached).

This module also holds the (layer, head) validation shared by the interventions and
:func:`interp_unlearn.selection.load_heads`.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from ..bridge import TransformerBridge, model_dims

__all__ = [
    "Head",
    "Intervention",
    "attach",
    "check_d_head",
    "collect_hooks",
    "device_of",
    "dims_of",
    "normalize_heads",
    "validate_heads",
]

#: One attention head: ``(layer, head)``, both 0-based.
Head = tuple[int, int]
HookFn = Callable[..., Any]
#: A model-like object the dimensions can be read from: an HF causal LM, a bridge, or
#: a ``model_dims`` dict (``n_layers``, ``n_heads``, ``d_head`` ...).
ModelLike = nn.Module | TransformerBridge | Mapping[str, int]


@runtime_checkable
class Intervention(Protocol):
    """What :func:`attach` needs from an intervention."""

    def fwd_hooks(self, model: Any = None) -> list[tuple[str, HookFn]]:
        """``(hook_name, fn)`` pairs; validate against ``model`` when it is given."""
        ...


def dims_of(model: ModelLike) -> dict[str, int]:
    """``n_layers``, ``n_heads``, ``d_head`` (and ``d_model``) of a model, bridge or dict."""
    if isinstance(model, Mapping):
        missing = [k for k in ("n_layers", "n_heads") if k not in model]
        if missing:
            raise ValueError(f"a dims mapping needs the keys n_layers and n_heads; missing {missing}")
        return {k: int(v) for k, v in model.items()}
    return model_dims(model)


def device_of(model: Any) -> torch.device | None:
    """Device of ``model``'s first parameter (None for a dims dict or a parameter-less module)."""
    if isinstance(model, nn.Module):
        try:
            return next(model.parameters()).device
        except StopIteration:
            return None
    return None


def _is_int(x: Any) -> bool:
    """Python or numpy integer, not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def normalize_heads(heads: Iterable[Sequence[int]], *, allow_empty: bool = False,
                    allow_duplicates: bool = False) -> list[Head]:
    """``heads`` as a list of ``(int, int)`` tuples, in the given order.

    Accepts tuples, lists and numpy integers (e.g. rows of a LoFiT ``.npy`` file).

    Raises:
        TypeError: an entry is not a pair of integers.
        ValueError: a negative index, a duplicate head (unless ``allow_duplicates``), or
            no heads at all (unless ``allow_empty``).
    """
    if isinstance(heads, (str, bytes)):
        raise TypeError(f"heads must be a list of (layer, head) pairs, got {heads!r}")
    out: list[Head] = []
    seen: set[Head] = set()
    for i, entry in enumerate(heads):
        try:
            pair = tuple(entry)
        except TypeError:
            raise TypeError(f"heads[{i}] = {entry!r} is not a (layer, head) pair") from None
        if len(pair) != 2 or not all(_is_int(x) for x in pair):
            raise TypeError(f"heads[{i}] = {entry!r} is not a (layer, head) pair of integers")
        layer, head = int(pair[0]), int(pair[1])
        if layer < 0 or head < 0:
            raise ValueError(f"heads[{i}] = ({layer}, {head}): layer and head must be >= 0")
        if (layer, head) in seen and not allow_duplicates:
            raise ValueError(f"head ({layer}, {head}) is listed twice")
        seen.add((layer, head))
        out.append((layer, head))
    if not out and not allow_empty:
        raise ValueError("no heads given: need at least one (layer, head) pair")
    return out


def validate_heads(heads: Iterable[Sequence[int]], model: ModelLike, *,
                   allow_empty: bool = False) -> list[Head]:
    """Check every ``(layer, head)`` against ``model``'s dimensions; return them normalised.

    Raises:
        ValueError: naming the first bad head and the valid range, e.g.
            ``"head 9 out of range for layer 2: valid heads are 0..3"`` or
            ``"layer 7 out of range (head (7, 0)): valid layers are 0..3"``.
    """
    dims = dims_of(model)
    n_layers, n_heads = dims["n_layers"], dims["n_heads"]
    out = normalize_heads(heads, allow_empty=allow_empty)
    for layer, head in out:
        if layer >= n_layers:
            raise ValueError(f"layer {layer} out of range (head ({layer}, {head})): "
                             f"valid layers are 0..{n_layers - 1}")
        if head >= n_heads:
            raise ValueError(f"head {head} out of range for layer {layer}: "
                             f"valid heads are 0..{n_heads - 1}")
    return out


def check_d_head(d_head: int, model: ModelLike, owner: str) -> None:
    """Raise ``ValueError`` if ``model``'s ``d_head`` differs from the intervention's."""
    dims = dims_of(model)
    if "d_head" in dims and dims["d_head"] != d_head:
        raise ValueError(f"{owner} was built for d_head={d_head} but the model has "
                         f"d_head={dims['d_head']}")


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
            "with interp_unlearn.bridge.to_bridge(hf_model, tokenizer)")
    hooks = collect_hooks(bridge, *interventions)
    with bridge.hooks(fwd_hooks=hooks):
        yield bridge
