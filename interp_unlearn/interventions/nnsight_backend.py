"""Head interventions through nnsight, at the input of the attention output projection.

TransformerLens' ``blocks.{l}.attn.hook_z`` is the per-head attention output
``[batch, pos, head, d_head]`` *before* the output projection; in an HF model that is the
input of layer ``l``'s attention output projection (``self_attn.o_proj`` for Llama,
Mistral/Zephyr, Qwen2/3, Gemma ...), ``[batch, pos, n_heads * d_head]``, split into query
heads. :class:`NNsightHeads` wraps an HF causal LM with ``nnsight.NNsight`` and, inside
one ``model.trace(...)`` per forward, replaces that input by ``f(z)`` for every
intervention ``f`` of :mod:`interp_unlearn.interventions` (``HeadScale``:
``z <- (1 + A) * z``; ``HeadPerturbation``: ``z <- z + delta``; ``HeadAblation``). It needs
no TransformerLens adapter, only the path of the output projection, so it also reads
architectures TransformerLens does not cover (:data:`OUT_PROJ_PATTERNS`, or pass a
template such as ``"transformer.h.{layer}.attn.c_proj"``).

    heads = NNsightHeads(hf_model)
    with heads.applied(HeadScale.for_model(hf_model)) as forward:
        logits = forward(input_ids, attention_mask)      # differentiable w.r.t. A

``interp_unlearn.localize.localize(..., backend="nnsight")`` runs phase 1 through it with
the same init, batches and optimiser as the TransformerLens backend.

Hygiene, as :func:`interp_unlearn.core.bridge.to_bridge`: nnsight installs a controller
``forward`` into the ``__dict__`` of every module it wraps and leaves it there, so by
default the envoy wraps a *weight-sharing structural copy* of the model (new module
objects, the same ``nn.Parameter`` objects). The caller's model is never instrumented;
weight updates are seen, gradients land in its ``.grad``. The interventions exist only
inside a trace: when the body or the model raises, nothing stays attached (nnsight's
interleaver is torn down on exit; the test suite checks it).

Importing nnsight mounts a ``.save()`` method on every Python object, process-wide (its
``APP.PYMOUNT`` setting, on by default); this module uses the function ``nnsight.save``
and works with the mount switched off (``NNSIGHT_CONFIG`` pointing to a config file with
``APP: {PYMOUNT: false}``).

Remote execution (NDIF) is not implemented: the training loop runs ``backward`` and
AdamW locally on ``A``; see ``docs/real_models.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import nnsight
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformers import PreTrainedModel

from interp_unlearn.core.bridge import _weight_sharing_clone, model_dims

__all__ = ["OUT_PROJ_PATTERNS", "NNsightHeads", "find_out_proj", "layers_of"]

#: ``(decoder-layer list, attention output projection inside a layer)`` tried in order.
#: The projection's input must be the concatenated per-head outputs ``[.., n_heads*d_head]``.
OUT_PROJ_PATTERNS: tuple[tuple[str, str], ...] = (
    ("model.layers", "self_attn.o_proj"),        # llama, mistral/zephyr, qwen2/3, gemma, olmo
    ("model.layers", "self_attn.dense"),         # phi
    ("model.decoder.layers", "self_attn.out_proj"),  # opt
    ("transformer.h", "attn.c_proj"),            # gpt2
    ("transformer.h", "attn.out_proj"),          # gpt-j
    ("transformer.h", "self_attention.dense"),   # falcon, bloom
    ("gpt_neox.layers", "attention.dense"),      # gpt-neox / pythia
)


def _get(module: nn.Module, path: str) -> nn.Module | None:
    obj: Any = module
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() and isinstance(obj, (nn.ModuleList, nn.Sequential)) \
            and int(part) < len(obj) else getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, nn.Module) else None


def _in_features(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.in_features
    weight = getattr(module, "weight", None)  # GPT-2's Conv1D stores [in, out]
    if type(module).__name__ == "Conv1D" and isinstance(weight, Tensor):
        return int(weight.shape[0])
    return None


def find_out_proj(model: nn.Module, template: str | None = None) -> str:
    """The path template (``"...{layer}..."``) of the attention output projection.

    Args:
        model: An HF causal LM.
        template: Use this instead of searching :data:`OUT_PROJ_PATTERNS`; must contain
            ``{layer}``.

    Raises:
        ValueError: no pattern fits (the message lists the tried paths), the template
            lacks ``{layer}`` or names a missing module, or the projection's input width
            is not ``n_heads * d_head``.
    """
    dims = model_dims(model)
    n_layers, width = dims["n_layers"], dims["n_heads"] * dims["d_head"]
    if template is not None:
        if "{layer}" not in template:
            raise ValueError(f"out_proj template {template!r} must contain '{{layer}}'")
        candidates = [template]
    else:
        candidates = [f"{layers}.{{layer}}.{proj}" for layers, proj in OUT_PROJ_PATTERNS]
    for cand in candidates:
        mods = [_get(model, cand.format(layer=l)) for l in range(n_layers)]
        if all(m is not None for m in mods):
            bad = [(l, f) for l, m in enumerate(mods)
                   if (f := _in_features(m)) is not None and f != width]
            if bad:
                raise ValueError(f"{cand.format(layer=bad[0][0])} takes {bad[0][1]} features but "
                                 f"n_heads * d_head = {dims['n_heads']} * {dims['d_head']} = "
                                 f"{width}: not the per-head attention output")
            return cand
        if template is not None:
            missing = next(l for l, m in enumerate(mods) if m is None)
            raise ValueError(f"{type(model).__name__} has no module "
                             f"{cand.format(layer=missing)!r} (out_proj template {template!r}, "
                             f"layers 0..{n_layers - 1})")
    raise ValueError(f"cannot find the attention output projection of {type(model).__name__}: "
                     f"tried {[c.format(layer=0) for c in candidates]}; pass "
                     "out_proj='path.to.layers.{layer}.attn.out_proj'")


def layers_of(intervention: Any) -> list[int]:
    """The layers an intervention edits (``layers``, else all ``n_layers``)."""
    layers = getattr(intervention, "layers", None)
    if layers is None:
        n = getattr(intervention, "n_layers", None)
        if n is None:
            raise TypeError(f"{type(intervention).__name__} is not a head intervention: it has "
                            "neither `layers` nor `n_layers`")
        layers = range(int(n))
    return [int(l) for l in layers]


class NNsightHeads:
    """An HF causal LM wrapped by nnsight, with head interventions at ``hook_z``'s place.

    Args:
        model: An HF causal LM (``PreTrainedModel``), any architecture whose attention
            output projection :func:`find_out_proj` finds (or ``out_proj`` names).
        out_proj: Path template of the output projection, e.g.
            ``"model.layers.{layer}.self_attn.o_proj"``; ``None``: detected.
        in_place: Wrap ``model`` itself instead of a weight-sharing copy (nnsight then
            leaves its inert controllers on ``model``'s modules).

    Attributes:
        model: The caller's model; module: what nnsight wraps (its copy unless
            ``in_place``); envoy: the ``nnsight.NNsight`` root; dims: ``n_layers``,
            ``n_heads``, ``d_head``, ``d_model``; out_proj: the path template.
    """

    def __init__(self, model: PreTrainedModel, *, out_proj: str | None = None,
                 in_place: bool = False) -> None:
        if not isinstance(model, PreTrainedModel):
            raise TypeError(f"model must be a transformers PreTrainedModel, got "
                            f"{type(model).__name__}")
        self.model = model
        self.dims = model_dims(model)
        self.out_proj = find_out_proj(model, out_proj)
        self.module = model if in_place else _weight_sharing_clone(model)
        self.envoy = nnsight.NNsight(self.module)

    @property
    def device(self) -> torch.device:
        """Where inputs go: the device of the input embeddings."""
        emb = self.model.get_input_embeddings()
        return (emb.weight if emb is not None else next(self.model.parameters())).device

    def validate(self, *interventions: Any) -> None:
        """Check every intervention's layers/heads/``d_head`` against the model."""
        for iv in interventions:
            if not callable(getattr(iv, "forward", None)):
                raise TypeError(f"{type(iv).__name__} is not a head intervention: no "
                                "forward(z, layer)")
            check = getattr(iv, "validate", None)
            if callable(check):
                check(self.dims)
            bad = [l for l in layers_of(iv) if not 0 <= l < self.dims["n_layers"]]
            if bad:
                raise ValueError(f"{type(iv).__name__} edits layer {bad[0]}: valid layers are "
                                 f"0..{self.dims['n_layers'] - 1}")

    def forward(self, input_ids: Int[Tensor, "batch pos"],
                attention_mask: Int[Tensor, "batch pos"] | None = None,
                *interventions: Any) -> Float[Tensor, "batch pos vocab"]:
        """Logits of one forward with ``interventions`` applied (in the given order at
        each layer). Keeps the autograd graph to the interventions' parameters."""
        self.validate(*interventions)
        return self._trace(input_ids, attention_mask, interventions)

    @contextmanager
    def applied(self, *interventions: Any
                ) -> Iterator[Callable[[Tensor, Tensor | None], Tensor]]:
        """Validate once, then yield ``forward(input_ids, attention_mask) -> logits``
        running with ``interventions``. Nothing stays attached outside a forward."""
        self.validate(*interventions)
        yield lambda ids, mask=None: self._trace(ids, mask, interventions)

    def _trace(self, input_ids: Tensor, attention_mask: Tensor | None,
               interventions: Sequence[Any]) -> Float[Tensor, "batch pos vocab"]:
        by_layer: dict[int, list[Any]] = {}
        for iv in interventions:
            for layer in layers_of(iv):
                by_layer.setdefault(layer, []).append(iv)
        plan = [(layer, self.envoy.get(self.out_proj.format(layer=layer)), by_layer[layer])
                for layer in sorted(by_layer)]  # execution order: nnsight needs it
        n_heads, d_head = self.dims["n_heads"], self.dims["d_head"]
        kwargs = {"input_ids": input_ids, "use_cache": False}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        with self.envoy.trace(**kwargs):
            for layer, proj, ivs in plan:
                x = proj.input
                z = x.reshape(*x.shape[:-1], n_heads, d_head)
                for iv in ivs:
                    z = iv.forward(z, layer)
                proj.input = z.reshape(x.shape)
            logits = nnsight.save(self.envoy.output.logits)
        return logits
