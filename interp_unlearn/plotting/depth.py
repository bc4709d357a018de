"""The unlearning-depth curve: the stage-1 and stage-2 drops per layer (UDS, issue 14)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from interp_unlearn.plotting.style import (GREY, OKABE_ITO, apply_paper_layout, method_style,
                                           sort_methods)

__all__ = ["depth_by_method", "depth_curve"]


def depth_curve(layers: pd.DataFrame, *, tau: float, uds: float | None,
                title: str = "Unlearning depth per layer") -> go.Figure:
    """Mean ``Δ1`` (the never-learned reference patched in) and ``Δ2`` (the unlearned model
    patched in) per layer, with the knowledge threshold ``τ``; the subtitle gives UDS.

    Args:
        layers: ``layer, delta_s1, delta_s2`` (one row per layer; ``depth_scores``'s
            ``layers`` table).
        tau: the threshold drawn as a dotted line.
        uds: the score for the subtitle (None: no question had a knowledge layer).

    Returns:
        A figure: trace 0 ``Δ1``, trace 1 ``Δ2``, trace 2 the ``τ`` line.
    """
    missing = {"layer", "delta_s1", "delta_s2"} - set(layers.columns)
    if missing:
        raise ValueError(f"depth_curve: missing column(s) {sorted(missing)}")
    x = layers["layer"].astype(int).tolist()
    fig = go.Figure()
    for col, name, color, dash in (
            ("delta_s1", "Δ1: never-learned patched in (the knowledge)", OKABE_ITO["blue"],
             "solid"),
            ("delta_s2", "Δ2: unlearned patched in (what unlearning removed)",
             OKABE_ITO["vermillion"], "dash")):
        fig.add_trace(go.Scatter(x=x, y=layers[col], mode="lines+markers", name=name,
                                 line=dict(color=color, dash=dash, width=2.2)))
    fig.add_trace(go.Scatter(x=[x[0], x[-1]], y=[tau, tau], mode="lines", name=f"τ = {tau:g}",
                             line=dict(color=GREY, dash="dot", width=1.4)))
    sub = ("UDS = " + (f"{uds:.3f}" if uds is not None else "n/a (no knowledge layer)")
           + " · mean answer log-prob drop of the full model, layer output patched")
    apply_paper_layout(fig, title=title, x_title="layer", y_title="Δ log p(answer) (nats)",
                       subtitle=sub)
    fig.update_xaxes(dtick=1 if len(x) <= 32 else 4)
    return fig


def depth_by_method(df: pd.DataFrame, *, uds: dict[str, float] | None = None,
                    title: str = "Unlearning depth per layer, by method") -> go.Figure:
    """The erasure ratio ``clip(Δ2/Δ1, 0, 1)`` per layer, one line per method (mean over
    seeds), 0 = the layer still carries the knowledge, 1 = as empty as the twin's.

    Args:
        df: ``method, layer, erasure`` (``seed`` optional).
        uds: ``{method: UDS}`` shown in the legend.

    Returns:
        A figure with one trace per method, in the shared method order and styles.
    """
    missing = {"method", "layer", "erasure"} - set(df.columns)
    if missing:
        raise ValueError(f"depth_by_method: missing column(s) {sorted(missing)}")
    fig = go.Figure()
    mean = df.groupby(["method", "layer"], as_index=False)["erasure"].mean()
    for m in sort_methods(mean["method"].tolist()):
        g = mean[mean["method"] == m].sort_values("layer")
        st = method_style(m)
        name = st.label + (f" (UDS {uds[m]:.2f})" if uds and m in uds else "")
        fig.add_trace(go.Scatter(x=g["layer"].astype(int), y=g["erasure"], name=name,
                                 mode="lines+markers",
                                 line=dict(color=st.color, dash=st.dash, width=2.2),
                                 marker=dict(symbol=st.symbol, size=7)))
    n_seeds = int(df["seed"].nunique()) if "seed" in df.columns else 1
    apply_paper_layout(fig, title=title, x_title="layer", y_title="erasure Δ2/Δ1",
                       subtitle=f"mean over {n_seeds} seed(s) · 0 = knowledge intact, "
                                "1 = as absent as in the never-learned twin")
    fig.update_yaxes(range=[-0.03, 1.03])
    fig.update_xaxes(dtick=1)
    return fig
