"""Divergence guards of the trainer: a run that blows up *finitely* must not be saved as a
completed unlearning run (issue 18 #2: ``--lr 1e6`` used to exit 0 with weights ~5.7e7 and
retain 0.275, which reads as successful forgetting).

* **weight growth**: the trained parameters' L2 norm above :data:`WEIGHT_GROWTH_LIMIT` × its
  value at the start. Measured on the shipped organism's presets (grid, seed 0): RMU-family
  runs end at 1.85–2.1× (max one tensor 3.1×), the all-weights methods at 0.996–1.012×.
* **retain collapse** at an evaluation: retain accuracy below chance + half of the
  before-run margin over chance (organism: 0.25 + ½·(0.883 − 0.25) = 0.567; every preset run
  keeps ≥ 0.78).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from interp_unlearn.core.distributed import DistEnv, all_finite, local_tensor

__all__ = ["CHANCE", "WEIGHT_GROWTH_LIMIT", "DivergenceError", "retain_collapse",
           "unusable_weights",
           "weight_norm"]

WEIGHT_GROWTH_LIMIT = 10.0
CHANCE = 0.25  # four-way MCQ


class DivergenceError(FloatingPointError):
    """Training diverged without a NaN; the checkpoint is saved with status ``diverged``."""

    def __init__(self, method: str, step: int, reason: str, checkpoint: Path | None):
        self.method, self.step, self.reason, self.checkpoint = method, step, reason, checkpoint
        super().__init__(f"unlearning ({method}) diverged at step {step}: {reason}; the "
                         f"checkpoint at {checkpoint} is marked 'diverged' (downstream "
                         "commands refuse it without --accept-incomplete)")


class Diverged(Exception):
    """Internal: raised inside the loop, turned into :class:`DivergenceError` after saving."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@torch.no_grad()
def weight_norm(params: Iterable[torch.Tensor]) -> float:
    """The L2 norm of all ``params`` together: one norm per tensor in its own dtype (no
    float64 copy of a 7B model's weights every step), the squares summed in Python;
    ZeRO-3-partitioned ones: their partitions, reduced over the processes (every process
    calls this)."""
    params = list(params)
    if any(hasattr(p, "ds_tensor") for p in params):
        from interp_unlearn.unlearn.zero import weight_norm as zero_norm

        return zero_norm(params)
    return math.sqrt(sum(float(_full(torch.linalg.vector_norm(p.detach()))) ** 2
                         for p in params))


def _full(t: torch.Tensor) -> torch.Tensor:
    """A norm of an FSDP-sharded (DTensor) parameter is partial per process: reduce it
    (every process calls this)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def check_weight_growth(norm: float, start: float) -> None:
    if start > 0 and (not math.isfinite(norm) or norm > WEIGHT_GROWTH_LIMIT * start):
        raise Diverged(f"the trained weights' norm is {norm:.3g}, {norm / start:.3g}x its "
                       f"start {start:.3g} (limit {WEIGHT_GROWTH_LIMIT:g}x)")


def retain_collapse(before: float | None, now: float | None) -> str | None:
    """A message when retain accuracy ``now`` fell below chance + half the margin ``before``
    had over chance; ``None`` otherwise (or when either is unknown)."""
    if before is None or now is None or before <= CHANCE:
        return None
    floor = CHANCE + 0.5 * (before - CHANCE)
    if now < floor:
        return (f"retain accuracy collapsed to {now:.3f} (before {before:.3f}; floor "
                f"{floor:.3f} = chance + half the margin)")
    return None


def unusable_weights(model: Any, tokenizer: Any, evaluate: Any,
                     before: dict[str, float | None], env: DistEnv | None = None) -> str | None:
    """Why ``model``'s current weights are not good enough to keep at an early stop
    (``None``: they are): a non-finite parameter, non-finite outputs, or -- when
    ``evaluate()`` scores the retain set -- a retain accuracy that collapsed relative to
    ``before`` (:func:`retain_collapse`)."""
    params = dict(model.named_parameters())
    if not all_finite(params.values(), env or DistEnv()):  # FSDP/ZeRO: every process's shards
        bad = [n for n, p in params.items() if not torch.isfinite(local_tensor(p)).all()]
        return (f"{len(bad)} parameter tensor(s) hold NaN/inf (e.g. {bad[0]})" if bad
                else "a parameter shard on another process holds NaN/inf")
    try:
        now = evaluate()
    except FloatingPointError as err:  # evaluate_mcq's non-finite log-likelihoods
        return f"the model's outputs are not finite ({err})"
    if now.get("retain") is None:  # no evaluation: at least one finite forward pass
        device = next(model.parameters()).device
        ids = torch.tensor([[getattr(tokenizer, "eos_token_id", None) or 0] * 4], device=device)
        with torch.no_grad():
            if not torch.isfinite(model(input_ids=ids).logits).all():
                return "the model's outputs are not finite"
        return None
    return retain_collapse(before.get("retain"), now["retain"])
