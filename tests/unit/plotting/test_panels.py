"""Figure redesigns of issue 18: bands beneath lines, small multiples with the RMU, twin and
original references in every panel, the heatmap in the shared style, ablation bars with
reference groups and distinct labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from interp_unlearn.plotting import ablation_bars, logit_lens_curves, robustness_curves
from interp_unlearn.plotting.heatmap import sensitivity_heatmap
from interp_unlearn.plotting.style import FONT_FAMILY

try:
    from test_plotting import ablation_frame, floor_frame, kinds, lens_frame
except ImportError:
    from tests.unit.plotting.test_plotting import ablation_frame, floor_frame, kinds, lens_frame

METHODS = ("rmu", "almpu", "npo", "ga_mp", "dpo")


def kind_positions(fig, kind):
    return [i for i, t in enumerate(fig.data) if (t.meta or {}).get("kind") == kind]


@pytest.mark.parametrize("make", [
    lambda: robustness_curves(floor_frame(methods=METHODS)),
    lambda: logit_lens_curves(lens_frame(methods=("original", *METHODS))),
])
def test_overlay_draws_every_band_beneath_every_line(make):
    fig = make()
    bands, lines = kind_positions(fig, "ci"), kind_positions(fig, "mean")
    assert bands and lines and max(bands) < min(lines)


def test_robustness_panels_one_per_method_with_references():
    fig = robustness_curves(floor_frame(methods=METHODS), layout="panels")
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["RMU", "NPO", "DPO", "GA-MP", "ALMPU"]  # the shared legend order
    means = kinds(fig, "mean")
    assert [t.meta["panel"] for t in means] == ["rmu", "npo", "dpo", "ga_mp", "almpu"]
    refs = kinds(fig, "reference")
    for panel in ("npo", "almpu"):
        mine = {t.meta["role"] if t.meta["role"] != "target" else t.meta["method"]
                for t in refs if t.meta["panel"] == panel}
        assert mine == {"twin", "original", "rmu"}
    # RMU's own panel has no RMU reference; each reference is in the legend once
    assert {t.meta["role"] for t in refs if t.meta["panel"] == "rmu"} == {"twin", "original"}
    assert sorted(t.name for t in refs if t.showlegend is not False) == [
        "RMU", "never-learned twin", "original"]
    # within a panel, references and the band come before the panel's line
    for panel in ("npo", "almpu"):
        idx = [i for i, t in enumerate(fig.data) if (t.meta or {}).get("panel") == panel]
        assert fig.data[idx[-1]].meta["kind"] == "mean"
    # panels share one y range: the same data on the same scale
    yaxes = [fig.layout[k] for k in fig.layout if k.startswith("yaxis")]
    assert len({ax.matches for ax in yaxes if ax.matches}) == 1
    # a panel's line is the same mean as the overlay's
    overlay = robustness_curves(floor_frame(methods=METHODS))
    a = [t for t in kinds(overlay, "mean") if t.meta["method"] == "almpu"][0]
    b = [t for t in means if t.meta["method"] == "almpu"][0]
    np.testing.assert_allclose(a.y, b.y)


def test_recovery_panels_draw_the_constant_references():
    df = floor_frame(methods=METHODS)
    rec = df[(df["metric"] == "accuracy") & (df["role"] == "target")].assign(metric="recovery")
    fig = robustness_curves(rec, metric="recovery", layout="panels")
    twin = [t for t in kinds(fig, "reference") if t.meta["role"] == "twin"]
    assert twin and all(set(t.y) == {0.0} for t in twin)


def test_lens_panels_and_bad_layout():
    fig = logit_lens_curves(lens_frame(methods=("original", *METHODS)), layout="panels")
    assert [a.text for a in fig.layout.annotations] == ["RMU", "NPO", "DPO", "GA-MP", "ALMPU"]
    assert all(t.meta["panel"] for t in kinds(fig, "reference"))
    with pytest.raises(ValueError, match="layout must be"):
        logit_lens_curves(lens_frame(), layout="grid")
    with pytest.raises(ValueError, match="layout must be"):
        robustness_curves(floor_frame(), layout="grid")


def test_heatmap_uses_the_shared_style_and_a_full_colour_bar():
    rng = np.random.default_rng(0)
    df = pd.DataFrame([(l, h, float(rng.uniform(0.01, 0.3))) for l in range(4) for h in range(5)],
                      columns=["layer", "head", "score"])
    fig = sensitivity_heatmap(df, [(0, 1)])
    assert fig.layout.font.family == FONT_FAMILY and fig.layout.template.layout.paper_bgcolor
    heat = fig.data[0]
    assert heat.zmin == 0 and heat.zmax == pytest.approx(df["score"].max())
    assert heat.colorbar.len == 1.0 and heat.colorbar.lenmode == "fraction"


def test_ablation_bars_with_references_and_labels():
    df = ablation_frame(variants=("adaptive", "early"))
    refs = []
    for s in range(3):
        for n in sorted(df["N"].unique()):
            for method, role in (("rmu", "target"), ("never-learned", "twin")):
                if method == "rmu" and n == sorted(df["N"].unique())[1]:
                    continue  # an N that RMU did not run at stays empty
                refs.append(dict(method=method, role=role, N=n, seed=s, metric="ue",
                                 value=50.0 + s, domain="forget"))
    fig = ablation_bars(df, references=pd.DataFrame(refs),
                        labels={"adaptive": "adaptive top-K (RMU layer)"})
    bars = kinds(fig, "bar")
    assert list(bars[0].x) == ["adaptive top-K (RMU layer)", "early", "RMU",
                               "never-learned twin"]
    assert bars[0].meta["references"] == ["RMU", "never-learned twin"]
    assert np.isnan(bars[1].y[2]) and bars[1].y[3] == pytest.approx(51.0)
    assert bars[0].marker.color[0] != bars[0].marker.color[2]  # references in greys
    bad = pd.DataFrame(refs).drop(columns="method")
    with pytest.raises(ValueError, match="references"):
        ablation_bars(df, references=bad)
