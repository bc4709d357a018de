"""The adversary's objectives and option checks (:mod:`.adversary`): the memory losses of
the ``match`` objective, the forget CE of the ``ce`` objective, and the ValueErrors that
name a bad option and its valid range before any training."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

__all__ = ["ADV_OBJECTIVES", "DELTA_OPTIMIZERS", "MAX_STEPS", "MEMORY_LOSSES",
           "check_adversary_options", "check_radius_options", "forget_ce", "memory_loss",
           "radii_from"]

ADV_OBJECTIVES = ("match", "ce")
MEMORY_LOSSES = ("kl", "mse_sum", "mse_mean")
DELTA_OPTIMIZERS = ("adam", "sgd")
MAX_STEPS = 100


def memory_loss(logits: Float[Tensor, "batch pos vocab"],
                ref_logprobs: Float[Tensor, "batch pos vocab"], mask: Tensor, kind: str
                ) -> Tensor:
    """Distance of ``softmax(logits)`` to ``p_ref`` at the real positions of ``mask``:
    ``kl`` = Σ_v p_ref (log p_ref − log p), ``mse_sum`` = Σ_v (p − p_ref)², both averaged
    over real positions; ``mse_mean`` (legacy) = the mean over positions × vocabulary."""
    m = mask.to(torch.float32)
    logp = F.log_softmax(logits.float(), dim=-1)
    if kind == "kl":
        per_pos = (ref_logprobs.exp() * (ref_logprobs - logp)).sum(-1)
    elif kind in ("mse_sum", "mse_mean"):
        per_pos = ((logp.exp() - ref_logprobs.exp()) ** 2).sum(-1)
        if kind == "mse_mean":
            per_pos = per_pos / logits.shape[-1]
    else:
        raise ValueError(f"memory_loss must be one of {MEMORY_LOSSES}, got {kind!r}")
    return (per_pos * m).sum() / m.sum().clamp_min(1)


def forget_ce(logits: Float[Tensor, "batch pos vocab"], input_ids: Tensor, mask: Tensor
              ) -> Tensor:
    """Mean next-token cross-entropy over the real token pairs."""
    lp = -F.cross_entropy(logits[:, :-1].float().transpose(1, 2), input_ids[:, 1:],
                          reduction="none")
    valid = (mask[:, 1:] * mask[:, :-1]).to(lp.dtype)
    return -(lp * valid).sum() / valid.sum().clamp_min(1)



def check_adversary_options(*, objective: str, memory_loss_kind: str, lambda_mem: float,
                            lambda_reg: float, steps: Any, lr: float, optimizer: str) -> None:
    """ValueError naming the option and its valid range for the first bad one."""
    if objective not in ADV_OBJECTIVES:
        raise ValueError(f"adv_objective must be one of {ADV_OBJECTIVES}, got {objective!r}")
    if memory_loss_kind not in MEMORY_LOSSES:
        raise ValueError(f"memory_loss must be one of {MEMORY_LOSSES}, got {memory_loss_kind!r}")
    if optimizer not in DELTA_OPTIMIZERS:
        raise ValueError(f"delta_optimizer must be one of {DELTA_OPTIMIZERS}, got {optimizer!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"delta_steps must be an int in 1..{MAX_STEPS}, got {steps!r}")
    for name, v, strict in (("lambda_mem", lambda_mem, False), ("lambda_reg", lambda_reg, False),
                            ("delta_lr", lr, True)):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
            and (v > 0 if strict else v >= 0)
        if not ok:
            raise ValueError(f"{name} must be a finite number {'> 0' if strict else '>= 0'}, "
                             f"got {v!r}")


def check_radius_options(kappa: Any, epsilon: Any) -> None:
    """ValueError unless ``epsilon`` is None or finite > 0 and ``kappa`` None or finite > 0."""
    for name, v in (("epsilon", epsilon), ("kappa", kappa)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                              or not math.isfinite(v) or v <= 0):
            raise ValueError(f"{name} must be None or a finite number > 0, got {v!r}")


def radii_from(norms: Tensor | None, kappa: float | None, epsilon: float | None,
               n_rows: int) -> Tensor | None:
    """ε per row: ``epsilon`` for every row when given, else ``κ · norms``, else None."""
    check_radius_options(kappa, epsilon)
    if epsilon is not None:
        return torch.full((n_rows,), float(epsilon))
    if kappa is None:
        return None
    if norms is None:
        raise ValueError("kappa-relative radii need the measured norms (pass batches of "
                         "forget text)")
    return float(kappa) * norms.float()
