"""Every figure of a reproduce run, drawn from its saved results (nothing is recomputed).

``draw_figures(run_dir)`` reads :func:`~.store.load_results` and writes into
``RUN/figures``:

``fig4_head_sensitivity``     the localization heatmap, top-K starred (ALMPU Fig. 4);
``fig3_robustness_forget``    UE vs N per method on forget data, twin floor and original
                              (Fig. 3 / Table 1);
``fig3_recovery_forget``      the same attacks as recovery (0 = twin, 1 = original);
``fig3_recovery_restored_forget`` recovery on the restored questions only (entities with
                              no document in the attack sample; see
                              :mod:`interp_unlearn.attacks.taught`);
``table2_robustness_unrelated`` UE vs N on unrelated data (Table 2 as a figure);
``fig5_logit_lens_forget`` / ``fig5_logit_lens_retain``  lens accuracy per block (Fig. 5);
``table3_head_selection`` / ``table4_location``  ALMPU ablation bars;
``fig_depth_layers``  the unlearning depth's erasure per layer, one line per method (UDS).

Each as HTML (plotly.js inlined) and the static formats asked for (default PNG, SVG,
PDF). The static images of *all* figures are rendered in one kaleido call, i.e. one
browser start, in a worker process (:mod:`._render`) with a wall-clock limit: headless
Chromium has been seen to hang on a busy machine, and a stuck worker is killed rather
than stalling the run. Without Chromium, or when the worker fails, the static formats are
skipped with a warning (the HTML is always written); the returned summary says why.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from interp_unlearn.pipeline.reproduce.config import CONFIG_FILE, ReproduceConfig
from interp_unlearn.pipeline.reproduce.store import load_results

__all__ = ["FIGURES", "build_figures", "draw_figures", "save_figures"]

#: Wall-clock limit of the static export (all figures, one browser), in seconds.
STATIC_TIMEOUT = 600.0
FIGURES = ("fig4_head_sensitivity", "fig3_robustness_forget", "fig3_recovery_forget",
           "fig3_recovery_restored_forget", "table2_robustness_unrelated", "fig5_logit_lens_forget", "fig5_logit_lens_retain",
           "table3_head_selection", "table4_location", "fig_depth_layers")


def _attack_rows(df: pd.DataFrame, table: str, data: str, sizes: Sequence[int]) -> pd.DataFrame:
    """Target rows of ``table`` plus the twin / original rows at the same N."""
    tgt = df[(df["kind"] == "attack") & (df["table"] == table)]
    ref = df[(df["kind"] == "reference") & (df["data"] == data) & df["N"].isin(list(sizes))]
    out = pd.concat([tgt, ref], ignore_index=True)
    if not out.empty:
        out["N"] = out["N"].astype(int)
        out["seed"] = out["seed"].astype(int)
    return out


def _lens_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Lens rows back in :func:`~interp_unlearn.evaluation.logit_lens.logit_lens`'s shape, with
    ``method``, ``seed`` and ``domain``."""
    lens = df[df["kind"] == "lens"]
    if lens.empty:
        return lens
    wide = lens.pivot_table(index=["method", "seed", "domain", "block", "n"], columns="metric",
                            values="value", aggfunc="first").reset_index()
    wide.columns.name = None
    wide["block"] = wide["block"].astype(int)
    wide["seed"] = wide["seed"].astype(int)
    return wide


#: Tables 3 and 4's ``adaptive`` rows are different models (plan.TABLE3_MODEL/TABLE4_MODEL)
ADAPTIVE_LABELS = {"table3": {"adaptive": "adaptive top-K (RMU layer)"},
                   "table4": {"adaptive": "adaptive top-K (all layers)"}}


def _ablation_references(df: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """RMU (Table 1) and the never-learned twin under the attack of an ablation table's
    ``rows``: the same data, N values and seeds (an N Table 1 did not run stays empty)."""
    ns, seeds = set(rows["N"].astype(int)), set(rows["seed"].astype(int))
    data = set(rows["data"].dropna())
    cand = df[df["kind"].isin(["attack", "reference"]) & df["data"].isin(data)]
    cand = cand[((cand["table"] == "table1") & (cand["role"] == "target")
                 & (cand["method"] == "rmu")) | (cand["role"] == "twin")]
    cand = cand[cand["N"].astype(int).isin(ns) & cand["seed"].astype(int).isin(seeds)]
    return cand.assign(N=cand["N"].astype(int), seed=cand["seed"].astype(int))


#: more target methods than this are drawn as small multiples (one panel each)
OVERLAY_MAX = 3


def _layout(methods: pd.Series, references: int = 0) -> str:
    return "panels" if methods.nunique() - references > OVERLAY_MAX else "overlay"


def build_figures(run_dir: str | Path) -> dict[str, Any]:
    """``{name: plotly Figure}`` for every figure the run has data for."""
    from interp_unlearn.plotting import (ablation_bars, logit_lens_curves, robustness_curves,
                                         sensitivity_heatmap)

    run_dir = Path(run_dir)
    cfg = ReproduceConfig.load_json(run_dir / CONFIG_FILE)
    df = load_results(run_dir)
    figs: dict[str, Any] = {}
    if df.empty:
        return figs
    loc = df[(df["kind"] == "localize") & df["layer"].notna()] if "layer" in df.columns else df[:0]
    seed_note = ""
    if not loc.empty and "seed" in loc.columns and loc["seed"].notna().any():
        first = loc["seed"].dropna().min()  # one seed's map (each seed localizes on its own)
        loc, seed_note = loc[loc["seed"] == first], f"seed {int(first)}, "
    if not loc.empty:
        wide = loc.pivot_table(index=["layer", "head"], columns="metric", values="value",
                               aggfunc="first").reset_index()
        wide[["layer", "head"]] = wide[["layer", "head"]].astype(int)
        sel = [(int(l), int(h)) for l, h, s in zip(wide["layer"], wide["head"], wide["selected"])
               if s]
        figs["fig4_head_sensitivity"] = sensitivity_heatmap(
            wide[["layer", "head", "score", "rank"]], sel,
            title=f"{cfg.model}: head sensitivity ‖A[l,h]‖₂ ({seed_note}top-{len(sel)} starred)")
    t1 = _attack_rows(df, "table1", "forget", cfg.table1_sizes)
    if not t1.empty and (t1["kind"] == "attack").any():
        layout = _layout(t1[t1["role"] == "target"]["method"])
        figs["fig3_robustness_forget"] = robustness_curves(
            t1, data="forget", metric="ue", layout=layout,
            title=f"{cfg.model}: UE under fine-tuning on forget data")
        if (t1["metric"] == "recovery").any():
            figs["fig3_recovery_forget"] = robustness_curves(
                t1, data="forget", metric="recovery", layout=layout,
                title=f"{cfg.model}: recovery under fine-tuning on forget data")
        restored = t1[t1["metric"] == "recovery_restored"]
        if not restored.empty:  # drawn as "recovery" on the restored questions
            figs["fig3_recovery_restored_forget"] = robustness_curves(
                pd.concat([t1[t1["metric"] != "recovery"], restored.assign(metric="recovery")],
                          ignore_index=True), data="forget", metric="recovery", layout=layout,
                title=f"{cfg.model}: recovery on restored questions (entity not in the "
                      "attack sample)")
    t2 = _attack_rows(df, "table2", "unrelated", cfg.table2_sizes)
    if not t2.empty and (t2["kind"] == "attack").any():
        figs["table2_robustness_unrelated"] = robustness_curves(
            t2, data="unrelated", metric="ue",
            layout=_layout(t2[t2["role"] == "target"]["method"]),
            title=f"{cfg.model}: UE under fine-tuning on unrelated text")
    lens = _lens_frame(df)
    for domain in ("forget", "retain"):
        if not lens.empty and (lens["domain"] == domain).any():
            figs[f"fig5_logit_lens_{domain}"] = logit_lens_curves(
                lens, domain=domain, layout=_layout(lens["method"], references=2),
                title=f"{cfg.model}: logit lens on {domain} questions")
    for name, table, what in (("table3_head_selection", "table3", "attention-head selection"),
                              ("table4_location", "table4", "perturbation location")):
        rows = df[(df["kind"] == "attack") & (df["table"] == table)]
        if not rows.empty:
            rows = rows.assign(N=rows["N"].astype(int), seed=rows["seed"].astype(int))
            figs[name] = ablation_bars(rows, variant_col="variant", metric="ue",
                                       title=f"{cfg.model}: ALMPU UE by {what}",
                                       references=_ablation_references(df, rows),
                                       labels=ADAPTIVE_LABELS[table])
    dep = df[(df["kind"] == "depth")] if "kind" in df.columns else df[:0]
    if not dep.empty:
        from interp_unlearn.plotting import depth_by_method
        per_layer = dep[(dep["metric"] == "erasure") & dep["layer"].notna()]
        uds = dep[dep["metric"] == "uds"].groupby("method")["value"].mean().to_dict()
        figs["fig_depth_layers"] = depth_by_method(
            per_layer.rename(columns={"value": "erasure"}), uds=uds,
            title=f"{cfg.model}: unlearning depth per layer")
    return figs


def _render_static(jobs: list[tuple[Any, Path, str]], scale: float, timeout: float) -> str | None:
    """Render ``(figure, path, format)`` jobs in a worker process (:mod:`._render`, one
    browser start for all) limited to ``timeout`` seconds; ``None`` or why it failed."""
    with tempfile.TemporaryDirectory(prefix="iu-render-") as td:
        spec = []
        for i, (fig, path, fmt) in enumerate(jobs):
            fpath = Path(td) / f"fig{i}.json"
            fpath.write_text(fig.to_json())
            spec.append({"fig": str(fpath), "path": str(path), "format": fmt,
                         "scale": scale if fmt in ("png", "jpeg", "webp") else 1,
                         "width": fig.layout.width, "height": fig.layout.height})
        (Path(td) / "jobs.json").write_text(json.dumps(spec))
        proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_render.py")),
                                 str(Path(td) / "jobs.json")], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the worker and its browser: its own session
            proc.communicate()
            return f"kaleido did not finish within {timeout:g} s (the worker was killed)"
        if proc.returncode != 0:
            return f"kaleido failed (exit {proc.returncode}): {err.strip()[-1500:]}"
    return None


def save_figures(figs: dict[str, Any], out_dir: str | Path,
                 formats: Sequence[str] = ("html", "png", "svg", "pdf"), *,
                 scale: float = 2.0, timeout: float = STATIC_TIMEOUT) -> dict[str, Any]:
    """Write every figure as ``out_dir/NAME.FMT``: HTML here, the static formats of all
    figures in one kaleido worker process (one browser start, at most ``timeout`` s).
    Returns ``{"files": {name: {fmt: path}}, "static_skipped": reason or None}``."""
    from interp_unlearn.plotting import save_figure, static_export_problem
    from interp_unlearn.plotting.export import FORMATS, STATIC_FORMATS

    formats = [f.lower().lstrip(".") for f in formats]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown figure format {bad[0]!r}; valid: {', '.join(FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, str]] = {name: {} for name in figs}
    if "html" in formats:
        for name, fig in figs.items():
            files[name]["html"] = str(save_figure(fig, out / name, ["html"])["html"])
    static = [f for f in formats if f in STATIC_FORMATS]
    skipped = None
    if static and figs:
        skipped = static_export_problem()
        if skipped is None:
            jobs = [(fig, out / f"{name}.{f}", f) for name, fig in figs.items() for f in static]
            for _, path, _ in jobs:
                path.unlink(missing_ok=True)
            skipped = _render_static(jobs, scale, timeout)
            if skipped is None:
                missing = [str(p) for _, p, _ in jobs if not p.is_file()]
                if missing:
                    skipped = f"kaleido reported success but did not write {missing}"
            for name, fig in figs.items():
                for f in static:
                    if (out / f"{name}.{f}").is_file():
                        files[name][f] = str(out / f"{name}.{f}")
        if skipped is not None:
            warnings.warn(f"static figures ({', '.join(static)}) incomplete: {skipped}",
                          RuntimeWarning, stacklevel=2)
    return {"files": files, "static_skipped": skipped}


def draw_figures(run_dir: str | Path, out_dir: str | Path | None = None,
                 formats: Sequence[str] = ("html", "png", "svg", "pdf"), *,
                 timeout: float = STATIC_TIMEOUT) -> dict[str, Any]:
    """Build (:func:`build_figures`) and save (:func:`save_figures`) every figure of a run
    into ``out_dir`` (default ``RUN/figures``)."""
    run_dir = Path(run_dir)
    figs = build_figures(run_dir)
    return save_figures(figs, out_dir if out_dir is not None else run_dir / "figures", formats,
                        timeout=timeout)
