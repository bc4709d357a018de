"""Measurements and diagnostics of a latent adversary (:mod:`.adversary`): the activation
norms its radii are relative to and ‖δ‖/ε statistics (the gain on held-out MCQs needs the
scorer: :mod:`interp_unlearn.evaluation.adversary_gain`).

* :func:`measure_head_norms` -- ``E‖z_{l,h}‖``, the mean per-token L2 norm of each head's
  slice of the ``o_proj`` input (== ``hook_z``) over real tokens;
  :func:`measure_resid_norms` -- ``E‖h_l‖`` of each decoder layer's residual output.
* :func:`norm_stats` -- ‖δ‖ mean/max; with radii, ‖δ‖/ε median/min/max and the fraction of
  rows on the boundary (‖δ‖/ε ≥ :data:`BOUNDARY`).
* :func:`~interp_unlearn.evaluation.adversary_gain.mcq_gain` -- with δ minus without δ: the mean over questions of the correct
  choice's log-prob (summed over its tokens, exactly as
  :func:`~interp_unlearn.evaluation.scoring.evaluate_mcq` scores it) and the accuracy.

**Alive** (:data:`ALIVE_THRESHOLDS`): median ‖δ‖/ε ≥ 0.1 and a positive gain in the
correct choice's summed log-prob (the issue's definition). Two further measures are
reported because they can disagree with it: the accuracy gain (steps of 1/n) and the gain
in the correct choice's log-prob *normalised over the four choices* (``lp_answer −
logsumexp(lp_choices)``, the quantity the MCQ decision is made on), with
``restores_ranking`` = that gain > 0. Measured on the organism (seed 0, practice pools):
ALMPU's and RMU-LAT's δ raise all three; GA-MP's δ (θ = all weights ascending the forget
CE *under* δ) raises the answer log-prob by 2-6 nats but lowers the normalised one by
0.8-1.6: it restores fluency on the ascended text, and θ has learnt to be anti-correct
when δ is present -- alive, but beaten (``notes/adversary_defaults.md``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from interp_unlearn.core.arch import decoder_layers as decoder_layers_of
from interp_unlearn.interventions.attach import dims_of
from interp_unlearn.interventions.hf_hooks import head_hooks

__all__ = ["ALIVE_THRESHOLDS", "BOUNDARY", "measure_head_norms",
           "measure_resid_norms", "norm_stats"]

#: ‖δ‖/ε at or above which a row counts as on its ball's boundary.
BOUNDARY = 0.99
#: An adversary is inert when median ‖δ‖/ε is below the first or the answer log-prob gain
#: is at or below the second.
ALIVE_THRESHOLDS = {"delta_over_eps_median": 0.1, "adversary_gain_logprob": 0.0}


def ids_mask(batch: Any) -> tuple[Tensor, Tensor]:
    """``(input_ids, attention_mask)`` of a batch object or a pair."""
    if isinstance(batch, (tuple, list)):
        return batch[0], batch[1]
    return batch.input_ids, batch.attention_mask


def _run(model: nn.Module, batches: Iterable[Any], mask_now: dict[str, Tensor]) -> float:
    count = 0.0
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            ids, mask = ids_mask(batch)
            mask_now["m"] = mask
            model(input_ids=ids, attention_mask=mask, use_cache=False)
            count += float(mask.sum())
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("no real tokens in the batches to measure norms on")
    return count


@torch.no_grad()
def measure_head_norms(model: nn.Module, batches: Iterable[Any]
                       ) -> Float[Tensor, "n_layers n_heads"]:
    """``E‖z_{l,h}‖`` per head over the real tokens (``attention_mask``) of ``batches``
    (objects with ``input_ids``/``attention_mask``, or ``(input_ids, attention_mask)``)."""
    dims = dims_of(model)
    sums = torch.zeros(dims["n_layers"], dims["n_heads"], dtype=torch.float64)
    mask_now: dict[str, Tensor] = {}

    def accumulate(z: Tensor, layer: int) -> None:  # read-only: z passes unchanged
        z = z.float()
        m = mask_now["m"].to(z.device, z.dtype)
        sums[layer] += (z.norm(dim=-1) * m[..., None]).sum(dim=(0, 1)).double().cpu()

    with head_hooks(model, accumulate):
        count = _run(model, batches, mask_now)
    return (sums / count).float()


@torch.no_grad()
def measure_resid_norms(model: nn.Module, batches: Iterable[Any]) -> Float[Tensor, " n_layers"]:
    """``E‖h_l‖`` per decoder layer (its residual output, ``hook_resid_post``) over the
    real tokens of ``batches``."""
    layers = decoder_layers_of(model)
    sums = torch.zeros(len(layers), dtype=torch.float64)
    mask_now: dict[str, Tensor] = {}

    def hook(i: int):
        def fn(module: nn.Module, args: tuple, out: Any) -> None:
            h = (out if isinstance(out, Tensor) else out[0]).float()
            sums[i] += float((h.norm(dim=-1) * mask_now["m"].to(h.device, h.dtype)).sum())
        return fn

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        count = _run(model, batches, mask_now)
    finally:
        for h in handles:
            h.remove()
    return (sums / count).float()


def norm_stats(norms: Float[Tensor, " n_rows"], radii: Float[Tensor, " n_rows"] | None
               ) -> dict[str, Any]:
    """‖δ‖ mean/max, and with ``radii`` the ‖δ‖/ε median/min/max and frac_on_boundary."""
    out: dict[str, Any] = {"delta_norm_mean": float(norms.mean()),
                           "delta_norm_max": float(norms.max()), "delta_rows": int(norms.numel())}
    if radii is not None:
        ratio = norms.cpu() / radii.cpu()
        out.update({"delta_over_eps_median": float(ratio.median()),
                    "delta_over_eps_min": float(ratio.min()),
                    "delta_over_eps_max": float(ratio.max()),
                    "frac_on_boundary": float((ratio >= BOUNDARY).float().mean())})
    return out


