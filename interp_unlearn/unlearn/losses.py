"""Loss helpers shared by the methods: decoder layers, masked MSE, token log-probabilities,
next-token CE and summed sequence log-likelihoods."""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interp_unlearn.unlearn.batches import Batch

# ---------------------------------------------------------------------- loss helpers


def token_denominator(batch: Batch, local: Tensor, kind: str = "targets") -> Tensor:
    """The count a token mean over ``batch`` divides by: ``local`` (this batch's count,
    at least 1) for a whole batch; for a micro-batch of a global batch (``share`` < 1) the
    global batch's count (``global_targets`` or ``global_tokens``) times ``share``, so that
    ``Σ share × term`` over the micro-batches is the global batch's token mean (the
    trainer weights each micro-batch's terms by its share)."""
    total = batch.global_targets if kind == "targets" else batch.global_tokens
    if total is None or batch.share >= 1.0 or batch.share <= 0.0:
        return local.clamp_min(1)
    return torch.as_tensor(max(total, 1) * batch.share, dtype=torch.float64,
                           device=local.device).float()


def masked_mse(a: Tensor, b: Tensor, mask: Tensor | None = None,
               batch: Batch | None = None) -> Tensor:
    """``F.mse_loss`` (mean over batch x pos x features); with ``mask`` [batch, pos] the
    mean runs over the unmasked positions only (of the global batch when ``batch`` is a
    micro-batch: :func:`token_denominator`)."""
    if mask is None:
        return F.mse_loss(a, b.expand_as(a))
    m = mask.to(a.dtype)[..., None]
    local = m.sum()
    if batch is not None:
        local = token_denominator(batch, local, "tokens")
    return ((a - b) ** 2 * m).sum() / (local * a.shape[-1]).clamp_min(1)


def token_logprobs(logits: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
    """``(log p(token_{t+1} | ..t), valid)`` both ``[batch, pos-1]`` (fp32)."""
    ids = batch.input_ids
    lp = -F.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
    valid = (batch.attention_mask[:, 1:] * batch.attention_mask[:, :-1]).bool()
    return lp, valid


def lm_loss(model: nn.Module, batch: Batch) -> Tensor:
    """Mean next-token cross-entropy over the real tokens of ``batch``."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                   use_cache=False).logits
    lp, valid = token_logprobs(logits, batch)
    return -(lp * valid).sum() / token_denominator(batch, valid.sum(), "targets")


def sequence_logprob(logits: Tensor, batch: Batch, weights: Tensor | None = None) -> Tensor:
    """Summed log-likelihood of each row's tokens (after the first), ``[batch]``;
    ``weights`` [batch, pos-1] restricts the sum (e.g. to a response)."""
    lp, valid = token_logprobs(logits, batch)
    w = valid.float() if weights is None else valid.float() * weights
    return (lp * w).sum(-1)
