"""The HF backend of the head-intervention protocol: ``hook_z`` on a plain HF causal LM.

TransformerLens' ``blocks.{l}.attn.hook_z`` ``[batch, pos, head, d_head]`` is, on an HF
decoder-only LM, the input of layer ``l``'s attention output projection
(``self_attn.o_proj``) viewed per head. :func:`add_head_hooks` puts one forward pre-hook on
each ``o_proj`` that calls ``fn(z, layer)`` on that view and passes on what it returns
(``None``: unchanged, for read-only probes). Every head intervention of the toolkit uses
this one adapter on HF models (the adversary's δ, lm-eval's ablation/perturbation, the
norm measurement); :func:`~interp_unlearn.interventions.attach.attach` is the
TransformerLens backend and :mod:`.nnsight_backend` the nnsight one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from interp_unlearn.core.arch import decoder_layers
from interp_unlearn.core.bridge import model_dims
from interp_unlearn.core.hooks import register_all, remove_all

__all__ = ["HeadFn", "add_head_hooks", "head_hooks", "o_proj"]

#: ``fn(z, layer) -> z' or None`` with ``z`` of shape ``[batch, pos, n_heads, d_head]``
HeadFn = Callable[[Tensor, int], Tensor | None]


def o_proj(model: nn.Module, layer: int) -> nn.Module:
    """Layer ``layer``'s attention output projection (the module whose input is hook_z)."""
    attn = getattr(decoder_layers(model)[layer], "self_attn", None)
    proj = getattr(attn, "o_proj", None)
    if proj is None:
        raise TypeError(f"{type(model).__name__} layer {layer} has no self_attn.o_proj: head "
                        "interventions on HF models need a Llama-style decoder (Llama, "
                        "Mistral/Zephyr, Qwen ...); use the nnsight backend for others")
    return proj


def _pre_hook(fn: HeadFn, layer: int, n_heads: int, d_head: int):
    def hook(module: nn.Module, args: tuple) -> tuple | None:
        x = args[0]
        z = x.reshape(*x.shape[:-1], n_heads, d_head)
        out = fn(z, layer)
        if out is None:
            return None
        return (out.reshape(x.shape), *args[1:])
    return hook


def add_head_hooks(model: nn.Module, fn: HeadFn, layers: Iterable[int] | None = None
                   ) -> list[Any]:
    """Pre-hooks on ``o_proj`` of ``layers`` (default: every layer) applying ``fn(z, layer)``.
    Returns the handles (:func:`~interp_unlearn.core.hooks.remove_all` undoes them); if
    adding one fails, none stays."""
    dims = model_dims(model)
    n_heads, d_head = dims["n_heads"], dims["d_head"]
    layers = range(dims["n_layers"]) if layers is None else list(layers)
    return register_all(
        (lambda l=l: o_proj(model, l).register_forward_pre_hook(_pre_hook(fn, l, n_heads,
                                                                          d_head)))
        for l in layers)


@contextmanager
def head_hooks(model: nn.Module, fn: HeadFn, layers: Iterable[int] | None = None
               ) -> Iterator[nn.Module]:
    """``with head_hooks(model, fn, layers): model(...)`` -- removed in ``finally``."""
    handles = add_head_hooks(model, fn, layers)
    try:
        yield model
    finally:
        remove_all(handles)
