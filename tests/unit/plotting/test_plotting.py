"""The paper's figures (interp_unlearn.plotting): robustness curves, logit-lens curves,
ablation bars -- on small hand-made frames shaped like the library's outputs, and once
on a real (tiny) run on the micro organism."""

from __future__ import annotations

import math
import struct

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
from scipy import stats

from interp_unlearn.plotting import (ablation_bars, logit_lens_curves, method_style,
                                     robustness_curves, save_figure, static_export_problem)
from interp_unlearn.plotting.bars import VARIANT_ORDER

NS = [0, 5, 10, 20]


def t95(values) -> tuple[float, float, float]:
    """Independent 95 % t-interval (scipy) to check the figures against."""
    v = np.asarray(values, float)
    m = v.mean()
    h = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return m, m - h, m + h


def floor_frame(methods=("rmu", "almpu"), seeds=3, data="forget", ns=NS, attack="finetune-lora",
                rng=0) -> pd.DataFrame:
    """Rows as run_floor writes them (accuracy and UE for target, twin, original)."""
    r = np.random.default_rng(rng)
    rows = []

    def add(method, role, n, s, acc):
        base = dict(method=method, role=role, attack=attack, data=data, pool="attack", N=n,
                    seed=s, domain="forget", model=f"ckpt-{method}", config="{}")
        rows.append({**base, "metric": "accuracy", "value": acc})
        rows.append({**base, "metric": "ue", "value": 100 * (1 - acc)})
        rows.append({**base, "domain": "retain", "metric": "ue", "value": 20.0})  # filtered out

    for s in range(seeds):
        for n in NS if ns is None else ns:
            for i, m in enumerate(methods):
                add(m, "target", n, s, float(np.clip(0.3 + 0.01 * n * (i + 1) + r.normal(0, .03), 0, 1)))
            add("never-learned", "twin", n, s, float(np.clip(0.25 + 0.004 * n + r.normal(0, .02), 0, 1)))
            add("original", "original", n, s, float(np.clip(0.88 + r.normal(0, .02), 0, 1)))
    return pd.DataFrame(rows)


def kinds(fig: go.Figure, kind: str) -> list:
    return [t for t in fig.data if (t.meta or {}).get("kind") == kind]


def series(fig: go.Figure, **meta) -> go.Scatter:
    hits = [t for t in kinds(fig, "mean") if all(t.meta.get(k) == v for k, v in meta.items())]
    assert len(hits) == 1, (meta, [t.meta for t in kinds(fig, "mean")])
    return hits[0]


# ---------------------------------------------------------------------- robustness


def test_robustness_curves_means_bands_floor():
    df = floor_frame()
    fig = robustness_curves(df)
    assert isinstance(fig, go.Figure)
    # chance + (band + mean) for rmu, almpu, twin, original
    assert len(fig.data) == 9
    assert len(kinds(fig, "mean")) == 4 and len(kinds(fig, "ci")) == 4
    assert len(kinds(fig, "chance")) == 1 and kinds(fig, "chance")[0].y == (75.0, 75.0)
    ue = df[(df.metric == "ue") & (df.domain == "forget")]
    for role, method in (("target", "rmu"), ("target", "almpu"), ("twin", "twin"),
                         ("original", "original")):
        tr = series(fig, role=role, method=method)
        g = ue[ue.role == role] if role != "target" else ue[ue.method == method]
        expect = g.groupby("N")["value"].mean()
        assert list(tr.x) == [float(n) for n in expect.index]
        np.testing.assert_allclose(tr.y, expect.to_numpy(), rtol=0, atol=1e-9)
        band = [t for t in kinds(fig, "ci") if t.meta["series"] == tr.meta["series"]][0]
        k = len(expect)
        lo_hi = [t95(g[g.N == n]["value"]) for n in expect.index]
        np.testing.assert_allclose(band.y[:k], [x[2] for x in lo_hi], atol=1e-9)
        np.testing.assert_allclose(band.y[k:], [x[1] for x in lo_hi][::-1], atol=1e-9)
    # method order, styles, floor
    names = [t.name for t in kinds(fig, "mean")]
    assert names == ["RMU", "ALMPU", "never-learned twin", "original"]
    twin = series(fig, role="twin")
    assert twin.line.dash == "dash" and twin.line.color == method_style("twin").color
    assert series(fig, role="original").line.dash == "dot"
    assert series(fig, method="almpu").line.color == method_style("ALMPU").color
    assert "attack pool" in fig.layout.title.subtitle.text and "3 seeds" in fig.layout.title.subtitle.text
    assert fig.layout.yaxis.title.text == "UE (%)"
    assert fig.layout.xaxis.title.text == "attack samples N"
    assert fig.layout.width == 520


def test_robustness_one_seed_has_no_band_and_accuracy_metric():
    fig = robustness_curves(floor_frame(seeds=1))
    assert kinds(fig, "ci") == [] and len(kinds(fig, "mean")) == 4
    assert "1 seed" in fig.layout.title.subtitle.text
    acc = robustness_curves(floor_frame(seeds=2), metric="accuracy")
    assert acc.layout.yaxis.title.text == "accuracy"
    assert kinds(acc, "chance")[0].y == (0.25, 0.25)
    assert all(0 <= y <= 1 for t in kinds(acc, "mean") for y in t.y)


def test_robustness_concatenated_runs_share_the_references():
    """Two run_floor results (one per method) repeat the twin/original rows: one floor."""
    a, b = floor_frame(methods=("rmu",)), floor_frame(methods=("almpu",))
    b.loc[b.role != "target", "value"] = a.loc[a.role != "target", "value"].to_numpy()
    fig = robustness_curves(pd.concat([a, b], ignore_index=True))
    assert len(kinds(fig, "mean")) == 4
    twin = series(fig, role="twin")
    assert set(np.asarray(twin.customdata)[:, 3]) == {3}  # 3 seeds, not 6
    # the same target measured twice (two checkpoints, one label) is an error
    with pytest.raises(ValueError, match="model"):
        robustness_curves(pd.concat([a, a.assign(model="other")], ignore_index=True))


def test_robustness_unrelated_recovery_and_uneven_n():
    df = floor_frame(data="unrelated", ns=[0, 10, 50, 100, 200, 500])
    fig = robustness_curves(df, data="unrelated", title="Table 2")
    assert fig.layout.title.text == "Table 2"
    assert "(equal steps)" in fig.layout.xaxis.title.text
    assert list(fig.layout.xaxis.ticktext) == ["0", "10", "50", "100", "200", "500"]
    assert "unrelated text" in fig.layout.title.subtitle.text
    # recovery: target rows only, references drawn at 0 and 1
    from interp_unlearn.attacks.floor import add_recovery
    rec = add_recovery(floor_frame())
    fig = robustness_curves(rec, metric="recovery")
    refs = kinds(fig, "reference")
    assert [t.y for t in refs] == [(0.0, 0.0), (1.0, 1.0)]
    assert refs[0].line.dash == "dash"
    assert len(kinds(fig, "mean")) == 2


def test_robustness_errors():
    df = floor_frame()
    with pytest.raises(ValueError, match=r"missing the column\(s\) \['seed'\]"):
        robustness_curves(df.drop(columns="seed"))
    with pytest.raises(ValueError, match="no rows left.*data='unrelated'"):
        robustness_curves(df, data="unrelated")
    with pytest.raises(ValueError, match="no rows left"):
        robustness_curves(df.iloc[:0])
    with pytest.raises(ValueError, match="metric must be one of"):
        robustness_curves(df, metric="bleu")
    two = pd.concat([df, floor_frame(attack="finetune-full")], ignore_index=True)
    with pytest.raises(ValueError, match="several 'attack' values"):
        robustness_curves(two)
    with pytest.raises(ValueError, match="unknown role"):
        robustness_curves(df.assign(role=df.role.replace("twin", "sibling")))
    with pytest.raises(TypeError, match="DataFrame"):
        robustness_curves(df.to_dict("records"))


# ----------------------------------------------------------------------- logit lens


def lens_frame(methods=("original", "rmu", "almpu"), seeds=(0, 1), blocks=4, rng=1):
    r = np.random.default_rng(rng)
    rows = []
    for m in methods:
        for s in seeds:
            for b in range(blocks):
                acc = float(np.clip((0.3 + 0.15 * b if m == "original" else 0.27) + r.normal(0, .03), 0, 1))
                for domain in ("forget", "retain"):
                    rows.append(dict(domain=domain, block=b, accuracy=acc if domain == "forget" else 0.9,
                                     ci95_low=acc - .05, ci95_high=acc + .05, n=90, method=m, seed=s))
    return pd.DataFrame(rows)


def test_logit_lens_curves_means_and_bands():
    df = lens_frame()
    fig = logit_lens_curves(df)
    assert len(fig.data) == 1 + 3 * 2
    assert kinds(fig, "chance")[0].y == (0.25, 0.25)
    assert [t.name for t in kinds(fig, "mean")] == ["RMU", "ALMPU", "original"]
    f = df[df.domain == "forget"]
    for m in ("original", "rmu", "almpu"):
        tr = series(fig, method=m)
        g = f[f.method == m]
        np.testing.assert_allclose(tr.y, g.groupby("block")["accuracy"].mean().to_numpy(), atol=1e-12)
        band = [t for t in kinds(fig, "ci") if t.meta["series"] == tr.meta["series"]][0]
        np.testing.assert_allclose(band.y[:4], [t95(g[g.block == b]["accuracy"])[2] for b in range(4)],
                                   atol=1e-9)
    assert series(fig, method="original").line.dash == "dot"
    # the method keeps its colour across figures
    rob = robustness_curves(floor_frame())
    assert series(fig, method="rmu").line.color == series(rob, method="rmu").line.color
    assert fig.layout.xaxis.title.text == "block" and fig.layout.yaxis.title.text == "accuracy"
    retain = logit_lens_curves(df, domain="retain")
    assert all(y == pytest.approx(0.9) for t in kinds(retain, "mean") for y in t.y)


def test_logit_lens_single_run_no_band_and_no_domain_column():
    df = lens_frame(seeds=(0,)).query("domain == 'forget'").drop(columns=["seed", "domain"])
    fig = logit_lens_curves(df)
    assert kinds(fig, "ci") == [] and len(kinds(fig, "mean")) == 3
    assert "1 run per method" in fig.layout.title.subtitle.text


def test_logit_lens_errors():
    df = lens_frame()
    with pytest.raises(ValueError, match=r"missing the column\(s\) \['method'\]"):
        logit_lens_curves(df.drop(columns="method"))
    with pytest.raises(ValueError, match="no rows left.*domain='general'"):
        logit_lens_curves(df, domain="general")
    with pytest.raises(ValueError, match="no rows"):
        logit_lens_curves(df.iloc[:0])
    with pytest.raises(ValueError, match="share"):
        logit_lens_curves(df.drop(columns="seed"))  # two runs per method, unlabelled


# --------------------------------------------------------------------------- bars


def ablation_frame(variants=("early", "adaptive", "random-25%", "all-heads"), seeds=3, rng=2):
    r = np.random.default_rng(rng)
    rows = []
    for v in variants:
        for s in range(seeds):
            for n in (0, 25, 50):
                ue = 70 - 0.5 * n + 5 * (v == "adaptive") + r.normal(0, 2)
                base = dict(method="almpu", role="target", attack="finetune-lora", data="forget",
                            pool="attack", N=n, seed=s, domain="forget", variant=v)
                rows += [{**base, "metric": "ue", "value": ue},
                         {**base, "metric": "accuracy", "value": 1 - ue / 100}]
    # the twin has no variant: it must be left out, not break the figure
    rows += [dict(method="never-learned", role="twin", attack="finetune-lora", data="forget",
                  pool="attack", N=n, seed=0, domain="forget", variant=None, metric="ue",
                  value=75.0) for n in (0, 25, 50)]
    return pd.DataFrame(rows)


def test_ablation_bars_means_and_error_bars():
    df = ablation_frame()
    fig = ablation_bars(df)
    bars = kinds(fig, "bar")
    assert len(fig.data) == len(bars) == 3
    assert [t.name for t in bars] == ["N = 0", "N = 25", "N = 50"]
    order = [v for v in VARIANT_ORDER if v in set(df.variant.dropna())]
    assert order[0] == "adaptive" and order[-1] == "early"
    t = df[(df.metric == "ue") & (df.role == "target")]
    for bar in bars:
        assert list(bar.x) == order
        g = t[t.N == bar.meta["N"]]
        np.testing.assert_allclose(bar.y, [g[g.variant == v]["value"].mean() for v in order], atol=1e-9)
        ci = [t95(g[g.variant == v]["value"]) for v in order]
        np.testing.assert_allclose(bar.error_y.array, [c[2] - c[0] for c in ci], atol=1e-9)
        np.testing.assert_allclose(bar.error_y.arrayminus, [c[0] - c[1] for c in ci], atol=1e-9)
    assert fig.layout.barmode == "group" and fig.layout.yaxis.title.text == "UE (%)"
    colors = [b.marker.color for b in bars]
    assert len(set(colors)) == 3


def test_ablation_bars_one_seed_custom_column_and_errors():
    df = ablation_frame(seeds=1)
    fig = ablation_bars(df.rename(columns={"variant": "location"}), variant_col="location",
                        metric="accuracy")
    assert all(b.error_y.array is None for b in kinds(fig, "bar"))
    with pytest.raises(ValueError, match=r"missing the column\(s\) \['variant'\]"):
        ablation_bars(df.drop(columns="variant"))
    with pytest.raises(ValueError, match="no rows left.*metric='recovery'"):
        ablation_bars(df, metric="recovery")
    bad = df.copy()
    bad.loc[bad.index[0], "variant"] = None
    with pytest.raises(ValueError, match="no 'variant'"):
        ablation_bars(bad)
    with pytest.raises(ValueError, match="share"):
        ablation_bars(pd.concat([df, df.assign(method="rmu")]))


# -------------------------------------------------------------- export and a real run


def test_figures_export(tmp_path):
    figs = {"robustness": robustness_curves(floor_frame()), "lens": logit_lens_curves(lens_frame()),
            "bars": ablation_bars(ablation_frame())}
    for name, fig in figs.items():
        paths = save_figure(fig, tmp_path / name, ("html",))
        assert paths["html"].stat().st_size > 1_000_000  # plotly.js inlined
    if static_export_problem() is None:
        png = save_figure(figs["robustness"], tmp_path / "robustness", ("png",), scale=2)["png"]
        head = png.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        size = struct.unpack(">II", head[16:24])  # IHDR width, height
        assert size == (2 * figs["robustness"].layout.width, 2 * figs["robustness"].layout.height)


@pytest.mark.slow
def test_figures_from_a_real_micro_run(tmp_path):
    """run_floor and run_logit_lens output feed the figures unchanged."""
    from interp_unlearn.attacks import run_floor
    from interp_unlearn.evaluation.logit_lens import run_logit_lens
    from interp_unlearn.unlearn import unlearn

    torch.set_num_threads(1)
    ck = unlearn("organism-micro", "rmu", out_dir=tmp_path / "rmu", steps=3, evaluate=False,
                 progress=False).checkpoint
    df = run_floor(ck, samples=(0, 1), seeds=2, progress=False, epochs=1)
    fig = robustness_curves(df)
    assert [t.name for t in kinds(fig, "mean")] == ["RMU", "never-learned twin", "original"]
    for role in ("target", "twin", "original"):
        g = df[(df.role == role) & (df.metric == "ue") & (df.domain == "forget")]
        np.testing.assert_allclose(series(fig, role=role).y, g.groupby("N")["value"].mean(), atol=1e-9)
    lens = pd.concat([run_logit_lens(m, progress=False).assign(method=name)
                      for name, m in (("original", "organism-micro"), ("rmu", ck))])
    fig = logit_lens_curves(lens)
    assert [t.name for t in kinds(fig, "mean")] == ["RMU", "original"]
    assert len(series(fig, method="rmu").y) == lens["block"].nunique()


def test_save_gallery_inlines_plotlyjs_once(tmp_path):
    import plotly.graph_objects as go

    from interp_unlearn.plotting import save_gallery
    figs = {f"fig{i}": go.Figure(go.Scatter(x=[0, 1], y=[i, i + 1])) for i in range(3)}
    path = save_gallery(figs, tmp_path / "all.html", title="run")
    html = path.read_text()
    assert html.count("<h2>") == 3 and "fig2" in html
    assert html.count("plotly.js v") <= 2  # the library's banner: inlined once, not 3 times
    assert path.stat().st_size < 6_000_000
    with pytest.raises(ValueError, match="at least one"):
        save_gallery({}, tmp_path / "x.html")
    with pytest.raises(ValueError, match="HTML"):
        save_gallery(figs, tmp_path / "x.png")
