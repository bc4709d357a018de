"""Robustness curves (ALMPU Fig. 3; Table 2 as a figure): a metric vs attack size N.

Input: the tidy rows of :func:`interp_unlearn.attacks.floor.run_floor` (columns ``method,
role, attack, data, pool, N, seed, domain, metric, value``), for one or several target
methods (``pd.concat`` of several ``run_floor`` results is fine). The figure keeps the
rows of one attack-data kind (``data``), one ``metric`` and the ``forget`` domain, and draws

* for every target method (``role == "target"``): the mean over seeds at each N, with a
  95 % Student-t band over seeds (:func:`~interp_unlearn.attacks.floor.summarize`) when
  a point has two or more seeds;
* the never-learned twin (``role == "twin"``) dashed grey: what the same attack teaches a
  model that never knew the facts -- the floor an unlearned model cannot beat;
* the original (``role == "original"``) dotted black: full knowledge under the same attack;
* a thin light-grey line at chance (UE 75 %, accuracy 0.25; 4-choice questions).

For ``metric="recovery"`` (target rows only: ``(acc - twin) / (orig - twin)``) the twin and
the original are the constant references 0 and 1.

The twin and the original are the same for every target of a grid; when ``df`` concatenates
several ``run_floor`` results, their repeated (N, seed) measurements are averaged into one.
A target method with two measurements of one (N, seed) -- two attack presets, two
checkpoints with one method label -- is an error: filter ``df`` first. ``df`` must hold one
``attack``, ``pool`` and attack ``config``; the subtitle names them (issue 5: every output
says which attack pool was used).

N values that are roughly evenly spaced (the forget-corpus sizes 0, 5, ..., 50) are drawn
on a linear axis; uneven ones (the unrelated-text sizes 10, 50, 100, 200, 500) at equal
steps, the axis title saying "equal steps".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp_unlearn.core.stats import ROLES, summarize
from interp_unlearn.plotting.panels import Series, draw_overlay, small_multiples
from interp_unlearn.plotting.style import (METRIC_AXES, apply_paper_layout, attack_subtitle,
                                           chance_line, check_frame,
                                           duplicates_error, filter_rows, method_style,
                                           single_valued, sort_methods)

__all__ = ["ROBUSTNESS_COLUMNS", "n_axis", "robustness_curves"]

ROBUSTNESS_COLUMNS = ("method", "role", "attack", "data", "pool", "N", "seed", "domain",
                      "metric", "value")
_TITLES = {"ue": "Unlearning efficacy under attack", "accuracy": "Forget accuracy under attack",
           "recovery": "Recovery under attack"}


def n_axis(ns: list[int]) -> tuple[dict[int, float], dict[str, Any], str]:
    """``({N: x position}, x-axis settings, axis-title suffix)`` for the N values."""
    ns = sorted(ns)
    gaps = np.diff(ns)
    even = len(ns) < 3 or gaps.max() <= 4 * gaps.min()
    if even:
        return ({n: float(n) for n in ns}, dict(tickmode="array", tickvals=ns,
                                                ticktext=[str(n) for n in ns]), "")
    pos = {n: float(i) for i, n in enumerate(ns)}
    return (pos, dict(tickmode="array", tickvals=list(pos.values()),
                      ticktext=[str(n) for n in ns]), " (equal steps)")


def _series(g: pd.DataFrame, pos: dict[int, float], name: str, key: str, role: str,
            method: str, unit: str) -> Series:
    st = method_style("never_learned" if role == "twin" else
                      "original" if role == "original" else method)
    return Series(
        key=key, role=role, method=method, style=st, x=[pos[int(n)] for n in g["N"]],
        mean=g["mean"].tolist(), low=g["ci95_low"].tolist(), high=g["ci95_high"].tolist(),
        customdata=np.column_stack([g["N"], g["ci95_low"], g["ci95_high"], g["n_seeds"]]),
        hover=(f"{name}: %{{y:.3g}}{unit} [%{{customdata[1]:.3g}}, %{{customdata[2]:.3g}}]"
               " (%{customdata[3]} seeds)<extra></extra>"),
        band_alpha=0.12 if role != "target" else 0.2)


def robustness_curves(df: pd.DataFrame, *, data: str = "forget", metric: str = "ue",
                      title: str | None = None, layout: str = "overlay") -> go.Figure:
    """Mean ``metric`` vs N per target method, with 95 % CI bands, the twin's floor and the
    original (see the module docstring).

    Args:
        df: ``run_floor`` rows (columns :data:`ROBUSTNESS_COLUMNS`; others ignored).
        data: the attack data to show (``forget``: Fig. 3 / Table 1; ``unrelated``: Table 2).
        metric: ``ue`` (percent), ``accuracy`` or ``recovery``.
        title: figure title (default: from the metric).
        layout: ``overlay`` (one plot) or ``panels`` (small multiples: one panel per target
            method over the RMU, twin and original references;
            :func:`~interp_unlearn.plotting.panels.small_multiples`).

    Returns:
        ``overlay``: a figure whose first trace is the chance line (``meta["kind"] ==
        "chance"``; not for ``recovery``), then the optional CI bands of every series
        (``meta["kind"] == "ci"``; only where some N has two or more seeds; drawn beneath
        every line), then the mean lines in legend order (target methods, then the twin,
        then the original; ``meta["kind"] == "mean"``, ``meta["role"]``,
        ``meta["method"]``); for ``recovery`` the two references are lines with
        ``meta["kind"] == "reference"``. ``panels``: see ``small_multiples``.

    Raises:
        ValueError: a missing column, an unknown metric or role, nothing left after the
            filter, several attacks / pools / configs, or a repeated target measurement.
    """
    who = "robustness_curves"
    check_frame(df, ROBUSTNESS_COLUMNS, who)
    if layout not in ("overlay", "panels"):
        raise ValueError(f"{who}: layout must be 'overlay' or 'panels', got {layout!r}")
    if metric not in METRIC_AXES:
        raise ValueError(f"{who}: metric must be one of {sorted(METRIC_AXES)}, got {metric!r}")
    sub = filter_rows(df, who, data=data, metric=metric, domain="forget")
    bad = sorted(set(map(str, sub["role"].unique())) - set(ROLES))
    if bad:
        raise ValueError(f"{who}: unknown role(s) {bad} in column 'role'; valid: {list(ROLES)}")
    single_valued(sub, ("attack", "pool", "config"), who)
    sub = sub.assign(N=sub["N"].astype(int), seed=sub["seed"].astype(int),
                     value=sub["value"].astype(float))
    target = sub[sub["role"] == "target"]
    duplicates_error(target, ["method", "N", "seed"], who)
    refs = (sub[sub["role"] != "target"].groupby(["role", "N", "seed"], as_index=False)["value"]
            .mean())
    refs["method"] = refs["role"].map({"twin": "never-learned", "original": "original"})
    cols = ["method", "role", "N", "seed", "value"]
    summary = summarize(pd.concat([target[cols], refs[cols]], ignore_index=True))

    axis_title, chance, chance_text = METRIC_AXES[metric]
    unit = " %" if metric == "ue" else ""
    pos, xaxis, suffix = n_axis(sorted(summary["N"].unique().tolist()))
    series = [("target", m) for m in sort_methods(target["method"].tolist())]
    series += [(r, None) for r in ("twin", "original") if (refs["role"] == r).any()]
    drawn: list[Series] = []
    for role, method in series:
        g = summary[summary["role"] == role]
        if method is not None:
            g = g[g["method"] == method]
        g = g.sort_values("N")
        key = f"{role}:{method}" if method is not None else role
        name = (method_style(method).label if role == "target" else
                method_style("never_learned" if role == "twin" else "original").label)
        drawn.append(_series(g, pos, name, key, role, method or role, unit))
    subtitle = attack_subtitle(sub, int(summary["n_seeds"].max()))
    if layout == "panels":
        yaxis = dict(range=[0, 1.02]) if metric == "accuracy" else {}
        if metric == "recovery":  # the twin and the original are the constants 0 and 1
            xs = sorted(pos.values())
            for y, role, ref in ((0.0, "twin", "never_learned"), (1.0, "original", "original")):
                drawn.append(Series(key=role, role=role, method=role, style=method_style(ref),
                                    x=xs, mean=[y] * len(xs), low=[np.nan] * len(xs),
                                    high=[np.nan] * len(xs)))
        return small_multiples(
            drawn, title=title or _TITLES[metric], subtitle=subtitle,
            x_title=f"attack samples N{suffix}", y_title=axis_title, xaxis=xaxis, yaxis=yaxis,
            chance=None if metric == "recovery" or chance is None else (chance, chance_text))
    fig = go.Figure()
    if metric != "recovery" and chance is not None:
        chance_line(fig, chance, (min(pos.values()), max(pos.values())), chance_text)
    draw_overlay(fig, drawn)
    if metric == "recovery":
        xs = [min(pos.values()), max(pos.values())]
        for y, ref in ((0.0, "never_learned"), (1.0, "original")):
            st = method_style(ref)
            fig.add_trace(go.Scatter(x=xs, y=[y, y], mode="lines", name=f"{st.label} ({y:g})",
                                     line=dict(color=st.color, dash=st.dash, width=1.8),
                                     hoverinfo="skip", meta={"kind": "reference", "role": ref}))

    apply_paper_layout(fig, title=title or _TITLES[metric], subtitle=subtitle,
                       x_title=f"attack samples N{suffix}", y_title=axis_title)
    fig.update_xaxes(**xaxis)
    if metric == "accuracy":
        fig.update_yaxes(range=[0, 1.02])
    return fig
