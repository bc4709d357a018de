"""The localization benchmark's figure: precision@|H*| per method with its 95 % interval
over seeds, against the chance line (|H*| / number of heads)."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from interp_unlearn.plotting.style import GREY, OKABE_ITO, apply_paper_layout, chance_line

__all__ = ["benchmark_bars"]

_COLORS = {"lofit": OKABE_ITO["blue"], "ablation": OKABE_ITO["vermillion"],
           "gradient": OKABE_ITO["bluish_green"], "random": GREY}


def _color(method: str) -> str:
    return next((c for key, c in _COLORS.items() if method.startswith(key)), OKABE_ITO["orange"])


def benchmark_bars(table: pd.DataFrame, *, chance: float,
                   title: str = "Localization vs planted heads") -> go.Figure:
    """One bar per method (``table``: ``method, precision, precision_lo, precision_hi``,
    in row order); error bars where the interval is defined (two or more seeds)."""
    missing = {"method", "precision", "precision_lo", "precision_hi"} - set(table.columns)
    if missing:
        raise ValueError(f"benchmark_bars: missing column(s) {sorted(missing)}")
    if table.empty:
        raise ValueError("benchmark_bars: the table has no rows")
    fig = go.Figure()
    chance_line(fig, chance, (-0.5, len(table) - 0.5), text=f"chance ({chance:.3f})")
    fig.update_traces(xaxis="x2")  # the chance line spans the categorical axis below
    lo = table["precision_lo"].astype(float)
    hi = table["precision_hi"].astype(float)
    defined = [not (math.isnan(a) or math.isnan(b)) for a, b in zip(lo, hi)]
    fig.add_trace(go.Bar(
        x=table["method"], y=table["precision"], name="precision@|H*| (mean over seeds)",
        marker=dict(color=[_color(m) for m in table["method"]]),
        error_y=dict(type="data", symmetric=False, visible=any(defined),
                     array=[(h - p) if d else 0 for h, p, d in zip(hi, table["precision"], defined)],
                     arrayminus=[(p - l) if d else 0 for l, p, d in zip(lo, table["precision"], defined)],
                     color="#333333", thickness=1.4, width=5)))
    fig.update_layout(xaxis2=dict(overlaying="x", range=[-0.5, len(table) - 0.5], visible=False),
                      bargap=0.35)
    apply_paper_layout(fig, title=title, x_title="localization method",
                       y_title="precision@|H*|", subtitle="bars: mean over seeds · whiskers: 95 % t-interval")
    fig.update_yaxes(range=[0, 1.05])
    fig.update_xaxes(tickangle=-30)
    return fig
