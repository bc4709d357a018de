"""The worst-case attacker's search: validation forget accuracy per trial, best so far."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go

from interp_unlearn.plotting.style import GREY, OKABE_ITO, apply_paper_layout

__all__ = ["best_so_far"]

_FAMILY_COLORS = {"lora": OKABE_ITO["blue"], "full": OKABE_ITO["vermillion"],
                  "head-delta": OKABE_ITO["bluish_green"]}


def best_so_far(trials: pd.DataFrame, *, references: Mapping[str, float] | None = None,
                title: str = "Worst-case attacker: best so far") -> go.Figure:
    """Each completed trial's validation forget accuracy (filled: meets the retain
    constraint; open: violates it), coloured by attack family, and the best feasible
    value so far as a step line against the trial number.

    Args:
        trials: ``trial, state, family, val_forget, feasible, best_so_far`` (the study's
            ``trials.csv``).
        references: horizontal lines, ``{label: validation forget accuracy}`` (e.g. the
            unattacked model and the original).

    Returns:
        A figure: one marker trace per (family, feasible) (open markers: the retain bound
        is violated; one legend key for them), then the step line, then the reference
        lines; the study's first, fixed-recipe trial is annotated.
    """
    missing = {"trial", "state", "family", "val_forget", "feasible", "best_so_far"} - set(
        trials.columns)
    if missing:
        raise ValueError(f"best_so_far: missing column(s) {sorted(missing)}")
    done = trials[trials["state"] == "COMPLETE"].sort_values("trial")
    fig = go.Figure()
    for fam in [f for f in _FAMILY_COLORS if f in set(done["family"])]:
        for feasible in (True, False):
            g = done[(done["family"] == fam) & (done["feasible"] == feasible)]
            if g.empty:
                continue
            fig.add_trace(go.Scatter(
                x=g["trial"], y=g["val_forget"], mode="markers", name=fam,
                legendgroup=fam, showlegend=feasible or done[(done["family"] == fam)
                                                             & done["feasible"]].empty,
                marker=dict(color=_FAMILY_COLORS[fam], size=9,
                            symbol="circle" if feasible else "circle-open",
                            line=dict(color=_FAMILY_COLORS[fam], width=1.8))))
    if (~done["feasible"].astype(bool)).any():  # one key for the open markers
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers",
                                 name="open: retain bound violated",
                                 marker=dict(color=GREY, size=9, symbol="circle-open",
                                             line=dict(color=GREY, width=1.8))))
    if "default" in done.columns and done["default"].astype(bool).any():
        d = done[done["default"].astype(bool)].iloc[0]
        fig.add_annotation(x=d["trial"], y=d["val_forget"], text="fixed recipe", ax=30, ay=-28,
                           showarrow=True, arrowhead=0, arrowwidth=1, arrowcolor=GREY,
                           font=dict(size=12, color=GREY))
    fig.add_trace(go.Scatter(x=done["trial"], y=done["best_so_far"], mode="lines",
                             name="best feasible so far", line=dict(color="black", width=2.4,
                                                                    shape="hv")))
    x0, x1 = (float(done["trial"].min()), float(done["trial"].max())) if len(done) else (0, 1)
    for i, (label, y) in enumerate((references or {}).items()):
        fig.add_trace(go.Scatter(x=[x0, x1], y=[y, y], mode="lines", name=label,
                                 line=dict(color=GREY, dash=("dot", "dash", "dashdot")[i % 3],
                                           width=1.4)))
    n_feas = int(done["feasible"].sum())
    apply_paper_layout(fig, title=title, x_title="trial", y_title="forget accuracy (validation)",
                       subtitle=f"{len(done)} trials, {n_feas} within the retain bound · "
                                "validation questions are never scored")
    fig.update_yaxes(range=[-0.02, 1.02])
    return fig
