"""Attention heads as ``(layer, head)`` pairs: one parser, one validator, one file format.

Every head argument of the toolkit goes through :func:`parse_heads` (a spec: pairs, a
``"0.1,2.3"`` string, a JSON file of the localization stage or a LoFiT ``.npy`` array),
:func:`normalize_heads` (pairs only) and :func:`validate_heads` (against a model's
dimensions). Duplicates are an error everywhere, naming the head.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from interp_unlearn.core.bridge import TransformerBridge, model_dims

__all__ = ["Head", "ModelLike", "check_d_head", "device_of", "dims_of", "normalize_heads",
           "validate_heads"]

#: One attention head: ``(layer, head)``, both 0-based.
Head = tuple[int, int]
#: A model-like object the dimensions can be read from: an HF causal LM, a bridge, or
#: a ``model_dims`` dict (``n_layers``, ``n_heads``, ``d_head`` ...).
ModelLike = nn.Module | TransformerBridge | Mapping[str, int]


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
