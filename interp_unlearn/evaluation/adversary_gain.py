"""Is a latent adversary alive? Its gain on held-out questions, scored by the evaluator.

The norm half of the diagnostic (‖δ‖/ε per row, the fraction on the boundary) belongs to
the adversary itself (:meth:`~interp_unlearn.interventions.adversary.LatentAdversary.norm_stats`);
the gain -- answer log-prob and accuracy *with δ minus without* -- needs the MCQ scorer,
so it lives here, one layer up, and :func:`adversary_diagnostics` joins the two into the
verdict ``adversary_alive`` (median ‖δ‖/ε ≥ 0.1 and a positive log-prob gain).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
from torch import nn

from interp_unlearn.evaluation.scoring import evaluate_mcq, resolve_config
from interp_unlearn.interventions.adversary_diagnostics import ALIVE_THRESHOLDS

__all__ = ["adversary_diagnostics", "adversary_gain", "mcq_gain"]


def _answer_logprobs(result: Any) -> tuple[float, float]:
    """Mean over questions of the correct choice's summed log-prob, and of its log-prob
    normalised over the four choices (``lp_answer − logsumexp(lp_choices)``)."""
    pq = result.per_question
    lp = pq[[f"logprob_{k}" for k in range(4)]].to_numpy()
    ans = lp[np.arange(len(pq)), pq["answer"].to_numpy()]
    top = lp.max(axis=1, keepdims=True)
    lse = (top + np.log(np.exp(lp - top).sum(axis=1, keepdims=True)))[:, 0]
    return float(ans.mean()), float((ans - lse).mean())


def mcq_gain(model: nn.Module, tokenizer: Any, items: Any, eval_config: Any,
             applied: Callable[[], AbstractContextManager[Any]]) -> dict[str, float]:
    """Score ``items`` without and with δ (``applied()`` adds it); the differences are
    ``adversary_gain`` (accuracy) and ``adversary_gain_logprob`` (correct-choice log-prob)."""
    cfg = resolve_config(eval_config, model)
    base = evaluate_mcq(model, tokenizer, items, cfg)
    with applied():
        adv = evaluate_mcq(model, tokenizer, items, cfg)
    (lp0, c0), (lp1, c1) = _answer_logprobs(base), _answer_logprobs(adv)
    return {"acc_without_delta": base.accuracy, "acc_with_delta": adv.accuracy,
            "adversary_gain": adv.accuracy - base.accuracy,
            "logprob_without_delta": lp0, "logprob_with_delta": lp1,
            "adversary_gain_logprob": lp1 - lp0,
            "adversary_gain_choice_logprob": c1 - c0, "restores_ranking": bool(c1 > c0),
            "gain_n": int(base.n)}


def adversary_gain(adv: Any, tokenizer: Any, items: Any, eval_config: Any = None,
                   model: nn.Module | None = None) -> dict[str, float]:
    """Answer log-prob and accuracy with ``adv``'s δ minus without, on ``items``."""
    model = adv.model if model is None else model
    return mcq_gain(model, tokenizer, items, eval_config, lambda: adv.applied(model))


def adversary_diagnostics(adv: Any, tokenizer: Any = None, items: Any = None,
                          eval_config: Any = None, pool_label: str | None = None
                          ) -> dict[str, Any]:
    """Norm statistics, the per-row table, the gain on ``items`` (when given) and the
    verdict ``adversary_alive`` with its thresholds."""
    out: dict[str, Any] = adv.norm_stats()
    if items is not None:
        out.update(adversary_gain(adv, tokenizer, items, eval_config))
        out["gain_pool"] = pool_label
    out[adv.table_name] = adv.table()
    med, lp = out.get("delta_over_eps_median"), out.get("adversary_gain_logprob")
    if med is not None and lp is not None:
        out["adversary_alive"] = bool(med >= ALIVE_THRESHOLDS["delta_over_eps_median"]
                                      and lp > ALIVE_THRESHOLDS["adversary_gain_logprob"])
    out["thresholds"] = dict(ALIVE_THRESHOLDS)
    return out
