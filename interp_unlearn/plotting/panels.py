"""Drawing summarized series: one overlaid panel, or small multiples (one panel per method).

The curve figures (robustness, logit lens) summarize their rows into :class:`Series` (one
line with an optional confidence band) and hand them here:

* :func:`draw_overlay` -- every series in one plot; all bands first, then all lines, so
  that no band covers a line.
* :func:`small_multiples` -- one panel per target method, each with the same references
  drawn thin underneath: RMU (the method ALMPU modifies), the never-learned twin (the
  floor) and the original (full knowledge). With nine methods, one overlaid panel is a
  tangle of bands; side by side, each method reads against the same yardsticks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp_unlearn.plotting.style import (AXIS_TITLE_SIZE, FONT_FAMILY, FONT_SIZE, LEGEND_SIZE,
                                           TICK_SIZE, TITLE_SIZE, MethodStyle, band_trace)

__all__ = ["PANEL_REFERENCES", "Series", "draw_overlay", "small_multiples"]

#: The references of every small-multiple panel, bottom to top.
PANEL_REFERENCES = ("twin", "original", "rmu")


@dataclass
class Series:
    """One summarized line: x positions, mean, 95 % band (NaN: none) and how to draw it.

    ``key`` identifies the series (legend group, ``meta["series"]``); ``role`` is
    ``target``, ``twin`` or ``original``; ``method`` the method (the role for references).
    """

    key: str
    role: str
    method: str
    style: MethodStyle
    x: list[float]
    mean: list[float]
    low: list[float]
    high: list[float]
    hover: str = ""
    customdata: Any = None
    band_alpha: float = 0.2
    meta: dict[str, Any] = field(default_factory=dict)

    def band(self, alpha: float | None = None) -> go.Scatter | None:
        return band_trace(self.x, self.low, self.high, self.style.color, self.style.label,
                          self.key, alpha=self.band_alpha if alpha is None else alpha)

    def line(self, *, width: float = 2.2, marker_size: int = 7, name: str | None = None,
             showlegend: bool = True, kind: str = "mean", **meta: Any) -> go.Scatter:
        st = self.style
        return go.Scatter(
            x=list(self.x), y=list(self.mean), name=name or st.label, mode="lines+markers",
            legendgroup=self.key, showlegend=showlegend,
            line=dict(color=st.color, dash=st.dash, width=width),
            marker=dict(symbol=st.symbol, size=marker_size, color=st.color,
                        line=dict(color=st.color, width=1.5)),
            customdata=self.customdata, hovertemplate=self.hover or None,
            meta={"kind": kind, "series": self.key, "role": self.role, "method": self.method,
                  **self.meta, **meta})


def draw_overlay(fig: go.Figure, series: Sequence[Series]) -> go.Figure:
    """Every series in ``fig``: the bands first (beneath), then the lines, in order."""
    for s in series:
        band = s.band()
        if band is not None:
            fig.add_trace(band)
    marker = 7 if max((len(s.x) for s in series), default=0) <= 16 else 5
    for s in series:
        fig.add_trace(s.line(marker_size=marker))
    return fig


def _reference(series: Sequence[Series], which: str) -> Series | None:
    for s in series:
        if which == "rmu" and s.role == "target" and s.method.lower() == "rmu":
            return s
        if s.role == which:
            return s
    return None


def small_multiples(series: Sequence[Series], *, title: str, subtitle: str, x_title: str,
                    y_title: str, chance: tuple[float, str] | None = None, cols: int = 3,
                    xaxis: dict[str, Any] | None = None, yaxis: dict[str, Any] | None = None,
                    panel_width: int = 250, panel_height: int = 190) -> go.Figure:
    """One panel per target series, each over the references (:data:`PANEL_REFERENCES`
    that are present; RMU not in its own panel) drawn thin, with the twin's band.

    Traces carry ``meta["panel"]`` (the target method of their panel); a panel's target
    is ``meta["kind"] == "mean"`` (its band ``"ci"``), references are ``"reference"``. The
    references appear once in the legend; the panels' titles name the methods.
    """
    targets = [s for s in series if s.role == "target"]
    if not targets:
        raise ValueError("small_multiples: no target series to draw")
    refs = [r for r in (_reference(series, w) for w in PANEL_REFERENCES) if r is not None]
    cols = max(1, min(cols, len(targets)))
    rows = math.ceil(len(targets) / cols)
    fig = make_subplots(rows=rows, cols=cols, shared_xaxes="all", shared_yaxes="all",
                        subplot_titles=[t.style.label for t in targets],
                        horizontal_spacing=0.035, vertical_spacing=0.1 if rows > 1 else 0.0)
    xs = [x for s in series for x in s.x]
    in_legend: set[str] = set()
    for i, target in enumerate(targets):
        r, c = divmod(i, cols)
        where = dict(row=r + 1, col=c + 1)
        panel = target.method
        if chance is not None and xs:
            show = "chance" not in in_legend
            in_legend.add("chance")
            fig.add_trace(go.Scatter(x=[min(xs), max(xs)], y=[chance[0]] * 2, mode="lines",
                                     name=chance[1], line=dict(color="#A8A8A8", width=1.2),
                                     showlegend=show, legendgroup="chance", legendrank=2000,
                                     hoverinfo="skip", meta={"kind": "chance", "panel": panel}),
                          **where)
        for ref in refs:
            if ref is target:
                continue
            if ref.role == "twin":
                band = ref.band(alpha=0.15)
                if band is not None:
                    band.meta = {**band.meta, "panel": panel}
                    fig.add_trace(band, **where)
            show = ref.key not in in_legend
            in_legend.add(ref.key)
            fig.add_trace(ref.line(width=1.4, marker_size=4, showlegend=show, kind="reference",
                                   panel=panel), **where)
        band = target.band()
        if band is not None:
            band.meta = {**band.meta, "panel": panel}
            fig.add_trace(band, **where)
        fig.add_trace(target.line(width=2.4, marker_size=6, showlegend=False, panel=panel),
                      **where)
    width = 70 + cols * panel_width
    top = 96 + (17 if subtitle else 0)
    height = top + 60 + rows * panel_height
    if subtitle and len(subtitle) > 110 and " · " in subtitle:
        head, _, tail = subtitle.rpartition(" · ")
        subtitle, top, height = f"{head}<br>{tail}", top + 17, height + 17
    fig.update_layout(
        template="plotly_white", width=width, height=height,
        font=dict(family=FONT_FAMILY, size=FONT_SIZE, color="#222222"),
        title=dict(text=title, x=0.5, xanchor="center", y=0.985, yanchor="top",
                   yref="container", font=dict(size=TITLE_SIZE),
                   subtitle=dict(text=subtitle, font=dict(size=TICK_SIZE - 1, color="#444444"))),
        margin=dict(l=70, r=16, t=top, b=56), hovermode="x unified",
        legend=dict(orientation="h", yanchor="bottom", y=1.0, yref="container", x=0.5,
                    xanchor="center", font=dict(size=LEGEND_SIZE),
                    bgcolor="rgba(255,255,255,0)"),
    )
    fig.update_layout(legend=dict(y=1 - (top - 30) / height, yanchor="bottom"))
    for ann in fig.layout.annotations:  # the panel titles
        ann.font = dict(size=TICK_SIZE + 1, color="#222222")
    axis = dict(showline=True, linecolor="#444444", ticks="outside",
                tickfont=dict(size=TICK_SIZE - 1), gridcolor="#E5E5E5", zeroline=False)
    fig.update_xaxes(**axis, **(xaxis or {}))
    fig.update_yaxes(**axis, **(yaxis or {}))
    for i in range(len(targets), rows * cols):  # empty cells of the last row
        fig.update_xaxes(visible=False, row=rows, col=i % cols + 1)
        fig.update_yaxes(visible=False, row=rows, col=i % cols + 1)
    for c in range(1, cols + 1):  # the x title under the lowest panel of each column
        lowest = max(r for r in range(1, rows + 1) if (r - 1) * cols + c <= len(targets))
        fig.update_xaxes(title=dict(text=x_title, font=dict(size=AXIS_TITLE_SIZE - 1)),
                         showticklabels=True, row=lowest, col=c)
    for r in range(1, rows + 1):
        fig.update_yaxes(title=dict(text=y_title, font=dict(size=AXIS_TITLE_SIZE - 1)),
                         row=r, col=1)
    return fig
