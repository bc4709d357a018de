"""The unlearning trainer's micro-batches: one global batch (``UnlearnConfig.batch_size``
rows, the effective batch) split over processes × ``grad_accum`` steps, with the
normalisers that make the summed gradients those of the global batch
(:mod:`interp_unlearn.core.distributed` explains the scheme).

Every process draws the same global forget/retain batches (same seeded streams) and keeps
the micro-batches ``rank·A .. rank·A + A − 1`` of ``K = world · A`` (``A = grad_accum``),
sliced from the *collated* global batch (so every micro-batch has the global batch's
width and padding). A micro-batch carries

* ``share`` = its rows / the global rows: a method's term that is a mean over rows (RMU's
  unmasked MSE, NPO/DPO's per-sequence losses) is exactly ``Σ share × term`` over the
  micro-batches;
* the global batch's real-token counts: token means (``lm_loss``, RMU's masked MSE) divide
  by them (:func:`~.losses.token_denominator`), so they too add up exactly.

The trainer weights each term by the share of the batch it came from -- terms whose name
starts with ``retain`` by the retain micro-batch's, all others by the forget one's (the
built-in methods follow this naming; the shares only differ on a pass's short last
batch) -- back-propagates, sums the gradients over the processes and steps once. A
micro-batch left empty (a short last batch with fewer rows than ``K``) runs on one row with
``share`` 0: no gradient, no contribution, and every process still takes part in the
collectives.
"""

from __future__ import annotations

import math

import torch

from interp_unlearn.core.distributed import DistEnv, row_slices
from interp_unlearn.unlearn.batches import Batch

__all__ = ["micro_batches", "reduce_values", "term_share"]


def _counts(batch: Batch) -> tuple[int, int]:
    m = batch.attention_mask
    return int(m.sum()), int((m[:, 1:] * m[:, :-1]).sum())


def shard(batch: Batch, part: int, n_parts: int) -> Batch:
    """Micro-batch ``part`` of ``n_parts`` of the global ``batch`` (see the module doc)."""
    if n_parts == 1:
        return batch
    rows = batch.input_ids.shape[0]
    sl = row_slices(rows, n_parts)[part]
    tokens, targets = _counts(batch)
    n = sl.stop - sl.start
    if n == 0:  # an empty micro-batch: one row, weight 0
        sl, share = slice(0, 1), 0.0
    else:
        share = n / rows
    return Batch(batch.input_ids[sl], batch.attention_mask[sl], batch.texts[sl], share,
                 tokens, targets)


def micro_batches(forget: Batch, retain: Batch | None, env: DistEnv,
                  grad_accum: int) -> list[tuple[Batch, Batch | None]]:
    """This process's ``grad_accum`` (forget, retain) micro-batches of the global batches."""
    k = env.world * grad_accum
    parts = range(env.rank * grad_accum, (env.rank + 1) * grad_accum)
    return [(shard(forget, i, k), shard(retain, i, k) if retain is not None else None)
            for i in parts]


def term_share(name: str, forget: Batch, retain: Batch | None) -> float:
    """The share a loss term is weighted by (``retain*`` terms: the retain batch's)."""
    if name.startswith("retain") and retain is not None:
        return retain.share
    return forget.share


def reduce_values(values: dict[str, float], env: DistEnv) -> dict[str, float]:
    """Sum the (share-weighted) logged values over the processes: the global batch's
    values on every process; a NaN/inf anywhere reaches every process."""
    if not env.distributed:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=env.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def finite(values: dict[str, float]) -> str | None:
    """The first non-finite value's name, or None."""
    return next((k for k, v in values.items() if not math.isfinite(v)), None)
