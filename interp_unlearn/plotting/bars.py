"""Ablation bars (ALMPU Tables 3 and 4 as figures): a metric per variant, grouped by N.

Input: rows like :func:`interp_unlearn.attacks.floor.run_floor`'s plus a variant column
(default ``variant``): ``adaptive`` (ALMPU's top-K), ``random-25%`` / ``-50%`` / ``-75%``,
``all-heads`` (Table 3, heads of the RMU layer), ``early`` / ``middle`` / ``late`` /
``all-layers`` (Table 4), or any other label. Kept: rows of ``metric``; of the target
(``role == "target"``) and the ``forget`` domain when those columns exist.

x = variant (known ones in the paper's order -- adaptive first, then Table 3's, then
Table 4's -- others after them in order of appearance), one bar per N in each group
(``N = 0`` unattacked, then the attack sizes), coloured light to dark blue by N (a
single-hue sequential scale, colour-blind safe and ordered in greyscale). A bar is the
mean over seeds; its error bar the 95 % Student-t interval over seeds
(:func:`~interp_unlearn.attacks.floor.t_interval`), drawn only with two or more seeds.
The rows must hold one ``attack``, ``data``, ``pool`` and attack ``config``, and one
measurement per (variant, N, seed).

``references`` adds yardstick groups to the right of the variants, in greys (light to
dark by N): e.g. RMU under the same attack and the never-learned twin (the floor), one
group per ``method``, same metric and attack; an N a reference was not measured at is
left empty. ``labels`` renames variants on the axis (two tables' ``adaptive`` rows are
different models: say which).
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from interp_unlearn.core.stats import t_interval
from interp_unlearn.plotting.style import (METRIC_AXES, apply_paper_layout, attack_subtitle,
                                           check_frame, duplicates_error, filter_rows,
                                           method_style, single_valued, sort_methods)

__all__ = ["ABLATION_COLUMNS", "VARIANT_ORDER", "ablation_bars", "grey_colors", "n_colors"]

ABLATION_COLUMNS = ("N", "seed", "metric", "value")
#: The paper's order: ours, Table 3 (head selection), Table 4 (location).
VARIANT_ORDER = ("adaptive", "random-25%", "random-50%", "random-75%", "all-heads", "early",
                 "middle", "late", "all-layers")


def n_colors(k: int) -> list[str]:
    """``k`` blues from light to dark (plotly's ``Blues``, 0.35 .. 0.95)."""
    if k == 1:
        return sample_colorscale("Blues", [0.75])
    return sample_colorscale("Blues", [0.35 + 0.6 * i / (k - 1) for i in range(k)])


def _order(variants: list[str]) -> list[str]:
    seen = list(dict.fromkeys(variants))
    known = [v for v in VARIANT_ORDER if v in seen]
    return known + [v for v in seen if v not in VARIANT_ORDER]


def grey_colors(k: int) -> list[str]:
    """``k`` greys from light to dark, for reference bars."""
    if k == 1:
        return sample_colorscale("Greys", [0.6])
    return sample_colorscale("Greys", [0.3 + 0.5 * i / (k - 1) for i in range(k)])


def ablation_bars(df: pd.DataFrame, *, variant_col: str = "variant", metric: str = "ue",
                  title: str | None = None, references: pd.DataFrame | None = None,
                  labels: dict[str, str] | None = None) -> go.Figure:
    """Grouped bars of ``metric`` per variant and N with 95 % CIs over seeds.

    Args:
        df: ``run_floor``-like rows with a variant column (see the module docstring).
        variant_col: the column naming the variant.
        metric: ``ue`` (percent), ``accuracy`` or ``recovery``.
        title: figure title (default: ``"Ablation: <metric> per variant"``).
        references: rows with a ``method`` column (``N, seed, metric, value``; ``role``,
            ``domain`` optional and filtered like ``df``), drawn as one grey group per
            method after the variants (x label: the method's legend label).
        labels: ``{variant: axis label}`` for some variants.

    Returns:
        A figure with one ``go.Bar`` per N (ascending; ``name`` ``"N = n"``,
        ``meta["N"]``), x = the variants (then the references), the variants' bars in
        blues and the references' in greys (``meta["references"]`` lists their x labels);
        ``error_y`` set only when some bar has two or more seeds.

    Raises:
        ValueError: a missing column, an unknown metric, nothing left after the filter, a
            variant that is missing (NaN), several attacks / data / pools / configs, or
            two rows for one (variant, N, seed).
    """
    who = "ablation_bars"
    check_frame(df, (variant_col, *ABLATION_COLUMNS), who)
    if metric not in METRIC_AXES:
        raise ValueError(f"{who}: metric must be one of {sorted(METRIC_AXES)}, got {metric!r}")
    conditions = {"metric": metric}
    if "role" in df.columns:
        conditions["role"] = "target"
    if "domain" in df.columns:
        conditions["domain"] = "forget"
    sub = filter_rows(df, who, **conditions)
    if sub[variant_col].isna().any():
        raise ValueError(f"{who}: {int(sub[variant_col].isna().sum())} {metric} row(s) have no "
                         f"{variant_col!r} (NaN); label every row's variant")
    single_valued(sub, ("attack", "data", "pool", "config"), who)
    sub = sub.assign(N=sub["N"].astype(int), seed=sub["seed"].astype(int),
                     value=sub["value"].astype(float),
                     **{variant_col: sub[variant_col].astype(str)})
    duplicates_error(sub, [variant_col, "N", "seed"], who)

    variants = _order(sub[variant_col].tolist())
    ns = sorted(sub["N"].unique().tolist())
    colors = n_colors(len(ns))
    greys = grey_colors(len(ns))
    ref_names: list[str] = []
    if references is not None:
        check_frame(references, ("method", *ABLATION_COLUMNS), f"{who} (references)")
        keep = {"metric": metric, **({"domain": "forget"} if "domain" in references.columns
                                     else {})}
        refs = filter_rows(references, f"{who} (references)", **keep)
        refs = refs.assign(N=refs["N"].astype(int), seed=refs["seed"].astype(int),
                           value=refs["value"].astype(float),
                           **{variant_col: [method_style(m).label for m in refs["method"]]})
        duplicates_error(refs, [variant_col, "N", "seed"], f"{who} (references)")
        ref_names = list(dict.fromkeys(method_style(m).label
                                       for m in sort_methods(refs["method"].tolist())))
        sub = pd.concat([sub, refs], ignore_index=True)
        single_valued(sub, ("attack", "data", "pool", "config"), f"{who} (references)")
    labels = labels or {}
    x_labels = [labels.get(v, v) for v in variants] + ref_names
    fig = go.Figure()
    max_seeds = 1
    unit = " %" if metric == "ue" else ""
    for n, color, grey in zip(ns, colors, greys):
        g = sub[sub["N"] == n]
        stats = []
        for v in variants + ref_names:
            vals = g.loc[g[variant_col] == v, "value"].tolist()
            mean, lo, hi = t_interval(vals) if vals else (math.nan, math.nan, math.nan)
            stats.append((v, mean, lo, hi, len(vals)))
        t = pd.DataFrame(stats, columns=["variant", "mean", "lo", "hi", "n_seeds"])
        max_seeds = max(max_seeds, int(t["n_seeds"].max()))
        has_ci = bool((t["n_seeds"] > 1).any())
        error_y = (dict(type="data", symmetric=False, array=(t["hi"] - t["mean"]).tolist(),
                        arrayminus=(t["mean"] - t["lo"]).tolist(), color="#333333",
                        thickness=1.3, width=3) if has_ci else None)
        fig.add_trace(go.Bar(
            x=x_labels, y=t["mean"].tolist(), name=f"N = {n}",
            marker=dict(color=[color] * len(variants) + [grey] * len(ref_names),
                        line=dict(width=0)),
            error_y=error_y, customdata=t[["lo", "hi", "n_seeds"]].to_numpy(),
            hovertemplate=(f"%{{x}}, N = {n}: %{{y:.3g}}{unit} [%{{customdata[0]:.3g}}, "
                           "%{customdata[1]:.3g}] (%{customdata[2]} seeds)<extra></extra>"),
            meta={"kind": "bar", "N": int(n), "references": ref_names}))

    subtitle = attack_subtitle(sub, max_seeds)
    label = "UE" if metric == "ue" else metric
    apply_paper_layout(fig, title=title or f"Ablation: {label} per variant", subtitle=subtitle,
                       x_title="variant", y_title=METRIC_AXES[metric][0])
    fig.update_layout(barmode="group", bargap=0.22, bargroupgap=0.04, hovermode="closest")
    fig.update_xaxes(tickangle=-35 if len(x_labels) > 4 else 0, showgrid=False)
    if ref_names:  # a thin rule between the variants and the references
        fig.add_vline(x=len(variants) - 0.5, line=dict(color="#999999", width=1, dash="dot"))
    if metric == "accuracy":
        fig.update_yaxes(range=[0, 1.02])
    return fig
