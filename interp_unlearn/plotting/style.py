"""The shared look of the paper's figures: one colour per method, paper-column layout, checks.

**Palette.** Okabe & Ito's eight colour-blind-safe colours, fixed per method so a method
keeps its colour in every figure (robustness curves, logit lens, ...):

========================  ===============  =========  ===========
method                    colour           line       marker
========================  ===============  =========  ===========
ALMPU                     vermillion       solid      circle
RMU                       blue             solid      square
NPO                       bluish green     solid      diamond
DPO                       reddish purple   solid      triangle-up
GA                        orange           solid      x
GA-MP                     sky blue         solid      cross
original (before)         black            dotted     circle-open
never-learned twin        grey             dashed     square-open
========================  ===============  =========  ===========

A method not in the table gets a colour from Paul Tol's *muted* scheme (also
colour-blind safe), chosen by a hash of its name, so it too is stable across figures.
Markers differ per method, so the lines stay distinguishable in greyscale.

**Layout.** 520 px wide, ~400-460 px high (the plot area is fixed; the height grows
with the legend's rows and the subtitle), fonts 13-15 px: written as PNG at ``scale=2``
(1040 px wide) and shrunk to one paper column (~3.3 in), tick labels print at ~6 pt. The
legend sits above the plot, under the title and a subtitle that names the attack, its
data and pool, and what the bands are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp_unlearn.core.mcq import N_CHOICES

__all__ = ["DATA_WORDS", "EXTRA_COLORS", "FIG_HEIGHT", "FIG_WIDTH", "GREY", "METHOD_ORDER",
           "METRIC_AXES", "OKABE_ITO", "MethodStyle", "apply_paper_layout", "attack_subtitle",
           "band_trace", "canonical_method", "chance_line", "check_frame", "duplicates_error",
           "filter_rows", "method_style", "rgba", "single_valued", "sort_methods"]

FIG_WIDTH, FIG_HEIGHT = 520, 400
FONT_FAMILY = "Arial, Helvetica, sans-serif"
FONT_SIZE, TITLE_SIZE, AXIS_TITLE_SIZE, TICK_SIZE, LEGEND_SIZE = 14, 15, 14, 13, 13

#: Okabe & Ito (2008), "Color Universal Design".
OKABE_ITO = {
    "black": "#000000", "orange": "#E69F00", "sky_blue": "#56B4E9",
    "bluish_green": "#009E73", "yellow": "#F0E442", "blue": "#0072B2",
    "vermillion": "#D55E00", "reddish_purple": "#CC79A7",
}
GREY = "#7F7F7F"
#: Paul Tol's "muted" scheme, for methods the table does not know.
EXTRA_COLORS = ("#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77",
                "#CC6677", "#882255", "#AA4499")


#: Axis title, chance level (4-choice MCQ) and its label for each metric of the attack rows.
METRIC_AXES: dict[str, tuple[str, float | None, str | None]] = {
    "ue": ("UE (%)", 100.0 * (1 - 1 / N_CHOICES), f"chance (UE {100 * (1 - 1 / N_CHOICES):g} %)"),
    "accuracy": ("accuracy", 1 / N_CHOICES, f"chance ({1 / N_CHOICES:g})"),
    "recovery": ("recovery (0 = twin, 1 = original)", None, None),
}


#: How the attack data of a row is named in subtitles.
DATA_WORDS = {"forget": "forget-corpus samples", "unrelated": "unrelated text"}


@dataclass(frozen=True)
class MethodStyle:
    """How one method is drawn: colour, line dash, marker symbol and legend label."""

    color: str
    dash: str
    symbol: str
    label: str


_STYLES: dict[str, MethodStyle] = {
    "almpu": MethodStyle(OKABE_ITO["vermillion"], "solid", "circle", "ALMPU"),
    "rmu": MethodStyle(OKABE_ITO["blue"], "solid", "square", "RMU"),
    "npo": MethodStyle(OKABE_ITO["bluish_green"], "solid", "diamond", "NPO"),
    "dpo": MethodStyle(OKABE_ITO["reddish_purple"], "solid", "triangle-up", "DPO"),
    "ga": MethodStyle(OKABE_ITO["orange"], "solid", "x", "GA"),
    "ga_mp": MethodStyle(OKABE_ITO["sky_blue"], "solid", "cross", "GA-MP"),
    # the baselines ALMPU must beat: their parent's colour, dashed
    "rmu_lat": MethodStyle(OKABE_ITO["blue"], "dash", "square-open", "RMU-LAT"),
    "adaptive_rmu": MethodStyle(OKABE_ITO["blue"], "dashdot", "triangle-down", "Adaptive RMU"),
    "npo_sam": MethodStyle(OKABE_ITO["bluish_green"], "dash", "diamond-open", "NPO-SAM"),
    "original": MethodStyle(OKABE_ITO["black"], "dot", "circle-open", "original"),
    "never_learned": MethodStyle(GREY, "dash", "square-open", "never-learned twin"),
}
#: Legend order: the paper's Table 1 order, then the references (twin, original), as in
#: the robustness curves.
METHOD_ORDER = ("rmu", "rmu_lat", "adaptive_rmu", "npo", "npo_sam", "dpo", "ga", "ga_mp",
                "almpu", "never_learned", "original")
_ALIASES = {"twin": "never_learned", "never_learned_twin": "never_learned",
            "gamp": "ga_mp", "vanilla": "original", "base": "original"}


def canonical_method(name: Any) -> str:
    """``"GA-MP"`` -> ``"ga_mp"``, ``"never-learned"`` / ``"twin"`` -> ``"never_learned"``."""
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    return _ALIASES.get(key, key)


def method_style(name: Any) -> MethodStyle:
    """The fixed style of a method (see the module docstring); unknown names get a stable
    colour from :data:`EXTRA_COLORS` and keep their own spelling as the label."""
    key = canonical_method(name)
    if key in _STYLES:
        return _STYLES[key]
    digest = int(hashlib.sha1(key.encode()).hexdigest(), 16)
    return MethodStyle(EXTRA_COLORS[digest % len(EXTRA_COLORS)], "solid", "star-triangle-up",
                       str(name))


def sort_methods(names: Sequence[Any]) -> list[Any]:
    """Distinct ``names`` in :data:`METHOD_ORDER`, unknown ones after them alphabetically."""
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    unique = list(dict.fromkeys(names))
    return sorted(unique, key=lambda n: (rank.get(canonical_method(n), len(rank)), str(n)))


def rgba(color: str, alpha: float) -> str:
    """``#RRGGBB`` -> ``rgba(r, g, b, alpha)``."""
    c = color.lstrip("#")
    r, g, b = (int(c[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r}, {g}, {b}, {alpha})"


# ------------------------------------------------------------------------- input checks


def check_frame(df: Any, columns: Sequence[str], who: str) -> pd.DataFrame:
    """Raise ``TypeError`` unless ``df`` is a DataFrame and ``ValueError`` naming every
    column of ``columns`` it lacks."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{who}: df must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{who}: df is missing the column(s) {missing} (needs {list(columns)}; "
                         f"has {list(df.columns)})")
    return df


def filter_rows(df: pd.DataFrame, who: str, **conditions: Any) -> pd.DataFrame:
    """Rows where every ``column == value``; a ``ValueError`` naming the filter and the
    values present when nothing is left."""
    mask = pd.Series(True, index=df.index)
    for col, value in conditions.items():
        mask &= df[col] == value
    out = df[mask]
    if out.empty:
        present = {c: sorted(map(str, df[c].dropna().unique()))[:12] for c in conditions}
        wanted = ", ".join(f"{c}={v!r}" for c, v in conditions.items())
        raise ValueError(f"{who}: no rows left after filtering to {wanted} ({len(df)} rows "
                         f"in; values present: {present})")
    return out


def single_valued(df: pd.DataFrame, columns: Sequence[str], who: str) -> None:
    """Raise when a column that must be constant in one figure holds several values."""
    for col in columns:
        if col in df.columns:
            values = df[col].dropna().unique()
            if len(values) > 1:
                raise ValueError(f"{who}: the rows hold several {col!r} values "
                                 f"{sorted(map(str, values))}; one figure shows one -- filter "
                                 f"df first, e.g. df[df[{col!r}] == {str(values[0])!r}]")


def duplicates_error(df: pd.DataFrame, keys: Sequence[str], who: str) -> None:
    """Raise when two rows share ``keys`` (two measurements where the figure expects one),
    naming the columns in which they differ."""
    dup = df[df.duplicated(list(keys), keep=False)]
    if dup.empty:
        return
    key = tuple(dup.iloc[0][k] for k in keys)
    same = dup[(dup[list(keys)] == pd.Series(dict(zip(keys, key)))).all(axis=1)]
    differ = [c for c in same.columns if c not in keys and same[c].astype(str).nunique() > 1]
    raise ValueError(f"{who}: {len(same)} rows share {dict(zip(keys, key))} (columns that "
                     f"differ: {differ or 'none -- exact repeats'}); keep one measurement "
                     "per point (filter or de-duplicate df)")


def attack_subtitle(rows: pd.DataFrame, n_seeds: int) -> str:
    """``"finetune-lora on forget-corpus samples (attack pool) · mean ± 95% CI over 3
    seeds"`` from the (single-valued) ``attack``, ``data``, ``pool`` columns present."""
    def one(col: str) -> str | None:
        return ", ".join(map(str, rows[col].dropna().unique())) if col in rows.columns else None

    attack, data, pool = one("attack"), one("data"), one("pool")
    what = attack or "attack"
    if data:
        what += f" on {DATA_WORDS.get(data, data)}"
    if pool:
        what += f" ({pool} pool)"
    ci = f"mean ± 95% CI over {n_seeds} seeds" if n_seeds > 1 else "1 seed (no CI)"
    return f"{what} · {ci}"


# --------------------------------------------------------------------------- traces


def band_trace(x: Sequence[float], low: Sequence[float], high: Sequence[float], color: str,
               name: str, group: str, alpha: float = 0.18) -> go.Scatter | None:
    """A filled confidence band (``None`` when no point has finite bounds; points without
    them are left out)."""
    pts = [(float(a), float(lo), float(hi)) for a, lo, hi in zip(x, low, high)
           if np.isfinite(lo) and np.isfinite(hi)]
    if not pts:
        return None
    xs = [p[0] for p in pts]
    return go.Scatter(x=xs + xs[::-1], y=[p[2] for p in pts] + [p[1] for p in pts][::-1],
                      fill="toself", fillcolor=rgba(color, alpha), line=dict(width=0),
                      mode="lines", hoverinfo="skip", showlegend=False, legendgroup=group,
                      name=f"{name} 95% CI", meta={"kind": "ci", "series": group})


def chance_line(fig: go.Figure, y: float, x_range: Sequence[float], text: str = "chance") -> None:
    """A thin light-grey horizontal line at ``y`` over ``x_range`` (a legend entry named
    ``text``, listed last; ``meta["kind"] == "chance"``). Add it before the data so that it
    is drawn beneath them."""
    fig.add_trace(go.Scatter(x=[float(x_range[0]), float(x_range[1])], y=[y, y], mode="lines",
                             name=text, line=dict(color="#A8A8A8", width=1.4), legendrank=2000,
                             hoverinfo="skip", meta={"kind": "chance"}))


def _text_px(text: str, size: float = LEGEND_SIZE) -> float:
    """Approximate rendered width of ``text`` in Arial at ``size`` px."""
    narrow, wide = set("ijlrtfI.,:;'|!()[]- "), set("mwMW%@")
    em = sum(0.28 if c in narrow else 0.85 if c in wide else 0.68 if c.isupper() else 0.52
             for c in text)
    return em * size


def _legend_rows(labels: Sequence[str], width: int) -> int:
    """Rows a horizontal legend of ``labels`` takes in a plot area ``width`` px wide (greedy
    packing, as plotly wraps it: per item ~48 px of symbol and gaps plus its text;
    calibrated on rendered figures, with a few per cent to spare)."""
    rows, used, avail = 0, 0.0, 0.96 * width
    for label in labels:
        w = 48 + _text_px(label)
        if rows == 0 or used + w > avail:
            rows, used = rows + 1, w
        else:
            used += w
    return rows


def apply_paper_layout(fig: go.Figure, *, title: str, x_title: str, y_title: str,
                       subtitle: str | None = None, width: int = FIG_WIDTH,
                       height: int = FIG_HEIGHT) -> go.Figure:
    """Column-width size, fonts, white template; the legend (the traces that show in it)
    in as many rows as it needs above the plot; a long subtitle wraps at its last ``·``."""
    labels = [str(t.name) for t in fig.data if t.showlegend is not False and t.name]
    margin_l, margin_r = 66, 16
    legend_rows = _legend_rows(labels, width - margin_l - margin_r)
    sub_lines = 0
    if subtitle:
        sub_lines = 1
        if len(subtitle) > 66 and " · " in subtitle:
            head, _, tail = subtitle.rpartition(" · ")
            subtitle, sub_lines = f"{head}<br>{tail}", 2
    top = 40 + 17 * sub_lines + 22 * legend_rows + (6 if legend_rows else 0)
    title_d: dict[str, Any] = dict(text=title, x=0.5, xanchor="center", y=0.985, yanchor="top",
                                   yref="container", font=dict(size=TITLE_SIZE))
    if subtitle:
        title_d["subtitle"] = dict(text=subtitle, font=dict(size=TICK_SIZE - 1, color="#444444"))
    fig.update_layout(
        template="plotly_white", width=width, height=height + top - 90,
        font=dict(family=FONT_FAMILY, size=FONT_SIZE, color="#222222"),
        title=title_d,
        margin=dict(l=margin_l, r=margin_r, t=top, b=58),
        showlegend=bool(labels),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="center", x=0.5,
                    font=dict(size=LEGEND_SIZE), bgcolor="rgba(255,255,255,0)",
                    tracegroupgap=0),
        hovermode="x unified",
    )
    axis = dict(showline=True, linecolor="#444444", mirror=False, ticks="outside",
                tickfont=dict(size=TICK_SIZE), gridcolor="#E5E5E5", zeroline=False)
    fig.update_xaxes(title=dict(text=x_title, font=dict(size=AXIS_TITLE_SIZE)), **axis)
    fig.update_yaxes(title=dict(text=y_title, font=dict(size=AXIS_TITLE_SIZE)), **axis)
    return fig
