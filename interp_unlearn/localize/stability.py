"""Phase 1 over several seeds: the aggregate selection and ``stability.json``.

A phase-1 score carries signal only if it rises above what the optimiser alone produces
and is reproducible. Two checks, both in ``stability.json``:

* **Scale vs dither** (per seed). Adam's update is about ``lr * sign(g)`` per element, so
  where the CE gradient of ``A`` is below ``lambda`` (the L1 term dominates), each element
  dithers around 0 with the amplitude of the current step size; at the end of LoFiT's
  linear schedule that is the last step's ``lr``, and a head's ``||A||_2`` is then about
  ``last_lr * sqrt(d_head)`` (the *dither scale*). ``max_over_dither`` near 1 means no
  head escaped it (the shipped organism under the paper's corpus CE: scores in
  [1.0e-4, 2.45e-4] for a dither scale of 1.5e-4). ``max_over_median`` is the spread.
* **Seed to seed** (with >= 2 seeds). The seed sets ``A``'s initialisation and the text
  order. Pairwise Spearman correlation of the ``n_layers * n_heads`` scores (ties get
  average ranks, as ``scipy.stats.spearmanr``) and Jaccard overlap of the top-K sets.

The aggregate selection is the top-K of the mean score over seeds (ties by layer, head).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from interp_unlearn.core.selection import select_heads
from interp_unlearn.localize.config import LocalizeConfig
from interp_unlearn.localize.core import LocalizationResult, localize, scores_frame

__all__ = ["STABILITY_FILE", "MultiSeedLocalization", "aggregate", "jaccard", "localize_seeds",
           "scale_report", "spearman", "stability_report", "write_stability"]

STABILITY_FILE = "stability.json"


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either is constant."""
    x = pd.Series(np.asarray(a, dtype=float)).rank(method="average")
    y = pd.Series(np.asarray(b, dtype=float)).rank(method="average")
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"spearman needs two sequences of equal length >= 2, got {len(x)}, {len(y)}")
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x.to_numpy(), y.to_numpy())[0, 1])


def jaccard(a: Sequence[Any], b: Sequence[Any]) -> float:
    """``|A & B| / |A | B|`` of two sets (1.0 for two empty sets)."""
    sa, sb = {tuple(x) if isinstance(x, list) else x for x in a}, \
        {tuple(x) if isinstance(x, list) else x for x in b}
    return 1.0 if not sa | sb else len(sa & sb) / len(sa | sb)


def _score_vector(res: LocalizationResult) -> np.ndarray:
    s = res.scores.sort_values(["layer", "head"])
    return s["score"].to_numpy(dtype=float)


def scale_report(res: LocalizationResult) -> dict[str, Any]:
    """Per-run score scale vs the dither scale, and how much the CE fell (module docstring).

    ``ce_before`` / ``ce_after``: CE per target token over all training rows with ``A`` at
    its initialisation / trained (one extra pass each, in :func:`localize`);
    ``ce_reduction`` is their difference (``NaN`` for results saved before these were
    recorded)."""
    scores = _score_vector(res)
    d_head = int(res.meta.get("d_head") or (res.A.shape[-1] if res.A is not None else 0))
    h = res.history
    last_lr = float(h["lr"].iloc[-1]) if len(h) else float("nan")
    dither = last_lr * math.sqrt(d_head) if d_head else float("nan")
    ce_before = float(res.meta.get("ce_before", float("nan")))
    ce_after = float(res.meta.get("ce_after", float("nan")))
    mx, med = float(scores.max()), float(np.median(scores))
    return {
        "seed": int(res.config.seed),
        "max_score": mx, "median_score": med, "min_score": float(scores.min()),
        "max_over_median": mx / med if med > 0 else float("inf"),
        "last_lr": last_lr, "d_head": d_head, "dither": dither,
        "max_over_dither": mx / dither if dither > 0 else float("inf"),
        "median_over_dither": med / dither if dither > 0 else float("inf"),
        "init_norm": float(res.config.sigma_A * math.sqrt(d_head)),
        "ce_before": ce_before, "ce_after": ce_after, "ce_reduction": ce_before - ce_after,
        "ce_reduction_rel": (ce_before - ce_after) / ce_before if ce_before > 0 else float("nan"),
        "l1_end": float(h["l1"].iloc[-1]) if len(h) else float("nan"),
        "steps": int(res.meta.get("steps", len(h))),
        "top_k": [list(x) for x in res.selected],
    }


def _summary(values: list[float]) -> dict[str, float | None]:
    vals = [v for v in values if not math.isnan(v)]
    return {"mean": float(np.mean(vals)) if vals else None,
            "min": float(np.min(vals)) if vals else None}


def stability_report(results: dict[int, LocalizationResult], k: int) -> dict[str, Any]:
    """The content of ``stability.json`` for runs ``{seed: result}`` and top-``k`` sets."""
    if not results:
        raise ValueError("stability_report needs at least one run")
    seeds = list(results)
    cfg = results[seeds[0]].config
    tops = {s: select_heads(r.scores, "top-k", k=k) for s, r in results.items()}
    rho, jac = [], []
    for a, b in itertools.combinations(seeds, 2):
        rho.append({"seeds": [a, b], "value": spearman(_score_vector(results[a]),
                                                         _score_vector(results[b]))})
        jac.append({"seeds": [a, b], "value": jaccard(tops[a], tops[b])})
    agg = aggregate(results, k)
    return {
        "objective": cfg.objective, "l1_lambda": cfg.l1_lambda, "lr": cfg.lr,
        "epochs": cfg.epochs, "steps": cfg.steps, "K": k, "seeds": seeds,
        "n_heads_total": int(len(results[seeds[0]].scores)),
        "corpus": results[seeds[0]].meta.get("corpus"),
        "per_seed": {str(s): scale_report(r) for s, r in results.items()},
        "max_over_dither": _summary([scale_report(r)["max_over_dither"] for r in results.values()]),
        "spearman": {**_summary([p["value"] for p in rho]), "pairs": rho},
        "jaccard_top_k": {**_summary([p["value"] for p in jac]), "pairs": jac},
        "aggregate_top_k": [list(x) for x in agg.selected],
        "note": ("dither = last_lr * sqrt(d_head): the size of ||A[l,h]|| that Adam's step "
                 "alone produces; max_over_dither near 1 means no head rose above it. "
                 "Spearman over all heads' scores, Jaccard over top-K sets, pairwise across "
                 "seeds (null with one seed)."),
    }


def aggregate(results: dict[int, LocalizationResult], k: int) -> LocalizationResult:
    """Mean score over seeds (``score``), its sample sd (``score_sd``), top-``k`` of the
    mean; history concatenated with a ``seed`` column."""
    seeds = list(results)
    first = results[seeds[0]]
    grids = torch.stack([torch.tensor(_score_vector(r)).reshape(first.n_layers, first.n_heads)
                         for r in results.values()])
    scores = scores_frame(grids.mean(0))
    sd = grids.std(0, unbiased=True) if len(seeds) > 1 else torch.full_like(grids[0], float("nan"))
    scores["score_sd"] = sd.reshape(-1).double().numpy()
    history = pd.concat([r.history.assign(seed=s) for s, r in results.items()], ignore_index=True)
    config = dataclasses.replace(first.config, seeds=tuple(seeds))
    meta = {**first.meta, "seeds": seeds, "aggregate": "mean score over seeds",
            "seconds": round(sum(float(r.meta.get("seconds", 0)) for r in results.values()), 2)}
    return LocalizationResult(scores=scores, config=config, history=history,
                              selected=select_heads(scores, "top-k", k=k), meta=meta)


@dataclass
class MultiSeedLocalization:
    """Phase 1 run with several seeds.

    Attributes:
        runs: ``{seed: LocalizationResult}``.
        result: The aggregate (mean score, top-K of it); what ALMPU uses.
        stability: The ``stability.json`` record (:func:`stability_report`).
    """

    runs: dict[int, LocalizationResult]
    result: LocalizationResult
    stability: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: str | Path) -> dict[str, Path]:
        """``seed{s}/`` per run (scores.csv, selected_heads.json, ...), the aggregate's
        files at the top and ``stability.json``; returns the top-level paths."""
        d = Path(directory)
        for s, r in self.runs.items():
            r.save(d / f"seed{s}")
        paths = self.result.save(d)
        paths["stability"] = write_stability(d / STABILITY_FILE, self.stability)
        return paths


def write_stability(path: str | Path, report: dict[str, Any]) -> Path:
    """Write a :func:`stability_report` record as JSON (non-finite numbers as ``null``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(report), indent=1) + "\n")
    return path


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def localize_seeds(model: Any, tokenizer: Any, corpus: Any, config: LocalizeConfig | None = None,
                   seeds: Any = None, **kw: Any) -> MultiSeedLocalization:
    """:func:`localize` once per seed (``seeds``, else ``config.seeds``, else
    ``[config.seed]``), then aggregate and :func:`stability_report`. ``kw`` go to
    :func:`localize` (``progress``, ``model_name``, ``backend``)."""
    config = LocalizeConfig() if config is None else config
    if seeds is not None:
        config = dataclasses.replace(config, seeds=seeds)
    runs: dict[int, LocalizationResult] = {}
    for s in config.seed_list():
        runs[s] = localize(model, tokenizer, corpus,
                           dataclasses.replace(config, seed=s, seeds=None), **kw)
    k = len(next(iter(runs.values())).selected)
    agg = aggregate(runs, k)
    if config.seeds is None:
        agg.config = dataclasses.replace(agg.config, seeds=None)
    return MultiSeedLocalization(runs=runs, result=agg, stability=stability_report(runs, k))
