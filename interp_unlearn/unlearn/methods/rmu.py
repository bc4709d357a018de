"""RMU -- Representation Misdirection for Unlearning (Li et al. 2024, WMDP), as the
reference implementation ``centerforaisafety/wmdp`` ``rmu/unlearn.py`` does it
(``/work/shared/reference/protocols.md`` §1):

* activation ``a_ℓ(x)`` = residual stream **output of decoder layer ℓ**
  (TransformerLens ``blocks.{ℓ}.hook_resid_post``; HF ``model.model.layers[ℓ]``'s output);
* control vector ``c·u`` with ``u = torch.rand(1, 1, d_model)`` (uniform [0, 1)) normalised
  to unit L2 norm, drawn once after seeding and fixed for the run;
* loss ``mse(a_ℓ(x_f), c·u) + α · mse(a_ℓ(x_r), a_ℓ^frozen(x_r))``, mean reduction over
  batch × pos × d_model; by default **no padding mask** (the reference's left padding is
  included), ``masked=True`` averages over real tokens only (open-unlearning's variant);
* only ``mlp.down_proj.weight`` of layers ℓ−2, ℓ−1, ℓ is trained;
* AdamW(lr 5e-5, eps 1e-6, weight decay 0, betas (0.9, 0.999)), no schedule, no warm-up,
  no clipping (the trainer's defaults for this method).

Deviations / choices, all deliberate:

* ``u`` comes from a dedicated ``torch.Generator`` seeded with the run seed (the reference
  uses the global RNG after ``torch.manual_seed``): same distribution, independent of
  whatever else consumed random numbers before.
* One forget topic per run (the reference alternates bio/cyber batches with one control
  vector per topic); pass a combined corpus to mix topics under one vector.
* The corpora are shuffled by a seeded generator and cycled if the run is longer than one
  pass (the reference iterates in file order, once); ``shuffle=False`` restores file order.
* Texts are truncated by tokens (``seq_len``), not first by 2000 characters and then to
  512 tokens.
* The reference hooks ``layers[ℓ]`` and keeps ``output[0]`` -- in transformers >= 5 a decoder
  layer returns the hidden-state tensor itself, where ``output[0]`` would be the first *row
  of the batch*; we take the layer's output tensor (or ``[0]`` of a tuple on older
  versions).

**Speed (same numbers as the straightforward forward, to ≤1e-5 after 10 fp32 steps).**
Nothing after layer ℓ influences the loss and nothing before the first trained layer
``s = ℓ−2`` has a trainable weight, so (``fast_forward=True``, the default)

1. the prefix -- embeddings, rotary tables, causal mask and layers ``0..s−1`` -- runs under
   ``no_grad`` inside the model's *own* ``forward`` (a forward pre-hook on layer ``s``
   captures its input and keyword arguments -- mask, position embeddings -- and aborts the
   forward; so whatever the architecture builds in ``LlamaModel.forward`` is reused, not
   re-implemented);
2. layers ``s..ℓ`` are called directly with those arguments, with gradients;
3. the frozen reference is only layers ``s..ℓ``: on retain data both models share
   the prefix (their layers ``< s`` are identical), so the frozen forward costs ℓ−s+1
   blocks; those blocks share every tensor with the model except the trained
   ``down_proj`` weights, which are copied (:func:`~..memory.frozen_copy`; issue 16: on
   Zephyr-7B 3 × 58.7M parameters instead of a 7.2B-parameter deep copy).

Nothing after layer ℓ (later blocks, final norm, ``lm_head``) is ever computed.
``fast_forward=False`` is the straightforward reference: full forwards of the model and
of a full frozen copy, reading layer ℓ with a forward hook (``benchmarks/rmu_speed.py``
compares the two). The fast path requires every layer ``s..ℓ`` to get the same attention
mask (true for Llama/Mistral/Zephyr; models with mixed ``config.layer_types`` there raise
and must use ``fast_forward=False``).

**Presets** (``UnlearnConfig.preset``):

``zephyr`` -- the WMDP "best" recipe for Zephyr-7B: ℓ = 7, c = 6.5, α = 1200, 150 batches
of 4, lr 5e-5, 512 tokens, seed 42 (the script's argparse defaults c = 20, α = 100,
80 batches are *not* used). These are also the method defaults.

``organism`` -- tuned on the shipped organism (6 layers, d_model 192);
``organism-micro`` -- the 4-layer test organism. Organism checkpoints get theirs
automatically. See :data:`ORGANISM_NOTES` for the values and why.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from interp_unlearn.core.distributed import unsharded
from interp_unlearn.unlearn.memory import frozen_copy
from interp_unlearn.unlearn.registry import UnlearnMethod, register
from interp_unlearn.unlearn.trainer import Batch, MethodContext, decoder_layers, masked_mse

__all__ = ["RMU", "RMUParams", "control_vector", "layer_inputs", "rmu_layers", "rmu_presets",
           "run_blocks", "resid_post", "resid_post_full"]

ORGANISM_NOTES = """\
organism preset (shipped 6-layer, d_model 192 organism): layer 2, c = 500, alpha = 300,
lr 3e-3, 120 batches of 8, seq_len 256, retain corpus = retain-domain documents + retain
practice Q/A lines. Why they differ from Zephyr's (measured on the first shipped organism,
eval pool, unless said):
* the residual stream at layer 2 has a per-token L2 norm of ~67; the control vector has to
  dominate it to misdirect: c = 100 -> forget 0.57, 200 -> 0.31-0.43, 300 -> 0.27-0.39,
  500 -> 0.28-0.39 (seeds 42/1/3; original 0.85, chance 0.25);
* lr 5e-5 (Zephyr's) barely moves three 192x512 matrices in 80 steps: lr 1e-3 -> 0.72,
  3e-3 -> 0.31 (c = 200);
* alpha: 1000 blocks forgetting (0.81), 30-300 all forget; 300 keeps retain within
  2.5 points of the original on every seed tried (100: up to -4);
* steps: the organism shipped 2026-11-30 knows its facts better (0.960); 80 batches left
  seed 1 at 0.420, 120 batches bring seeds 0/1/2 to 0.273/0.300/0.287, retain
  0.875/0.858/0.842 (original 0.960/0.883); the curve is flat from 120 to 160;
* layer: l = 1 barely forgets (0.81), l = 3 less than l = 2 (0.66 vs 0.27 at c = 300);
  l = 2 = L/3 mirrors Zephyr's 7 of 32 layers being early-middle.
organism-micro preset (4 layers, d_model 96, the test organism): layer 2, c = 40,
alpha = 300, lr 3e-3, 80 batches of 8, seq_len 128 (residual norm ~10 at layer 2)."""


@dataclass
class RMUParams:
    """RMU's own parameters.

    Attributes:
        layer: ℓ, the layer whose residual output is steered (Zephyr: 7).
        steering_coeff: c, the norm of the control vector (Zephyr: 6.5).
        alpha: α, weight of the retain term (Zephyr: 1200).
        trained_layers: layers whose ``param_suffix`` weight is trained
            (default ``[ℓ−2, ℓ−1, ℓ]``, clipped at 0).
        param_suffix: which weight of those layers (``mlp.down_proj.weight``).
        masked: average the MSE over real tokens only (default: reference, unmasked).
        fast_forward: early-stopped forward (see module docstring); False: full forward.
    """

    layer: int = 7
    steering_coeff: float = 6.5
    alpha: float = 1200.0
    trained_layers: list[int] | None = None
    param_suffix: str = "mlp.down_proj.weight"
    masked: bool = False
    fast_forward: bool = True


ZEPHYR_CONFIG = {"max_num_batches": 150, "batch_size": 4, "lr": 5e-5, "seq_len": 512,
                 "seed": 42}
RMU_DEFAULTS = {**ZEPHYR_CONFIG, "adam_eps": 1e-6, "weight_decay": 0.0,
                "betas": (0.9, 0.999), "grad_clip": None, "padding_side": "left",
                "forget_corpus": "forget", "retain_corpus": "retain"}
RMU_PRESETS = {
    "zephyr": {"config": dict(ZEPHYR_CONFIG),
               "params": {"layer": 7, "steering_coeff": 6.5, "alpha": 1200.0}},
    "organism": {"config": {"max_num_batches": 120, "batch_size": 8, "lr": 3e-3,
                            "seq_len": 256, "retain_corpus": "retain+retain-qa"},
                 "params": {"layer": 2, "steering_coeff": 500.0, "alpha": 300.0}},
    # the 4-layer test organism (picked automatically for organism-micro)
    "organism-micro": {"config": {"max_num_batches": 80, "batch_size": 8, "lr": 3e-3,
                                  "seq_len": 128, "retain_corpus": "retain+retain-qa"},
                       "params": {"layer": 2, "steering_coeff": 40.0, "alpha": 300.0}},
}


def rmu_presets() -> dict[str, dict[str, dict]]:
    """A fresh copy of :data:`RMU_PRESETS` for the methods built on RMU's recipe (ALMPU,
    RMU-LAT): same config and θ parameters, so that they differ from RMU only by their
    adversary (paired comparisons)."""
    return {name: {part: dict(values) for part, values in preset.items()}
            for name, preset in RMU_PRESETS.items()}


# ------------------------------------------------------------------ forward pieces


class _StopForward(Exception):
    pass


def _block_output(out: Any) -> Tensor:
    """A decoder layer's hidden-state output (a tensor in transformers >= 5, a tuple
    whose first element it is in older versions)."""
    return out if isinstance(out, Tensor) else out[0]


def _check_uniform_masks(model: nn.Module, start: int, stop: int) -> None:
    types = getattr(model.config, "layer_types", None)
    if types and len(set(types[start:stop + 1])) > 1:
        raise NotImplementedError(
            f"layers {start}..{stop} use different attention types {types[start:stop + 1]}; "
            "the early-stopped RMU forward reuses one mask for them: use fast_forward=False")


def layer_inputs(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None,
                 start: int) -> tuple[Tensor, dict[str, Any]]:
    """Run the model's own forward up to the entry of layer ``start`` under ``no_grad``
    and return ``(hidden_states entering start, the layer's keyword arguments)``.

    The keyword arguments are what the base model's ``forward`` passes to its decoder
    layers (causal mask, rotary position embeddings, position ids); the KV cache is off.
    Forward (pre-)hooks registered on modules of layers ``< start`` fire as usual."""
    layers = decoder_layers(model)
    captured: dict[str, Any] = {}

    def grab(module: nn.Module, args: tuple, kwargs: dict) -> None:
        captured["hidden"] = args[0] if args else kwargs["hidden_states"]
        captured["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        raise _StopForward

    # prepended: the capture runs before anything else on layer ``start`` (FSDP's gather)
    handle = layers[start].register_forward_pre_hook(grab, with_kwargs=True, prepend=True)
    try:
        # under FSDP the embeddings live in the root's shard, which ``model.model`` bypasses
        with torch.no_grad(), unsharded(model):
            model.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if "hidden" not in captured:  # pragma: no cover - the hook always fires
        raise RuntimeError(f"layer {start} was never reached in the forward pass")
    kwargs = captured["kwargs"]
    # no KV cache: transformers >= 5.2x names it ``cache`` (and warns when the old
    # ``past_key_values`` is passed as well), older releases ``past_key_values``
    kwargs["cache" if "cache" in kwargs else "past_key_values"] = None
    kwargs["use_cache"] = False
    return captured["hidden"], kwargs


def run_blocks(layers: Sequence[nn.Module] | dict[int, nn.Module], hidden: Tensor,
               kwargs: dict[str, Any], start: int, stop: int) -> Tensor:
    """``layers[start..stop]`` applied to ``hidden`` with the captured ``kwargs``;
    returns the residual output of layer ``stop``."""
    for i in range(start, stop + 1):
        hidden = _block_output(layers[i](hidden, **kwargs))
    return hidden


def resid_post(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None,
               layer: int, start: int | None = None) -> Tensor:
    """Residual output of ``layer`` (== ``blocks.{layer}.hook_resid_post``): the prefix
    before ``start`` (default ``layer``) without gradients, layers ``start..layer`` with
    gradients, nothing after ``layer``."""
    start = layer if start is None else start
    _check_uniform_masks(model, start, layer)
    hidden, kwargs = layer_inputs(model, input_ids, attention_mask, start)
    return run_blocks(decoder_layers(model), hidden, kwargs, start, layer)


def resid_post_full(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None,
                    layer: int) -> Tensor:
    """The straightforward way: a full forward (logits included) reading layer
    ``layer``'s output with a forward hook, as the reference does."""
    captured: dict[str, Tensor] = {}

    def grab(module: nn.Module, args: tuple, out: Any) -> None:
        captured["out"] = _block_output(out)

    handle = decoder_layers(model)[layer].register_forward_hook(grab)
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        handle.remove()
    return captured["out"]


def rmu_layers(params: RMUParams, n_layers: int) -> list[int]:
    """The trained layers (default ℓ−2..ℓ, clipped at 0), validated."""
    ell = params.layer
    if isinstance(ell, bool) or not isinstance(ell, int) or not 0 <= ell < n_layers:
        raise ValueError(f"RMU layer {ell!r} does not exist: the model has {n_layers} layers "
                         f"(0..{n_layers - 1})")
    trained = (list(range(max(0, ell - 2), ell + 1)) if params.trained_layers is None
               else sorted(set(params.trained_layers)))
    bad = [l for l in trained if not (isinstance(l, int) and 0 <= l <= ell)]
    if bad or not trained:
        raise ValueError(f"trained_layers {params.trained_layers!r} must be non-empty layers "
                         f"in 0..{ell} (layers after ℓ={ell} cannot change its activation)")
    return trained


def control_vector(d_model: int, coeff: float, seed: int, device: torch.device,
                   dtype: torch.dtype) -> Tensor:
    """``c · u / ‖u‖`` with ``u = rand(1, 1, d_model)`` from a generator seeded ``seed``."""
    gen = torch.Generator().manual_seed(int(seed))
    u = torch.rand(1, 1, d_model, generator=gen, dtype=torch.float32)
    return (u / u.norm() * coeff).to(device=device, dtype=dtype)


# ------------------------------------------------------------------------- method


class RMUCore:
    """The RMU loss machinery, shared by :class:`RMU` and ALMPU's θ step."""

    def __init__(self, ctx: MethodContext, params: Any, reference: nn.Module | None):
        self.model = ctx.model
        self.params = params
        layers = decoder_layers(self.model)
        self.layer = params.layer
        self.trained_layers = rmu_layers(params, len(layers))
        self.start = self.trained_layers[0]
        self.fast = bool(params.fast_forward)
        p0 = next(self.model.parameters())
        self.control = control_vector(int(self.model.config.hidden_size),
                                      float(params.steering_coeff), ctx.config.seed,
                                      p0.device, p0.dtype)
        # the frozen reference copies only the trained weights and shares every other
        # tensor with the model (config.frozen_reference="deepcopy": the old full copies)
        deep = getattr(ctx.config, "frozen_reference", "shared") == "deepcopy"
        trained = [] if deep else list(self.trainable().values())
        if self.fast:
            _check_uniform_masks(self.model, self.start, self.layer)
            src = decoder_layers(reference) if reference is not None else layers
            self.frozen: dict[int, nn.Module] | nn.Module = {
                i: (src[i] if reference is not None else frozen_copy(src[i], trained, deep))
                for i in range(self.start, self.layer + 1)}
            for block in self.frozen.values():
                block.eval()
                for q in block.parameters():
                    q.requires_grad_(False)
        else:
            self.frozen = (reference if reference is not None
                           else frozen_copy(self.model, trained, deep).eval())

    def trainable(self) -> dict[str, nn.Parameter]:
        named = dict(self.model.named_parameters())
        out = {}
        for l in self.trained_layers:
            name = f"model.layers.{l}.{self.params.param_suffix}"
            if name not in named:
                raise ValueError(f"the model has no parameter {name!r} (param_suffix "
                                 f"{self.params.param_suffix!r})")
            out[name] = named[name]
        return out

    def forget_activation(self, batch: Batch, context: Callable[[], Any] = nullcontext
                          ) -> Tensor:
        with context():
            if self.fast:
                return resid_post(self.model, batch.input_ids, batch.attention_mask,
                                  self.layer, self.start)
            return resid_post_full(self.model, batch.input_ids, batch.attention_mask,
                                   self.layer)

    def retain_activations(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """``(updated, frozen)`` activations at ℓ on ``batch``."""
        if self.fast:
            hidden, kwargs = layer_inputs(self.model, batch.input_ids, batch.attention_mask,
                                          self.start)
            updated = run_blocks(decoder_layers(self.model), hidden, kwargs, self.start,
                                 self.layer)
            with torch.no_grad():
                frozen = run_blocks(self.frozen, hidden, kwargs, self.start, self.layer)
            return updated, frozen
        updated = resid_post_full(self.model, batch.input_ids, batch.attention_mask, self.layer)
        with torch.no_grad():
            frozen = resid_post_full(self.frozen, batch.input_ids, batch.attention_mask,
                                     self.layer)
        return updated, frozen

    def terms(self, forget: Batch, retain: Batch | None,
              context: Callable[[], Any] = nullcontext,
              forget_activation: Tensor | None = None) -> dict[str, Tensor]:
        """``{"forget": mse(a_ℓ(x_f), c·u), "retain": α·mse(a_ℓ(x_r), frozen)}``; the forget
        forward runs inside ``context()`` (ALMPU's δ) unless ``forget_activation`` is given."""
        p = self.params
        act_f = (self.forget_activation(forget, context) if forget_activation is None
                 else forget_activation)
        out = {"forget": masked_mse(act_f, self.control,
                                    forget.attention_mask if p.masked else None, forget)}
        if retain is not None and p.alpha:
            upd, frz = self.retain_activations(retain)
            out["retain"] = p.alpha * masked_mse(upd, frz, retain.attention_mask
                                                 if p.masked else None, retain)
        return out


@register("rmu")
class RMU(UnlearnMethod):
    """RMU (see the module docstring). Trains ``mlp.down_proj.weight`` of layers ℓ−2..ℓ."""

    Params = RMUParams
    defaults = RMU_DEFAULTS
    presets = RMU_PRESETS
    reference = "none"  # the frozen copy is built by RMUCore (layers s..ℓ only when fast)
    uses_heads = "no"

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        self.core = RMUCore(ctx, ctx.params, None)

    def trainable(self) -> dict[str, nn.Parameter]:
        return self.core.trainable()

    def loss_terms(self, step: int, forget: Batch, retain: Batch | None) -> dict[str, Tensor]:
        return self.core.terms(forget, retain)
