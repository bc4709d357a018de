"""``interp-unlearn localize-benchmark``: score every head-localization method against the
planted organism's ground truth H* (:mod:`.planted_run`, :mod:`interp_unlearn.data.planted`).

Methods (:data:`METHODS`), each run once per seed on the planted model, each giving a
full ranking of the heads:

* ``lofit-corpus-ce`` / ``lofit-answer-ce`` / ``lofit-paraphrase-ce`` -- ALMPU phase 1
  (LoFiT's learned scales, :func:`interp_unlearn.localize.localize`) with each objective,
  the organism family's defaults; the seed seeds the init of ``A`` and the batch order.
* ``ablation`` -- ablation attribution (:mod:`interp_unlearn.localize.attribution`, held-out
  MCQ signal, contrast score); the seed draws the questions.
* ``gradient`` -- attribution patching (:mod:`interp_unlearn.localize.gradient`); the seed
  draws the questions.
* ``random`` -- a seeded random ranking (the chance line).

Metrics per method and seed: ``precision`` = |top-|H*| ∩ H*| / |H*| (precision@|H*|),
``mean_rank`` of the planted heads in the method's ranking (1 = first; chance:
``(n_heads_total + 1) / 2``), ``worst_rank`` (the rank at which all of H* is found).
The table gives the mean and the 95 % Student-t interval over seeds.

Outputs in ``--out``: ``table.csv``, ``table.md``, ``per_seed.csv``, ``scores.csv`` (every
head's score and rank per method and seed), ``summary.json``, ``benchmark_config.json``,
``verification.json`` (the ablation check of H*) and the figure ``localize_benchmark``.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from interp_unlearn.core.config import ConfigBase
from interp_unlearn.core.stats import t_interval
from interp_unlearn.pipeline.cli_common import UsageError, default_out

__all__ = ["METHODS", "BenchmarkConfig", "add_arguments", "cmd_localize_benchmark",
           "localize_benchmark", "rank_metrics"]

METHODS = ("lofit-corpus-ce", "lofit-answer-ce", "lofit-paraphrase-ce", "ablation",
           "gradient", "random")


@dataclass
class BenchmarkConfig(ConfigBase):
    """What the benchmark runs. Saved as ``benchmark_config.json``.

    Attributes:
        methods: A subset of :data:`METHODS`.
        seeds: Seeds per method (95 % CIs need two or more).
        max_questions: Held-out questions per domain for ``ablation`` and ``gradient``
            (a seeded sample).
        lofit_steps: Phase-1 steps per LoFiT run; ``None``: LoFiT's 5 epochs.
        verify: Re-run the ablation check of H* (``verification.json``).
    """

    methods: tuple[str, ...] = METHODS
    seeds: tuple[int, ...] = (0, 1, 2)
    max_questions: int = 100
    lofit_steps: int | None = None
    verify: bool = True

    def __post_init__(self) -> None:
        self.methods = tuple(self.methods)
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must be distinct names from {list(METHODS)}, got "
                             f"{list(self.methods)}")
        self.seeds = tuple(self.seeds)
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0
                                 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct ints >= 0, got {list(self.seeds)}")
        for name in ("max_questions", "lofit_steps"):
            v = getattr(self, name)
            if v is None and name == "lofit_steps":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")


def rank_metrics(scores: pd.DataFrame, planted: list[tuple[int, int]]) -> dict[str, float]:
    """precision@|H*|, mean and worst rank of H* in ``scores`` (``layer, head, rank``)."""
    rank = {(int(l), int(h)): int(r) for l, h, r in
            zip(scores["layer"], scores["head"], scores["rank"])}
    missing = [h for h in planted if h not in rank]
    if missing:
        raise ValueError(f"planted head {missing[0]} is not in the scored heads")
    k = len(planted)
    ranks = [rank[h] for h in planted]
    return {"precision": sum(r <= k for r in ranks) / k, "mean_rank": sum(ranks) / k,
            "worst_rank": float(max(ranks))}


def _ranked(scores: pd.DataFrame) -> pd.DataFrame:
    """``layer, head, score, rank`` with rank 1 = highest score (ties: layer, head)."""
    df = scores[["layer", "head", "score"]].copy()
    df = df.sort_values(["score", "layer", "head"], ascending=[False, True, True], kind="mergesort")
    df["rank"] = range(1, len(df) + 1)
    return df.sort_values(["layer", "head"]).reset_index(drop=True)


def _run_method(method: str, seed: int, lm: Any, world: Any, k: int, n_layers: int,
                n_heads: int, cfg: BenchmarkConfig, progress: bool) -> pd.DataFrame:
    if method == "random":
        heads = [(l, h) for l in range(n_layers) for h in range(n_heads)]
        order = random.Random(f"localize-benchmark-{seed}").sample(heads, len(heads))
        return pd.DataFrame([{"layer": l, "head": h, "score": float(len(order) - i)}
                             for i, (l, h) in enumerate(order)])
    if method.startswith("lofit-"):
        from interp_unlearn.localize import localize
        from interp_unlearn.localize.config import localize_config

        over = {"steps": cfg.lofit_steps} if cfg.lofit_steps else {}
        conf = localize_config(lm, objective=method[len("lofit-"):], seed=seed, top_k=k, **over)
        return localize(lm.model, lm.tokenizer, world, conf, progress=progress).scores
    from interp_unlearn.core.mcq import load_mcq
    from interp_unlearn.localize.attribution import attribution_pools

    pools = attribution_pools(lm.eval_pool)
    forget = load_mcq(lm.mcq_path("forget", pools["forget"]))
    retain = load_mcq(lm.mcq_path("retain", pools["retain"]))
    if method == "ablation":
        from interp_unlearn.localize.attribution import AttributionConfig, head_attribution

        conf = AttributionConfig(seed=seed, top_k=k, max_texts=cfg.max_questions,
                                 scoring=lm.default_scoring)
        return head_attribution(lm.model, lm.tokenizer, forget, retain, conf,
                                progress=progress).scores
    from interp_unlearn.localize.gradient import GradientConfig, gradient_attribution

    conf = GradientConfig(seed=seed, top_k=k, max_texts=cfg.max_questions)
    return gradient_attribution(lm.model, lm.tokenizer, forget, retain, conf,
                                progress=progress).scores


def localize_benchmark(model: Any = None, out: str | Path | None = None,
                       config: BenchmarkConfig | None = None, *, progress: bool = True,
                       formats: tuple[str, ...] = ("html", "png")) -> pd.DataFrame:
    """Score every method of ``config`` against the planted heads of ``model`` (a planted
    checkpoint; ``None``: the shipped one, or one trained into ``out/plant``). Returns the
    table (one row per method; ``df.attrs``: ``per_seed``, ``summary``)."""
    from interp_unlearn.data.world import World
    from interp_unlearn.pipeline.planted_run import plant_heads, resolve_plant, verify_plant

    config = config or BenchmarkConfig()
    cache = None if out is None else Path(out) / "plant"
    lm = resolve_plant(model, cache=cache, progress=progress)
    planted = plant_heads(lm)
    n_layers = int(lm.model.config.num_hidden_layers)
    n_heads = int(lm.model.config.num_attention_heads)
    bad = [h for h in planted if not (0 <= h[0] < n_layers and 0 <= h[1] < n_heads)]
    if bad:
        raise ValueError(f"planted head {bad[0]} is outside the model: layers 0..{n_layers - 1}, "
                         f"heads 0..{n_heads - 1}")
    world = World.load(lm.world_dir)
    k = len(planted)
    verification = verify_plant(lm) if config.verify else None
    if verification is not None and not verification["passed"]:
        import warnings

        failed = sorted(k for k, v in verification["checks"].items() if not v)
        warnings.warn(f"!!!!! the planted heads H* of {lm.path or lm.name} FAIL their ablation "
                      f"check ({', '.join(failed)}): precision against H* is not a ground-truth "
                      "score for this model", RuntimeWarning, stacklevel=2)
    rows, score_rows = [], []
    for method in config.methods:
        for seed in config.seeds:
            t0 = time.time()
            ranked = _ranked(_run_method(method, seed, lm, world, k, n_layers, n_heads, config,
                                         progress))
            top = ranked.nsmallest(k, "rank")
            rows.append({"method": method, "seed": seed, **rank_metrics(ranked, planted),
                         "top_heads": [[int(l), int(h)] for l, h in zip(top["layer"], top["head"])],
                         "seconds": round(time.time() - t0, 2)})
            score_rows.append(ranked.assign(method=method, seed=seed))
    per_seed = pd.DataFrame(rows)
    n_total = n_layers * n_heads
    table = []
    for method, g in per_seed.groupby("method", sort=False):
        row: dict[str, Any] = {"method": method, "n_seeds": len(g)}
        for col in ("precision", "mean_rank"):
            mean, lo, hi = t_interval(g[col].tolist())
            row.update({col: mean, f"{col}_lo": lo, f"{col}_hi": hi})
        row["worst_rank"] = float(g["worst_rank"].mean())
        row["seconds"] = float(g["seconds"].mean())
        table.append(row)
    df = pd.DataFrame(table)
    summary = {"model": str(lm.path or lm.name), "planted_heads": [list(h) for h in planted],
               "k": k, "n_heads_total": n_total, "chance_precision": k / n_total,
               "chance_mean_rank": (n_total + 1) / 2,
               "verification_passed": None if verification is None else verification["passed"],
               "methods": {r["method"]: {"precision": r["precision"], "mean_rank": r["mean_rank"]}
                           for r in table}}
    df.attrs.update(per_seed=per_seed, summary=summary)
    if out is not None:
        _write(Path(out), df, per_seed, pd.concat(score_rows), summary, verification, config,
               formats)
    return df


def _markdown(df: pd.DataFrame, summary: dict[str, Any]) -> str:
    def ci(r: pd.Series, col: str, fmt: str) -> str:
        lo, hi = r[f"{col}_lo"], r[f"{col}_hi"]
        return (f"{r[col]:{fmt}}" if lo != lo else f"{r[col]:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]")

    lines = [f"H* = {summary['planted_heads']} (k = {summary['k']} of "
             f"{summary['n_heads_total']} heads; chance precision {summary['chance_precision']:.3f}, "
             f"chance mean rank {summary['chance_mean_rank']:.1f})", "",
             "| method | seeds | precision@k (95% CI) | mean rank of H* (95% CI) | worst rank |",
             "| --- | --- | --- | --- | --- |"]
    for _, r in df.iterrows():
        lines.append(f"| {r['method']} | {r['n_seeds']} | {ci(r, 'precision', '.3f')} | "
                     f"{ci(r, 'mean_rank', '.1f')} | {r['worst_rank']:.1f} |")
    return "\n".join(lines) + "\n"


def _write(out: Path, df: pd.DataFrame, per_seed: pd.DataFrame, scores: pd.DataFrame,
           summary: dict[str, Any], verification: dict[str, Any] | None,
           config: BenchmarkConfig, formats: tuple[str, ...]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "table.csv", index=False)
    (out / "table.md").write_text(_markdown(df, summary))
    per_seed.assign(top_heads=per_seed["top_heads"].map(json.dumps)).to_csv(
        out / "per_seed.csv", index=False)
    scores.to_csv(out / "scores.csv", index=False)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    config.save_json(out / "benchmark_config.json")
    if verification is not None:
        (out / "verification.json").write_text(json.dumps(verification, indent=1, default=str))
    if formats:
        from interp_unlearn.plotting.export import save_figure
        from interp_unlearn.plotting.localize_bench import benchmark_bars

        save_figure(benchmark_bars(df, chance=summary["chance_precision"],
                                   title=f"Localization vs planted heads H* "
                                         f"(k = {summary['k']} of {summary['n_heads_total']})"),
                    out / "localize_benchmark", formats)


# --------------------------------------------------------------------------- CLI


def add_arguments(sub: Any) -> Any:
    """The ``localize-benchmark`` subcommand on ``sub`` (the CLI's subparsers)."""
    from interp_unlearn.pipeline.cli_common import add_common_arguments

    p = sub.add_parser("localize-benchmark",
                       help="score localization methods against a planted organism's heads H*")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma list of {', '.join(METHODS)} (default: all)")
    p.add_argument("--max-questions", type=int, default=100,
                   help="held-out questions per domain for ablation/gradient (default 100)")
    p.add_argument("--lofit-steps", type=int, default=None,
                   help="phase-1 steps per LoFiT run (default: LoFiT's 5 epochs)")
    p.add_argument("--no-verify", action="store_true", help="skip the ablation check of H*")
    p.add_argument("--formats", default="html,png", help="figure formats ('' for none)")
    add_common_arguments(
        p, unused=("dtype", "device"),
        model="a planted checkpoint (default: the shipped planted organism, "
              "organism-planted-micro in this release)",
        out="table.csv/.md, per_seed.csv, scores.csv, summary.json, figure (default "
            "runs/localize-benchmark-MODEL)",
        seeds="seeds per method (default 0-2)", device="runs on the CPU",
        dtype="runs in float32")
    return p


def cmd_localize_benchmark(args: Any) -> tuple[Path, dict[str, Any], str]:
    """The CLI command: ``(out, summary, text)`` (``commands`` wraps it as its result)."""
    methods = tuple(m.strip() for m in str(args.methods).split(",") if m.strip())
    try:
        config = BenchmarkConfig(methods=methods, seeds=tuple(args.seeds or (0, 1, 2)),
                                 max_questions=args.max_questions, lofit_steps=args.lofit_steps,
                                 verify=not args.no_verify)
    except ValueError as err:
        raise UsageError(str(err)) from None
    out = Path(args.out) if args.out else default_out("localize-benchmark",
                                                      args.model or "organism-planted-micro")
    formats = tuple(f.strip() for f in str(args.formats).split(",") if f.strip())
    df = localize_benchmark(args.model, out, config, progress=not (args.quiet or args.json),
                            formats=formats)
    summary = df.attrs["summary"]
    text = _markdown(df, summary) + (f"verification passed: {summary['verification_passed']}"
                                     if summary["verification_passed"] is not None else "")
    return out, summary, text

