"""Attention heads as ``(layer, head)`` pairs: one parser, one validator, one file format.

Every head argument of the toolkit goes through :func:`parse_heads` (a spec: pairs, a
``"0.1,2.3"`` string, a JSON file of the localization stage or a LoFiT ``.npy`` array),
:func:`normalize_heads` (pairs only) and :func:`validate_heads` (against a model's
dimensions). Duplicates are an error everywhere, naming the head.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from interp_unlearn.core.bridge import TransformerBridge, model_dims

__all__ = ["Head", "ModelLike", "check_d_head", "device_of", "dims_of", "normalize_heads",
           "parse_heads", "validate_heads"]

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


_HEAD_KEYS = ("heads", "selected_heads", "selected", "top_heads")


def _read_heads_file(path: Path) -> Any:
    if path.suffix == ".npy":  # a LoFiT head array, rows (layer, head)
        return np.load(path, allow_pickle=False).tolist()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if isinstance(raw, dict):
        for key in _HEAD_KEYS:
            if key in raw:
                return raw[key]
        raise ValueError(f"{path}: expected a list of [layer, head] pairs or an object with "
                         "one under 'heads' / 'selected_heads'")
    return raw


def _pair(item: Any) -> Any:
    if isinstance(item, str):
        sep = "." if "." in item else ":"
        try:
            l, h = (int(x) for x in item.split(sep))
        except ValueError:
            raise ValueError(f"cannot parse head {item!r}; write LAYER.HEAD, e.g. 2.1") from None
        return (l, h)
    if isinstance(item, Mapping):
        return (item.get("layer"), item.get("head"))
    return item


def parse_heads(spec: Any, model: ModelLike | None = None, *, sort: bool = False
                ) -> list[Head] | None:
    """THE heads parser: every ``--heads`` / ``heads=`` of the toolkit goes through it.

    ``spec`` may be ``None`` (returned as is); a list of ``(layer, head)`` pairs, of
    ``{"layer", "head"}`` dicts or of ``"l.h"`` strings; a string ``"2.1,3.0"`` (``l.h`` or
    ``l:h``, comma/space separated); a JSON file holding such a list or an object with one
    under ``heads`` / ``selected_heads`` / ``selected`` / ``top_heads`` (phase 1's
    ``selected_heads.json``); a LoFiT ``.npy`` array; or a directory containing
    ``selected_heads.json``. Duplicates are an error (naming the head); with ``model``
    every head is checked against its layers and heads (:func:`validate_heads`). Order is
    kept, or sorted with ``sort=True``. Errors about a file name the file."""
    if spec is None:
        return None
    where = ""
    raw: Any = spec
    if isinstance(spec, (str, Path)) and Path(spec).is_dir():
        spec = Path(spec) / "selected_heads.json"
    if isinstance(spec, Path) or (isinstance(spec, str) and (
            spec.endswith((".json", ".npy")) or Path(spec).is_file())):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"heads file not found: {path}")
        where = f"{path}: "
        raw = _read_heads_file(path)
    elif isinstance(spec, str):
        raw = [p for p in spec.replace(",", " ").split() if p]
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Iterable):
        raise TypeError(f"{where}heads must be a list of (layer, head) pairs, got {raw!r}")
    try:
        pairs = [_pair(item) for item in raw]
        heads = (validate_heads(pairs, model) if model is not None
                 else normalize_heads(pairs))
    except (ValueError, TypeError) as err:
        raise type(err)(f"{where}{err}") from None
    return sorted(heads) if sort else heads
