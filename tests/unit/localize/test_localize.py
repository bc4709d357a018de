"""interp_unlearn.localize (LoFiT head localization), .selection, .plotting on a tiny Llama."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from interp_unlearn.core.bridge import active_hook_count, to_bridge
from interp_unlearn.localize import (CONFIG_FILE, HEADS_FILE, HISTORY_FILE, ORGANISM_OBJECTIVE,
                                     SCORES_FILE, LocalizationResult, LocalizeConfig, localize,
                                     scores_frame)
from interp_unlearn.plotting import save_figure, sensitivity_heatmap, static_export_problem
from interp_unlearn.plotting.heatmap import score_grid
from interp_unlearn.plotting.export import StaticExportError
from interp_unlearn.core.selection import layer_bands, load_heads, select_heads, write_heads

N_LAYERS, N_HEADS, D_HEAD = 4, 4, 16
FAST = dict(steps=8, batch_size=4, seq_len=32, top_k=3)


@pytest.fixture(scope="module")
def bridge(model, tokenizer):
    return to_bridge(model, tokenizer)


@pytest.fixture(scope="module")
def texts(world):
    return world.documents("forget")[:16]


@pytest.fixture(scope="module")
def result(bridge, tokenizer, texts):
    return localize(bridge, tokenizer, texts, LocalizeConfig(seed=3, **FAST), progress=False)


def fake_scores(n_layers: int = N_LAYERS, n_heads: int = N_HEADS, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return scores_frame(torch.tensor(rng.random((n_layers, n_heads)), dtype=torch.float32))


# ------------------------------------------------------------------------ localize


def test_localize_is_deterministic(bridge, tokenizer, texts, result):
    again = localize(bridge, tokenizer, texts, LocalizeConfig(seed=3, **FAST), progress=False)
    pd.testing.assert_frame_equal(result.scores, again.scores)
    pd.testing.assert_frame_equal(result.history, again.history)
    assert torch.equal(result.A, again.A)
    other = localize(bridge, tokenizer, texts, LocalizeConfig(seed=4, **FAST), progress=False)
    assert not np.array_equal(other.scores["score"], result.scores["score"])


def test_localize_result_shape(result):
    s = result.scores
    assert list(s.columns) == ["layer", "head", "score", "rank"]
    assert len(s) == N_LAYERS * N_HEADS
    assert sorted(s["rank"]) == list(range(1, N_LAYERS * N_HEADS + 1))
    top = s.sort_values("rank").head(3)
    assert result.selected == sorted(zip(top["layer"], top["head"]))
    assert np.allclose(s["score"].to_numpy(),
                       result.A.norm(dim=-1).reshape(-1).double().numpy())
    h = result.history
    assert list(h.columns) == ["step", "epoch", "loss", "ce", "l1", "lr"] and len(h) == 8
    assert np.isfinite(h[["loss", "ce", "l1"]].to_numpy()).all()
    assert h["lr"].iloc[0] == pytest.approx(5e-3) and h["lr"].is_monotonic_decreasing
    np.testing.assert_allclose(h["loss"], h["ce"] + 1e-3 * h["l1"], rtol=1e-5)
    assert result.meta["n_texts"] == 16 and result.meta["steps"] == 8


def test_l1_shrinks_scaling_factors(bridge, tokenizer, texts):
    cfg = dict(FAST, steps=10)
    free = localize(bridge, tokenizer, texts, LocalizeConfig(l1_lambda=0.0, **cfg), progress=False)
    sparse = localize(bridge, tokenizer, texts, LocalizeConfig(l1_lambda=0.05, **cfg), progress=False)
    assert sparse.A.abs().sum() < 0.5 * free.A.abs().sum()
    assert sparse.scores["score"].sum() < free.scores["score"].sum()


def test_localize_freezes_and_restores_model(model, tokenizer, texts):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.model.layers[0].mlp.down_proj.weight.requires_grad_(False)  # a flag to restore as is
    try:
        fresh = to_bridge(model, tokenizer)
        hooks = active_hook_count(fresh)
        localize(model, tokenizer, texts, LocalizeConfig(steps=2, batch_size=4, seq_len=16),
                 progress=False)
        flags = {n: p.requires_grad for n, p in model.named_parameters()}
        assert flags.pop("model.layers.0.mlp.down_proj.weight") is False
        assert all(flags.values())
        assert all(p.grad is None for p in model.parameters())
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
        assert active_hook_count(fresh) == hooks
    finally:
        model.model.layers[0].mlp.down_proj.weight.requires_grad_(True)


def test_localize_accepts_world(bridge, tokenizer, world):
    r = localize(bridge, tokenizer, world, LocalizeConfig(steps=1, batch_size=2, seq_len=16,
                                                          objective="corpus-ce",
                                                          forget_pools=("attack",)), progress=False)
    assert r.meta["n_texts"] == len(world.documents("forget", ("attack",)))
    assert r.config.objective == "corpus-ce"
    qa = localize(bridge, tokenizer, world, LocalizeConfig(steps=1, objective="answer-ce",
                                                           qa_pools=("attack",)), progress=False)
    assert qa.meta["n_texts"] == 5 * len(world.entities_in("forget", ("attack",)))
    assert qa.meta["n_targets"] < qa.meta["n_tokens"] / 3  # answers only
    auto = localize(bridge, tokenizer, world, LocalizeConfig(steps=1), progress=False)
    assert auto.config.objective == ORGANISM_OBJECTIVE  # "auto" is resolved and recorded
    with pytest.raises(TypeError, match="list of texts"):
        localize(bridge, tokenizer, "one text", LocalizeConfig(steps=1), progress=False)


def test_config_validation_and_json(tmp_path):
    cfg = LocalizeConfig(steps=7, lr=1e-3, forget_pools=["eval", "practice"], betas=[0.8, 0.9])
    path = cfg.save_json(tmp_path / "c.json")
    assert LocalizeConfig.load_json(path) == cfg
    assert LocalizeConfig().to_dict()["lr"] == 5e-3 and LocalizeConfig().l1_lambda == 1e-3
    assert LocalizeConfig().sigma_A == 1e-3 and LocalizeConfig().batch_size == 8
    for bad in (dict(batch_size=0), dict(lr=0.0), dict(l1_lambda=-1.0), dict(forget_pools=("x",)),
                dict(max_grad_norm=0.0), dict(top_k=0)):
        with pytest.raises(ValueError):
            LocalizeConfig(**bad)
    with pytest.raises(ValueError, match=r"unknown LocalizeConfig field\(s\)"):
        LocalizeConfig.from_dict({"lrate": 1.0})
    assert LocalizeConfig().resolved_top_k(1024) == 102 and LocalizeConfig().resolved_top_k(4) == 1
    with pytest.raises(ValueError, match=r"top_k must be in 1\.\.16"):
        LocalizeConfig(top_k=17).resolved_top_k(16)


def test_save_and_load(result, tmp_path, bridge):
    paths = result.save(tmp_path / "loc")
    for name in (SCORES_FILE, HEADS_FILE, CONFIG_FILE, HISTORY_FILE):
        assert (tmp_path / "loc" / name).is_file()
    assert set(paths) == {"scores", "heads", "config", "history"}
    pd.testing.assert_frame_equal(pd.read_csv(paths["scores"]), result.scores, check_dtype=False)
    assert LocalizeConfig.load_json(paths["config"]) == result.config
    record = json.loads(paths["heads"].read_text())
    assert record["strategy"] == "top-k" and record["k"] == 3 and len(record["scores"]) == 3
    assert load_heads(paths["heads"], bridge) == result.selected
    back = LocalizationResult.load(tmp_path / "loc")
    assert back.selected == result.selected and back.config == result.config


def test_load_heads_validates(tmp_path, bridge):
    good = write_heads(tmp_path / "good.json", [(3, 1), (0, 2)])
    assert load_heads(good, bridge) == [(3, 1), (0, 2)]
    (tmp_path / "bare.json").write_text("[[1, 1]]")
    assert load_heads(tmp_path / "bare.json", {"n_layers": 4, "n_heads": 4}) == [(1, 1)]
    bad = write_heads(tmp_path / "bad.json", [(0, 1), (2, 9)])
    with pytest.raises(ValueError, match=r"bad\.json: head 9 out of range for layer 2: valid heads are 0\.\.3"):
        load_heads(bad, bridge)
    worse = write_heads(tmp_path / "worse.json", [(12, 0)])
    with pytest.raises(ValueError, match=r"layer 12 out of range.*valid layers are 0\.\.3"):
        load_heads(worse, bridge)
    with pytest.raises(FileNotFoundError):
        load_heads(tmp_path / "missing.json", bridge)


# ----------------------------------------------------------------------- selection


def test_select_top_k_and_all():
    df = fake_scores()
    top = select_heads(df, "top-k", k=5)
    best = df.sort_values("score", ascending=False).head(5)
    assert top == sorted(zip(best["layer"], best["head"]))
    assert select_heads(df, "top-k") == select_heads(df, "top-k", k=1)  # LoFiT 10 % of 16 -> 1
    assert len(select_heads(df, "top-k", fraction=0.25)) == 4
    assert len(select_heads(df, "all")) == 16
    assert select_heads(df, "all", layers=[2]) == [(2, h) for h in range(4)]
    restricted = select_heads(df, "top-k", k=2, layers=[1])
    assert len(restricted) == 2 and all(l == 1 for l, _ in restricted)
    with pytest.raises(ValueError, match="only 16 candidate"):
        select_heads(df, "top-k", k=17)
    with pytest.raises(ValueError, match="unknown strategy"):
        select_heads(df, "best")
    with pytest.raises(ValueError, match="full"):
        select_heads(df.iloc[1:], "all")


def test_select_random_is_seeded():
    df = fake_scores(8, 8)
    a = select_heads(df, "random", fraction=0.25, seed=1)
    assert a == select_heads(df, "random", fraction=0.25, seed=1) and len(a) == 16
    assert a != select_heads(df, "random", fraction=0.25, seed=2)
    assert a == sorted(a) and len(set(a)) == 16
    for p, n in ((0.5, 32), (0.75, 48)):
        assert len(select_heads(df, "random", fraction=p)) == n
    assert len(select_heads(df, "random", k=3, layers=[5])) == 3
    with pytest.raises(ValueError, match="needs k or fraction"):
        select_heads(df, "random")


def test_layer_bands():
    assert layer_bands(4) == {"early": [0], "middle": [1, 2], "late": [3], "all-layers": [0, 1, 2, 3]}
    b32 = layer_bands(32)
    assert (b32["early"][-1], b32["middle"][0], b32["middle"][-1], b32["late"][0]) == (10, 11, 20, 21)
    assert sum(len(b32[k]) for k in ("early", "middle", "late")) == 32
    df = fake_scores(6, 4)
    assert select_heads(df, "early") == [(l, h) for l in (0, 1) for h in range(4)]
    assert select_heads(df, "late") == [(l, h) for l in (4, 5) for h in range(4)]
    mid = select_heads(df, "middle", k=3)
    ranked = df[df["layer"].isin([2, 3])].sort_values("score", ascending=False).head(3)
    assert mid == sorted(zip(ranked["layer"], ranked["head"]))
    assert len(select_heads(df, "early", k=100)) == 8  # at most k
    assert select_heads(df, "all-layers") == select_heads(df, "all")
    assert select_heads(df, "all-layers", k=5) == select_heads(df, "top-k", k=5)
    assert select_heads(df, "late", layers=[5, 0]) == [(5, h) for h in range(4)]
    with pytest.raises(ValueError, match="do not overlap"):
        select_heads(df, "late", layers=[0])
    with pytest.raises(ValueError, match="band is empty"):
        select_heads(fake_scores(1, 4), "early")


# ------------------------------------------------------------------------ plotting


def test_heatmap_figure(result):
    fig = sensitivity_heatmap(result.scores, result.selected, title="t")
    assert isinstance(fig, go.Figure)
    heat = fig.data[0]
    z = np.asarray(heat.z)
    assert z.shape == (N_LAYERS, N_HEADS)
    l, h = result.scores.sort_values("rank").iloc[0][["layer", "head"]].astype(int)
    assert z[l, h] == pytest.approx(result.scores["score"].max())
    stars = fig.data[1]
    assert stars.marker.symbol == "star" and len(stars.x) == len(result.selected) == 3
    assert set(zip(stars.y, stars.x)) == set(result.selected)
    assert fig.layout.xaxis.title.text == "head" and fig.layout.yaxis.title.text == "layer"
    assert len(sensitivity_heatmap(result.scores).data) == 1
    with pytest.raises(ValueError, match="outside"):
        sensitivity_heatmap(result.scores, [(9, 0)])


def test_heatmap_shows_absolute_scores_from_zero():
    df = fake_scores()
    df["score"] = 1e-4 + 1e-5 * df["score"]  # all near one small value: a flat map
    heat = sensitivity_heatmap(df).data[0]
    np.testing.assert_allclose(np.asarray(heat.z), score_grid(df))  # not rescaled
    assert heat.zmin == 0 and heat.zmax == pytest.approx(df["score"].max())
    assert heat.zmax - heat.zmin > 5 * (df["score"].max() - df["score"].min())
    zero = sensitivity_heatmap(df.assign(score=0.0)).data[0]
    assert (zero.zmin, zero.zmax) == (0, 1)


def test_export_html_and_png(result, tmp_path):
    fig = sensitivity_heatmap(result.scores, result.selected)
    problem = static_export_problem()
    formats = ("html", "png") if problem is None else ("html",)
    paths = save_figure(fig, tmp_path / "figs" / "heat", formats)
    html = paths["html"].read_text()
    assert paths["html"].name == "heat.html" and len(html) > 1_000_000  # plotly.js inlined
    assert "cdn.plot.ly" not in html.split("<body>")[0]
    if problem is None:
        assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        with pytest.raises(StaticExportError, match="Chromium"):
            save_figure(fig, tmp_path / "figs" / "heat2", ("png",))
    with pytest.raises(ValueError, match="unknown format"):
        save_figure(fig, tmp_path / "x", ("gif",))


def test_run_localize_on_shipped_micro_organism(tmp_path):
    from interp_unlearn.data.loading import CheckpointError, load_model
    from interp_unlearn.pipeline.localize_run import run_localize

    try:
        load_model("organism-micro")
    except CheckpointError:
        pytest.skip("organism-micro is not built")
    out = tmp_path / "micro"
    r = run_localize("organism-micro", 2, out, LocalizeConfig(steps=2, batch_size=4, seq_len=32),
                     formats=("html",), progress=False)
    assert len(r.selected) == 2 and r.meta["model"] == "organism-micro"
    assert r.meta["corpus"].startswith("world forget") and r.config.objective == ORGANISM_OBJECTIVE
    for name in (SCORES_FILE, HEADS_FILE, CONFIG_FILE, HISTORY_FILE, "head_sensitivity.html",
                 "stability.json"):
        assert (out / name).is_file()
    assert json.loads((out / HEADS_FILE).read_text())["heads"] == [list(h) for h in r.selected]
