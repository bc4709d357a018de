"""In-context attack: put ``k`` attack documents in front of every question.

Relearning without weight updates: ``k`` documents drawn with the seed from the attack
data (attack pool by default, so they state facts about *other* entities than the scored
ones; ``pool="same"`` can include the scored entities' own documents) are joined with
``separator`` and prepended, followed by ``separator`` again, to each question's context.
The same ``k`` documents are used for every question of a run. Scoring is the evaluator's
own (:mod:`interp_unlearn.evaluation.scoring`): the same requests (``build_requests``), with the
prefix added to each context, tokenised and truncated exactly as ``evaluate_mcq`` does
(``tokenize_requests``; lm-eval's *left* truncation to the model's context length, so
with long prefixes on a short-context model -- 128 tokens for ``organism-micro`` -- the
earliest documents are cut first and the question is always kept), scored by
``score_requests``. With ``k = 0`` the result equals ``evaluate_mcq`` exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from interp_unlearn.evaluation.scoring import (EvalConfig, EvalResult, _ci95, _pad_id,
                                               build_requests, resolve_config,
                                               resolve_max_length,
                                               score_requests, tokenize_requests)
from interp_unlearn.core.mcq import MCQ, N_CHOICES
from interp_unlearn.attacks.common import (AttackResult, ModelSpec, attack_corpus,
                                           load_attack_target, run_eval_for, sample_texts)

__all__ = ["evaluate_with_prefix", "in_context_attack"]


def evaluate_with_prefix(model: Any, tokenizer: Any, items: Sequence[MCQ], config: EvalConfig,
                         prefix: str = "") -> EvalResult:
    """``evaluate_mcq`` with ``prefix`` prepended to every context (``""``: identical to
    ``evaluate_mcq``). Also reports how many requests were left-truncated."""
    config = resolve_config(config, model)
    items = list(items)
    max_length = config.max_length or resolve_max_length(model, tokenizer)
    pairs = [(prefix + ctx, cont) for ctx, cont in
             build_requests(items, config.scoring, config.description)]
    requests = tokenize_requests(tokenizer, pairs, max_length, config.add_bos_token)
    scores = score_requests(model, requests, config.batch_size * N_CHOICES, _pad_id(tokenizer))
    logprobs = scores.double().numpy().reshape(len(items), N_CHOICES)
    if not np.isfinite(logprobs).all():
        raise FloatingPointError("non-finite log-likelihoods in the in-context evaluation")
    pred = logprobs.argmax(axis=1)
    answer = np.array([it.answer for it in items])
    correct = pred == answer
    per_question = pd.DataFrame({
        "index": np.arange(len(items)), "question": [it.question for it in items],
        "answer": answer, "pred": pred, "correct": correct,
        **{f"logprob_{k}": logprobs[:, k] for k in range(N_CHOICES)}})
    acc = float(correct.mean())
    return EvalResult(per_question=per_question, accuracy=acc, ci95=_ci95(acc, len(items)),
                      n=len(items), scoring=config.scoring)


def in_context_attack(model: ModelSpec, n: int, seed: int = 0, *, data: str = "forget",
                      pool: str = "attack", separator: str = "\n\n", mcq: Any = None,
                      scoring: str | None = None, domains: Sequence[str] = ("forget",),
                      batch_size: int = 32, **_: Any) -> AttackResult:
    """Score ``model`` with ``n`` attack documents prepended to every question."""
    lm = load_attack_target(model, copy_weights=False)
    corpus, pool_label, files = attack_corpus(lm.world_dir, data, pool,
                                                     real_set=lm.meta.get("real_set"))
    docs = sample_texts(corpus, n, seed)
    prefix = separator.join(docs) + separator if docs else ""
    info: dict[str, Any] = {"corpus": files, "prefix_tokens": len(lm.tokenizer(prefix)["input_ids"])
                            if prefix else 0}
    ctx = resolve_max_length(lm.model, lm.tokenizer)
    if info["prefix_tokens"] >= ctx:
        warnings.warn(f"the in-context prefix has {info['prefix_tokens']} tokens, at least the "
                      f"model's context length {ctx}: the earliest documents are truncated",
                      RuntimeWarning, stacklevel=2)

    def evaluate(model_: Any, tokenizer: Any, items: Any, cfg: EvalConfig) -> EvalResult:
        return evaluate_with_prefix(model_, tokenizer, items, cfg, prefix)

    return run_eval_for(lm, lm.model, attack="in-context", data=str(data), pool=pool_label, n=n,
                        seed=seed, mcq=mcq, scoring=scoring, domains=domains,
                        batch_size=batch_size, config={"separator": separator}, info=info,
                        evaluate=evaluate)
