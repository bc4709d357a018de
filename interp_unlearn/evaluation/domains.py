"""Which MCQ sets a model is scored on, per domain, and scoring them all at once."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from interp_unlearn.core.mcq import MCQ, load_mcq
from interp_unlearn.data.loading import LoadedModel
from interp_unlearn.evaluation.scoring import EvalConfig, EvalResult, evaluate_mcq

__all__ = ["evaluate_domains", "mcq_name", "resolve_mcqs"]


def resolve_mcqs(lm: LoadedModel, mcq: str | Path | Mapping[str, Any] | None = None,
                 domains: Sequence[str] = ("forget",)) -> dict[str, Path | list[MCQ]]:
    """``{domain: MCQ file or list}``: ``mcq`` may be one file or list of MCQ (the forget
    set), a mapping
    ``{domain: file, list of MCQ or None (the model's own)}``, or None (``lm.mcq_path(domain)``, the model's own
    default pool)."""
    if mcq is None:
        return {d: lm.mcq_path(d) for d in domains}
    if isinstance(mcq, Mapping):  # a None value: the model's own set of that domain
        return {str(k): (lm.mcq_path(str(k)) if v is None else Path(v)
                         if isinstance(v, (str, os.PathLike)) else list(v))
                for k, v in mcq.items()}
    if isinstance(mcq, (list, tuple)):
        return {"forget": list(mcq)}
    return {"forget": Path(mcq)}


def evaluate_domains(model: Any, tokenizer: Any, mcqs: Mapping[str, Path | list[MCQ]],
                     scoring: str, batch_size: int = 32,
                     evaluate: Any = None) -> dict[str, EvalResult]:
    """``evaluate_mcq`` on each domain's questions. ``evaluate`` replaces
    ``evaluate_mcq`` (same signature), e.g. for in-context prompts."""
    evaluate = evaluate or evaluate_mcq
    cfg = EvalConfig(scoring=scoring, batch_size=batch_size)
    out = {}
    for domain, items in mcqs.items():
        items = load_mcq(items) if isinstance(items, Path) else items
        out[domain] = evaluate(model, tokenizer, items, cfg)
    return out


def mcq_name(items: Path | list[MCQ]) -> str:
    return items.name if isinstance(items, Path) else f"<{len(items)} questions>"
