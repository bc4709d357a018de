"""Run the worst-case study (:mod:`.worst_case`): search, choose, score on eval and twin.

Outputs in ``out``: ``study.db`` (Optuna, resumable), ``worst_case_config.json``,
``trials.csv`` (every trial and the best feasible validation score so far), ``chosen.csv``
(each chosen configuration x eval seed x model: target / twin, forget and
retain accuracy on the scored questions), ``summary.json`` (the worst case, the mean of the
top 3, the references and the inert check).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from interp_unlearn.attacks.common import ModelSpec
from interp_unlearn.attacks.worst_case import (STUDY_NAME, StudyMismatchError, WorstCaseConfig,
                                               default_params, describe_mismatch, fingerprint,
                                               inert_reason, load_related, run_config,
                                               save_json, suggest, timed, trials_frame,
                                               validation_sets)

__all__ = ["WorstCaseResult", "worst_case_attack"]


@dataclass
class WorstCaseResult:
    """``trials`` (one row per trial), ``chosen`` (the chosen configurations scored on
    the evaluated questions, target and twin), ``summary`` (JSON-able), ``out``."""

    trials: pd.DataFrame
    chosen: pd.DataFrame
    summary: dict[str, Any]
    out: Path


def _open_study(out: Path, fp: dict[str, Any], seed: int, n_startup: int) -> Any:
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = out / "study.db"
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if STUDY_NAME in names:
        stored = optuna.load_study(study_name=STUDY_NAME, storage=storage)
        old = stored.user_attrs.get("fingerprint", {})
        if old != fp:
            raise StudyMismatchError(f"{db} was made for another model or search; refusing to "
                                     f"resume ({describe_mismatch(old, fp)}); use another --out")
        for t in stored.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)  # cut by a kill
    n_done = 0 if STUDY_NAME not in names else len(stored.trials)
    # constraints: Trial.set_constraint (TPE reads them; feasible when <= 0)
    sampler = optuna.samplers.TPESampler(seed=seed + n_done, n_startup_trials=n_startup)
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, sampler=sampler,
                                direction="maximize", load_if_exists=True)
    if STUDY_NAME not in names:
        study.set_user_attr("fingerprint", fp)
    return study


def _accuracies(res: Any) -> dict[str, float]:
    return {d: float(ev.accuracy) for d, ev in res.evals.items()}


def worst_case_attack(model: ModelSpec, config: WorstCaseConfig | None = None, *,
                      out: str | Path, twin: ModelSpec | None = None,
                      original: ModelSpec | None = None, progress: bool = True
                      ) -> WorstCaseResult:
    """Search the attack space for the strongest attack on ``model`` under the retain
    constraint, then score the top configurations on the evaluated questions and on the
    twin (see :mod:`.worst_case`). ``out`` holds ``study.db``: a rerun resumes."""
    from optuna.trial import TrialState

    cfg = config or WorstCaseConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lm, twin_lm, orig_lm = load_related(model, twin, original)
    from interp_unlearn.attacks.head_restore import resolve_heads

    heads = None
    if "head-delta" in cfg.families:
        try:
            heads = resolve_heads(cfg.heads, lm)
        except ValueError as e:
            if cfg.heads is not None:
                raise
            cfg.families = tuple(f for f in cfg.families if f != "head-delta")
            cfg.notes.append(f"head-delta dropped: {e}")
            if not cfg.families:
                raise
    cfg.heads = heads
    data = validation_sets(lm, cfg.split_seed)
    fp = fingerprint(lm, cfg, data["how"])
    study = _open_study(out, fp, cfg.seed, cfg.n_startup_trials)
    save_json(out / "worst_case_config.json", {**cfg.to_dict(), "validation": data["how"],
                                               "model": fp["model"]})
    n_val = len(data["val"]["forget"])
    n_max = len(data["texts"])

    # references on the validation questions (cheap: no training)
    refs = study.user_attrs.get("references")
    if refs is None:
        from interp_unlearn.evaluation.domains import evaluate_domains

        scoring = cfg.scoring or lm.default_scoring
        refs = {role: {d: float(ev.accuracy) for d, ev in evaluate_domains(
                    m.model, m.tokenizer, data["val"], scoring, cfg.batch_size).items()}
                for role, m in (("target", lm), ("original", orig_lm)) if m is not None}
        study.set_user_attr("references", refs)
    base = refs.get("original", refs["target"])
    bound = base["retain"] - cfg.retain_margin
    if "original" not in refs:
        cfg.notes.append("no original model known: the retain bound is the target's own "
                         "retain accuracy minus the margin")

    def objective(trial: Any) -> float:
        p = suggest(trial, cfg.families, n_max)
        res, secs = timed(run_config, lm, p, data["texts"], data["val"], cfg.seed, heads=heads,
                          scoring=cfg.scoring, batch_size=cfg.batch_size)
        acc = _accuracies(res)
        feasible = acc["retain"] >= bound - 1e-12
        trial.set_user_attr("params", p)
        trial.set_user_attr("val_forget", acc["forget"])
        trial.set_user_attr("val_retain", acc["retain"])
        trial.set_user_attr("constraint", bound - acc["retain"])
        trial.set_constraint("retain", bound - acc["retain"])
        trial.set_user_attr("feasible", bool(feasible))
        trial.set_user_attr("seconds", secs)
        if trial.user_attrs.get("default") is None:
            trial.set_user_attr("default", False)
        return acc["forget"]

    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if not study.trials:
        study.enqueue_trial(default_params(lm, n_max), user_attrs={"default": True})
    remaining = max(0, cfg.trials - done)
    if remaining:
        bar = tqdm(total=cfg.trials, initial=done, desc="worst-case trials",
                   disable=not progress)

        def tick(st: Any, t: Any) -> None:
            bar.update(1)
            best = [x.value for x in st.trials if x.state == TrialState.COMPLETE
                    and x.user_attrs.get("feasible")]
            if best:
                bar.set_postfix(best=f"{max(best):.3f}")

        study.optimize(objective, n_trials=remaining, callbacks=[tick])
        bar.close()
    trials = trials_frame(study)
    trials.to_csv(out / "trials.csv", index=False)

    chosen = _score_chosen(study, cfg, lm, twin_lm, orig_lm, data, heads, out, progress)
    summary = _summary(trials, chosen, refs, bound, cfg, n_val, data["how"])
    save_json(out / "summary.json", summary)
    if summary.get("inert"):
        warnings.warn(f"worst-case study looks inert: {summary['inert']}", RuntimeWarning,
                      stacklevel=2)
    return WorstCaseResult(trials, chosen, summary, out)


def _score_chosen(study: Any, cfg: WorstCaseConfig, lm: Any, twin_lm: Any, orig_lm: Any,
                  data: dict[str, Any], heads: Any, out: Path, progress: bool) -> pd.DataFrame:
    """Re-run the top-k feasible trials on every eval seed, on the target and the twin,
    scored on the evaluated questions; cached per row in ``chosen.jsonl`` (resumable)."""
    feas = [t for t in study.trials if t.state.name == "COMPLETE" and t.user_attrs.get("feasible")]
    top = sorted(feas, key=lambda t: (-float(t.value), t.number))[: cfg.top_k]
    cache_path = out / "chosen.jsonl"
    cache: dict[str, dict[str, Any]] = {}
    if cache_path.exists():
        for line in cache_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill: recomputed
                continue
            cache[row["key"]] = row
    models = [("target", lm), ("twin", twin_lm)]  # the original: only for the retain bound
    jobs = [(rank, t, seed, role, m) for rank, t in enumerate(top, 1) for seed in cfg.eval_seeds
            for role, m in models if m is not None]
    rows = []
    with cache_path.open("a") as fh:
        for rank, t, seed, role, m in tqdm(jobs, desc="scoring chosen", disable=not progress):
            p = t.user_attrs["params"]
            key = json.dumps([t.number, seed, role, p], sort_keys=True)
            if key not in cache:
                res = run_config(m, p, data["texts"], data["eval"], seed, heads=heads,
                                 scoring=cfg.scoring, batch_size=cfg.batch_size)
                acc = _accuracies(res)
                cache[key] = {"key": key, "forget": acc["forget"], "retain": acc.get("retain")}
                fh.write(json.dumps(cache[key]) + "\n")
                fh.flush()
            c = cache[key]
            rows.append({"choice": rank, "trial": t.number, **p, "seed": seed, "model": role,
                         "val_forget": t.user_attrs["val_forget"],
                         "val_retain": t.user_attrs["val_retain"],
                         "eval_forget": c["forget"], "eval_retain": c["retain"]})
    df = pd.DataFrame(rows)
    df.to_csv(out / "chosen.csv", index=False)
    return df


def _summary(trials: pd.DataFrame, chosen: pd.DataFrame, refs: dict[str, Any], bound: float,
             cfg: WorstCaseConfig, n_val: int, how: str) -> dict[str, Any]:
    done = trials[trials["state"] == "COMPLETE"]
    feas = done[done["feasible"]]
    best_val = float(feas["val_forget"].max()) if len(feas) else math.nan
    default = done[done["default"]]
    s: dict[str, Any] = {
        "trials_complete": int(len(done)), "trials_feasible": int(len(feas)),
        "validation": how, "n_validation_questions": n_val, "retain_bound": bound,
        "references_validation": refs, "best_validation_forget": best_val,
        "default_validation_forget": (float(default["val_forget"].iloc[0])
                                      if len(default) else None),
        "default_feasible": bool(default["feasible"].iloc[0]) if len(default) else None,
        "notes": list(cfg.notes)}
    s["gain_over_default"] = (best_val - s["default_validation_forget"]
                              if s["default_validation_forget"] is not None else None)
    s["inert"] = inert_reason(best_val, refs["target"]["forget"], n_val)
    if len(chosen):
        by = chosen.groupby(["choice", "model"])[["eval_forget", "eval_retain"]].mean()
        target = by.xs("target", level="model")
        s["worst_case_forget"] = float(target.loc[1, "eval_forget"])
        s["worst_case_retain"] = float(target.loc[1, "eval_retain"])
        s["top3_mean_forget"] = float(target["eval_forget"].head(3).mean())
        if "twin" in by.index.get_level_values("model"):
            r = by.xs("twin", level="model")
            s["twin_worst_case_forget"] = float(r.loc[1, "eval_forget"])
            s["twin_top3_mean_forget"] = float(r["eval_forget"].head(3).mean())
        if "twin_worst_case_forget" in s:
            s["worst_case_above_floor"] = s["worst_case_forget"] - s["twin_worst_case_forget"]
        s["eval_seeds"] = list(cfg.eval_seeds)
    s = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in s.items()}
    return s
