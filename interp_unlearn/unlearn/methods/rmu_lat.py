"""RMU-LAT -- RMU trained under a latent adversary on the residual stream (Sheshadri et al.
2024, "Targeted latent adversarial training"; the baseline ALMPU must beat: the same
machinery as ALMPU's head δ, on the residual stream instead of heads).

Per batch ``(x_f, x_r)``:

* **θ step** -- RMU's loss exactly as :mod:`.rmu` (:class:`~.rmu.RMUCore`: ``mse(a_ℓ(x_f),
  c·u) + α·mse(a_ℓ(x_r), a_ℓ^frozen(x_r))`` over ``down_proj`` of layers ℓ−2..ℓ), with the
  adversary's δ added (detached) to the residual output of layer ``lat_layer ≤ ℓ`` in the
  **forget** forward only (the retain forward, like the deployed model, has no δ).
* **δ step** -- ``delta_steps`` projected Adam updates of δ ∈ R^{d_model} that *minimise the
  forget CE* of the full model under δ (``adv_objective="ce"``, the targeted-LAT
  "towards" loss; ``match`` is available too), projected onto ``‖δ‖ ≤ κ·E‖h_lat‖`` (the
  mean per-token residual norm at ``lat_layer`` on forget text, measured on the original
  model) or an absolute ``epsilon``. The machinery is
  :class:`~interp_unlearn.interventions.adversary.ResidualAdversary` (parameters:
  :class:`~.adversarial.AdversaryParams`).

**Deviations from Sheshadri et al., and why.**

* Their δ is per example and per token, re-initialised for every batch and optimised for
  ~16 PGD steps; ours is **one persistent vector** added at every position of every
  sequence and warm-started across θ steps (``delta_steps`` = k inner steps per θ step),
  exactly like ALMPU's head δ -- so the two methods differ only in *where* δ acts, which is
  the comparison the issue asks for, and the cost stays at k forwards per step.
* Their ball is an L2 radius in absolute units chosen per model; ours is relative to the
  layer's residual norm (κ), so it transfers between the organism and larger models.
* They also add the adversary's "away" loss and an SFT term on benign data; here θ's loss
  is plain RMU (retain term included), so RMU-LAT − RMU isolates the adversary.
* ``output_weight > 0`` (an extension, as in ALMPU) makes θ also ascend the full model's
  forget CE under δ.

``lat_layer`` defaults to ``max(0, ℓ − 2)``, the first layer RMU trains (measured on the
organism: notes/adversary_defaults.md). Only the ``hf`` backend is supported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from interp_unlearn.unlearn.adversarial import (AdversaryParams, adversary_diagnostics,
                                                build_residual_adversary, output_term)
from interp_unlearn.unlearn.registry import UnlearnMethod, register
from interp_unlearn.unlearn.methods.rmu import RMU_DEFAULTS, RMUCore, RMUParams, rmu_presets
from interp_unlearn.unlearn.trainer import Batch, MethodContext

__all__ = ["RMULAT", "RMULATParams"]


@dataclass
class RMULATParams(AdversaryParams, RMUParams):
    """RMU's parameters, the adversary's, and ``lat_layer`` (None: ``max(0, ℓ−2)``).
    Defaults differ from ALMPU's in ``adv_objective`` (``ce``) and ``kappa`` (the residual
    stream is ~10× a head's norm: see notes/adversary_defaults.md)."""

    lat_layer: int | None = None
    kappa: float = 0.25
    adv_objective: str = "ce"


@register("rmu_lat")
class RMULAT(UnlearnMethod):
    """RMU under a residual-stream latent adversary (see the module docstring)."""

    Params = RMULATParams
    defaults = RMU_DEFAULTS
    # RMU's presets (the organism's tuned on the practice pools only, with the adversary's
    # defaults chosen in notes/adversary_defaults.md)
    presets = rmu_presets()
    reference = "full"  # p_ref for adv_objective="match"; RMU's frozen blocks come from it
    uses_heads = "no"

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        p = ctx.params
        if p.backend != "hf":
            raise ValueError(f"backend must be 'hf' for rmu_lat (the residual adversary has "
                             f"no bridge path), got {p.backend!r}")
        if p.output_weight and not p.adversarial:
            raise ValueError("output_weight > 0 (θ ascends the forget CE under δ) needs "
                             "adversarial=true")
        self.core = RMUCore(ctx, p, ctx.reference)
        ell = self.core.layer
        lat = max(0, ell - 2) if p.lat_layer is None else p.lat_layer
        if isinstance(lat, bool) or not isinstance(lat, int) or not 0 <= lat <= ell:
            raise ValueError(f"lat_layer must be an int in 0..{ell} (at or before the RMU "
                             f"layer ℓ={ell}), got {p.lat_layer!r}")
        self.lat_layer = lat
        self.adv = build_residual_adversary(ctx, lat, p)

    def trainable(self) -> dict[str, nn.Parameter]:
        return self.core.trainable()

    def loss_terms(self, step: int, forget: Batch, retain: Batch | None) -> dict[str, Tensor]:
        p = self.params
        if not p.adversarial:
            return self.core.terms(forget, retain)
        terms = self.core.terms(forget, retain, context=self.adv.applied)
        if p.output_weight:
            terms["output"] = output_term(p, self.adv.logits(forget), forget)
        return terms

    def post_step(self, step: int, forget: Batch, retain: Batch | None) -> dict[str, Tensor]:
        return self.adv.step(forget)

    def state_summary(self) -> dict[str, Any]:
        return {**self.adv.norm_stats(), "lat_layer": self.lat_layer}

    def diagnostics(self) -> dict[str, Any]:
        return {**adversary_diagnostics(self.adv, self.ctx, self.params),
                "lat_layer": self.lat_layer}
