"""The attention-head sensitivity heatmap (ALMPU Fig. 4): ``||A[l, h]||_2`` per head.

Absolute scores, with the colour bar running from 0 to the largest score, so a map whose
heads all sit at the same small value reads as flat (a min-max or score/max scale would
stretch noise-level differences over the whole palette). Layers on the y axis (layer 0
at the top, like a matrix) and heads on the x axis, in the colour-blind-safe,
perceptually uniform sequential scale *viridis* (dark = low, yellow = high). Selected
heads (the top-K) are marked with a white star outlined in black, visible on both ends
of the scale. Hovering a cell shows the score, its share of the maximum and the rank.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp_unlearn.core.heads import normalize_heads
from interp_unlearn.plotting.style import (AXIS_TITLE_SIZE, FONT_FAMILY, FONT_SIZE, LEGEND_SIZE,
                                           TICK_SIZE, TITLE_SIZE)

__all__ = ["COLORSCALE", "sensitivity_heatmap", "score_grid"]

#: Sequential, colour-blind safe (viridis; also legible in greyscale).
COLORSCALE = "Viridis"


def score_grid(scores_df: pd.DataFrame) -> np.ndarray:
    """``[n_layers, n_heads]`` array of ``scores_df['score']`` (a full layer x head grid)."""
    missing = {"layer", "head", "score"} - set(scores_df.columns)
    if missing:
        raise ValueError(f"scores_df needs the columns layer, head, score; missing {sorted(missing)}")
    if scores_df.empty:
        raise ValueError("scores_df is empty")
    n_layers = int(scores_df["layer"].max()) + 1
    n_heads = int(scores_df["head"].max()) + 1
    grid = np.full((n_layers, n_heads), np.nan)
    grid[scores_df["layer"].astype(int).to_numpy(), scores_df["head"].astype(int).to_numpy()] = \
        scores_df["score"].astype(float).to_numpy()
    if np.isnan(grid).any() or len(scores_df) != n_layers * n_heads:
        raise ValueError(f"scores_df must hold one row per head of a full {n_layers} x {n_heads} grid")
    return grid


def sensitivity_heatmap(scores_df: pd.DataFrame,
                        selected: Iterable[Sequence[int]] | None = None,
                        title: str = "Attention-head sensitivity ‖A[l,h]‖₂",
                        value_label: str = "‖A[l,h]‖₂",
                        zrange: tuple[float, float] | None = None) -> go.Figure:
    """Heatmap of the absolute head scores (colour bar from 0), selected heads starred.

    Args:
        scores_df: Tidy scores, one row per head: ``layer, head, score`` (``rank``
            optional; computed when absent).
        selected: ``(layer, head)`` pairs to mark (e.g. the top-K); ``None``: no marks.
        title: Figure title.
        value_label: What the score is (colour bar title and hover text).
        zrange: A fixed colour range (e.g. ``(0, 1)`` for a ratio); ``None``: from the data.

    Returns:
        A ``plotly.graph_objects.Figure``: trace 0 is the ``Heatmap`` with ``z`` of shape
        ``[n_layers, n_heads]`` (the scores themselves), ``zmin = 0`` (or the lowest
        score when some are negative, e.g. contrast attribution scores) and ``zmax`` the
        largest score (``zmin + 1`` when all equal ``zmin``); trace 1, when ``selected``
        is given, the ``Scatter`` of star markers.
    """
    grid = score_grid(scores_df)
    n_layers, n_heads = grid.shape
    peak, low = float(grid.max()), min(0.0, float(grid.min()))
    share = grid / peak if peak > 0 else np.zeros_like(grid)
    if "rank" in scores_df.columns:
        ranks = np.zeros((n_layers, n_heads), dtype=int)
        ranks[scores_df["layer"].astype(int).to_numpy(), scores_df["head"].astype(int).to_numpy()] = \
            scores_df["rank"].astype(int).to_numpy()
    else:
        order = np.lexsort((np.arange(grid.size), -grid.ravel()))
        ranks = np.empty(grid.size, dtype=int)
        ranks[order] = np.arange(1, grid.size + 1)
        ranks = ranks.reshape(grid.shape)
    heads = list(range(n_heads))
    layers = list(range(n_layers))
    fig = go.Figure()
    fig.add_trace(go.Heatmap(
        z=grid, x=heads, y=layers,
        zmin=zrange[0] if zrange else low,
        zmax=zrange[1] if zrange else (peak if peak > low else low + 1.0),
        colorscale=COLORSCALE, customdata=np.dstack([share, ranks]),
        hovertemplate=("layer %{y}, head %{x}<br>" + value_label + " = %{z:.4g}"
                       "<br>score / max = %{customdata[0]:.3f}<br>rank %{customdata[1]}"
                       "<extra></extra>"),
        colorbar=dict(title=dict(text=value_label, side="right",
                                 font=dict(size=AXIS_TITLE_SIZE)),
                      exponentformat="e", thickness=14, len=1.0, lenmode="fraction",
                      x=1.0, xpad=8, tickfont=dict(size=TICK_SIZE), outlinewidth=0),
        xgap=1, ygap=1, name="sensitivity",
    ))
    if selected is not None:
        sel = normalize_heads(selected, allow_empty=True)
        bad = [(l, h) for l, h in sel if l >= n_layers or h >= n_heads]
        if bad:
            raise ValueError(f"selected head {bad[0]} is outside the {n_layers} x {n_heads} grid")
        cell = _cell_px(n_layers, n_heads)
        fig.add_trace(go.Scatter(
            x=[h for _, h in sel], y=[l for l, _ in sel], mode="markers",
            marker=dict(symbol="star", size=max(8, min(18, int(cell * 0.55))), color="white",
                        line=dict(color="black", width=1.5)),
            name=f"selected (K = {len(sel)})",
            hovertemplate="selected: layer %{y}, head %{x}<extra></extra>",
        ))
    cell = _cell_px(n_layers, n_heads)
    tick = 1 if max(n_layers, n_heads) <= 32 else 4
    # the shared look (:mod:`.style`): fonts, white template, title above a one-row legend;
    # the plot area is sized to the cells so that the colour bar spans exactly the grid
    plot_w, plot_h = cell * n_heads, cell * n_layers
    margin = dict(l=66, r=110, t=84 if selected is not None else 60, b=58)
    spare = max(0, 420 - (plot_w + margin["l"] + margin["r"]))  # a minimum width, centred
    margin["l"], margin["r"] = margin["l"] + spare // 2, margin["r"] + spare - spare // 2
    fig.update_layout(
        title=dict(text=title, x=0.5, xanchor="center", y=0.985, yanchor="top",
                   yref="container", font=dict(size=TITLE_SIZE)),
        font=dict(family=FONT_FAMILY, size=FONT_SIZE, color="#222222"),
        width=plot_w + margin["l"] + margin["r"],
        height=plot_h + margin["t"] + margin["b"],
        template="plotly_white",
        showlegend=selected is not None,
        legend=dict(orientation="h", yanchor="bottom", y=1.01, xanchor="left", x=0.0,
                    font=dict(size=LEGEND_SIZE), bgcolor="rgba(255,255,255,0)"),
        margin=margin,
        plot_bgcolor="white",
    )
    axis = dict(showgrid=False, zeroline=False, ticks="outside", tickfont=dict(size=TICK_SIZE))
    fig.update_xaxes(title=dict(text="head", font=dict(size=AXIS_TITLE_SIZE)), dtick=tick,
                     range=[-0.5, n_heads - 0.5], **axis)
    fig.update_yaxes(title=dict(text="layer", font=dict(size=AXIS_TITLE_SIZE)), dtick=tick,
                     range=[n_layers - 0.5, -0.5], **axis)
    return fig


def _cell_px(n_layers: int, n_heads: int) -> int:
    """Pixels per cell: big for tiny models, ~18 px for 32 x 32."""
    return int(max(12, min(60, 640 / max(n_layers, n_heads))))
