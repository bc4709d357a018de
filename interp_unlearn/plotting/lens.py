"""Logit-lens curves (ALMPU Fig. 5): MCQ accuracy read from each block's residual stream.

Input: rows of :func:`interp_unlearn.evaluation.logit_lens.logit_lens` or
:func:`~interp_unlearn.evaluation.logit_lens.run_logit_lens` (columns ``block, accuracy`` and, from
``run_logit_lens``, ``domain``; ``n`` and the binomial ``ci95_low/high`` are used for the
hover text only), concatenated over checkpoints with an added ``method`` column
(``original``, ``rmu``, ``almpu`` ...) and, for several unlearning runs of one method, a
``seed`` column.

One line per method: the mean accuracy over seeds at each block, with a 95 % Student-t band
over seeds (:func:`~interp_unlearn.attacks.floor.t_interval`) where a block has two or more
seeds -- the spread between unlearning runs. (A single run's binomial interval over
questions is a different quantity; it is shown on hover, not as a band.) Colours and
line styles are the shared ones (:mod:`.style`): the original dotted black, a
never-learned twin dashed grey. A light line marks chance (1/4 for 4-choice questions).
Lower is better for an unlearned model: the paper's claim is accuracy near chance at
*every* block, not only at the output.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp_unlearn.core.stats import t_interval
from interp_unlearn.core.mcq import N_CHOICES
from interp_unlearn.plotting.panels import Series, draw_overlay, small_multiples
from interp_unlearn.plotting.style import (METRIC_AXES, apply_paper_layout, canonical_method,
                                           chance_line, check_frame, duplicates_error,
                                           filter_rows, method_style, sort_methods)

__all__ = ["LENS_COLUMNS", "logit_lens_curves"]

LENS_COLUMNS = ("method", "block", "accuracy")


def logit_lens_curves(df: pd.DataFrame, *, domain: str = "forget",
                      title: str | None = None, layout: str = "overlay") -> go.Figure:
    """Accuracy per block per method, with CI bands over seeds and the chance line.

    Args:
        df: lens rows with a ``method`` column (see the module docstring); ``seed``
            optional (absent: one run per method). Without a ``domain`` column every row is
            taken as belonging to ``domain``.
        domain: ``forget`` (Fig. 5) or ``retain`` (does the model still know the rest?).
        title: figure title (default from the domain).
        layout: ``overlay`` (one plot) or ``panels`` (one panel per unlearned model over
            the RMU, twin and original references;
            :func:`~interp_unlearn.plotting.panels.small_multiples`).

    Returns:
        ``overlay``: a figure whose first trace is the chance line (``meta["kind"] ==
        "chance"``), then the optional CI bands (``meta["kind"] == "ci"``, only when some
        block has two or more seeds; beneath every line), then the mean lines in the shared
        legend order (``meta["kind"] == "mean"``, ``meta["method"]``). ``panels``: see
        ``small_multiples``.

    Raises:
        ValueError: a missing column, no rows for ``domain``, or two rows for one
            (method, seed, block).
    """
    who = "logit_lens_curves"
    check_frame(df, LENS_COLUMNS, who)
    if layout not in ("overlay", "panels"):
        raise ValueError(f"{who}: layout must be 'overlay' or 'panels', got {layout!r}")
    if df.empty:
        raise ValueError(f"{who}: df has no rows")
    sub = filter_rows(df, who, domain=domain) if "domain" in df.columns else df
    sub = sub.assign(seed=sub["seed"].astype(int) if "seed" in sub.columns else 0,
                     block=sub["block"].astype(int), accuracy=sub["accuracy"].astype(float))
    duplicates_error(sub, ["method", "seed", "block"], who)

    n_blocks = int(sub["block"].max()) + 1
    max_seeds = 1
    drawn: list[Series] = []
    for method in sort_methods(sub["method"].tolist()):
        g = sub[sub["method"] == method]
        st = method_style(method)
        rows = []
        for block, gb in g.groupby("block", sort=True):
            mean, lo, hi = t_interval(gb["accuracy"].tolist())
            n_q = gb["n"].iloc[0] if "n" in gb.columns and len(gb) == 1 else np.nan
            qlo = gb["ci95_low"].iloc[0] if "ci95_low" in gb.columns and len(gb) == 1 else np.nan
            qhi = gb["ci95_high"].iloc[0] if "ci95_high" in gb.columns and len(gb) == 1 else np.nan
            rows.append((block, mean, lo, hi, len(gb), n_q, qlo, qhi))
        t = pd.DataFrame(rows, columns=["block", "mean", "lo", "hi", "n_seeds", "n_q", "qlo",
                                        "qhi"])
        max_seeds = max(max_seeds, int(t["n_seeds"].max()))
        if int(t["n_seeds"].max()) > 1 or t["n_q"].isna().all():
            hover = (f"{st.label}: %{{y:.3f}} [%{{customdata[1]:.3f}}, %{{customdata[2]:.3f}}]"
                     " (%{customdata[0]} seeds)<extra></extra>")
            custom = np.column_stack([t["n_seeds"], t["lo"], t["hi"]])
        else:
            hover = (f"{st.label}: %{{y:.3f}} (binomial 95% CI [%{{customdata[1]:.3f}}, "
                     "%{customdata[2]:.3f}], %{customdata[0]} questions)<extra></extra>")
            custom = np.column_stack([t["n_q"], t["qlo"], t["qhi"]])
        kind = canonical_method(method)
        role = {"original": "original", "never_learned": "twin"}.get(kind, "target")
        drawn.append(Series(key=f"method:{method}", role=role, method=str(method), style=st,
                            x=t["block"].tolist(), mean=t["mean"].tolist(), low=t["lo"].tolist(),
                            high=t["hi"].tolist(), hover=hover, customdata=custom,
                            band_alpha=0.12 if st.dash != "solid" else 0.2))
    ci = f"mean ± 95% CI over {max_seeds} seeds" if max_seeds > 1 else "1 run per method"
    subtitle = f"{domain} questions, lens at every block's residual stream · {ci}"
    title = title or f"Logit lens: {domain} accuracy per block"
    xaxis = dict(dtick=1 if n_blocks <= 16 else (2 if n_blocks <= 32 else 4),
                 range=[-0.4, n_blocks - 0.6])
    yaxis = dict(range=[0, 1.02], dtick=0.25)
    if layout == "panels" and any(s.role == "target" for s in drawn):
        return small_multiples(drawn, title=title, subtitle=subtitle, x_title="block",
                               y_title="accuracy", xaxis=xaxis, yaxis=yaxis,
                               chance=(1 / N_CHOICES, METRIC_AXES["accuracy"][2]))
    fig = go.Figure()
    chance_line(fig, 1 / N_CHOICES, (int(sub["block"].min()), n_blocks - 1),
                METRIC_AXES["accuracy"][2])
    draw_overlay(fig, drawn)
    apply_paper_layout(fig, title=title, subtitle=subtitle, x_title="block", y_title="accuracy")
    fig.update_xaxes(**xaxis)
    fig.update_yaxes(**yaxis)
    return fig
