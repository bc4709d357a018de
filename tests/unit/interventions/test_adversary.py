"""The live latent adversary (``interventions/adversary.py``) and what ALMPU / GA-MP /
RMU-LAT do with it, on the micro organism (one thread, each test well under 20 s)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from interp_unlearn.interventions.adversary import (HeadAdversary, ResidualAdversary,
                                                    measure_head_norms, measure_resid_norms,
                                                    memory_loss)
from interp_unlearn.data.loading import load_model
from interp_unlearn.unlearn import Trainer, UnlearnConfig
from interp_unlearn.unlearn.batches import TextBatches, resolve_corpus

pytestmark = pytest.mark.usefixtures("one_thread")

MICRO = "organism-micro"
HEADS = [(0, 1), (1, 0), (2, 1)]  # at or before micro's RMU layer ℓ = 2


@pytest.fixture(scope="module")
def batches(micro):
    texts = resolve_corpus("forget", micro.world_dir, "forget")
    stream = TextBatches(texts, micro.tokenizer, 4, 64, 0, True, "left")
    return [next(stream) for _ in range(2)]


def _no_hooks(model) -> bool:
    return all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


# ------------------------------------------------------------------------- mechanism


def test_radius_is_kappa_times_measured_head_norm(micro, batches):
    """The radius is κ·E‖z_{l,h}‖, and E‖z‖ equals an independent computation through
    the TransformerLens bridge's ``hook_z`` over real tokens."""
    from interp_unlearn.core.bridge import to_bridge

    norms = measure_head_norms(micro.model, batches)
    bridge = to_bridge(micro.model, micro.tokenizer)
    total = torch.zeros_like(norms)
    count = 0.0
    for b in batches:
        _, cache = bridge.run_with_cache(b.input_ids, attention_mask=b.attention_mask)
        m = b.attention_mask.float()
        for layer in range(norms.shape[0]):
            z = cache[f"blocks.{layer}.attn.hook_z"].float()         # [b, p, head, d_head]
            total[layer] += (z.norm(dim=-1) * m[..., None]).sum(dim=(0, 1))
        count += float(m.sum())
    torch.testing.assert_close(norms, total / count, rtol=1e-4, atol=1e-5)
    adv = HeadAdversary(micro.model, HEADS, batches=batches, kappa=0.7, objective="ce")
    expected = torch.stack([0.7 * norms[l, h] for l, h in HEADS])
    torch.testing.assert_close(adv.radii, expected)
    assert len(set(adv.radii.tolist())) == len(HEADS)  # per head, not one ε
    abs_adv = HeadAdversary(micro.model, HEADS, epsilon=2.5, objective="ce")
    assert abs_adv.radii.tolist() == [2.5] * len(HEADS)
    res = measure_resid_norms(micro.model, batches)
    lat = ResidualAdversary(micro.model, [1], batches=batches, kappa=0.2)
    torch.testing.assert_close(lat.radii, 0.2 * res[[1]])


def test_projection_keeps_each_head_in_its_own_ball(micro, batches):
    adv = HeadAdversary(micro.model, HEADS, batches=batches, kappa=1.0, objective="ce")
    with torch.no_grad():
        adv.param.copy_(torch.randn_like(adv.param) * 10)
        adv.param[1] = adv.param[1] / adv.param[1].norm() * 0.5 * adv.radii[1]  # inside
    inside = adv.param[1].clone()
    adv.project_()
    norms = adv.norms()
    assert bool((norms <= adv.radii * (1 + 1e-5)).all())
    assert torch.allclose(norms[[0, 2]], adv.radii[[0, 2]], rtol=1e-5)  # onto the sphere
    assert torch.equal(adv.param[1], inside)                            # unchanged
    assert adv.norm_stats()["frac_on_boundary"] == pytest.approx(2 / 3)


def test_zero_delta_is_identity_and_hooks_go_away(micro, batches):
    adv = HeadAdversary(micro.model, HEADS, epsilon=1.0, sigma=0.0, objective="ce")
    b = batches[0]
    with torch.no_grad():
        ref = micro.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        with adv.applied():
            assert not _no_hooks(micro.model)
            same = micro.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        adv.param.fill_(0.3)
        with adv.applied():
            moved = micro.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
    assert torch.equal(ref, same) and not torch.equal(ref, moved)
    with pytest.raises(RuntimeError, match="boom"):
        with adv.applied():
            raise RuntimeError("boom")
    assert _no_hooks(micro.model)
    lat = ResidualAdversary(micro.model, [0], epsilon=1.0, sigma=0.0)
    with pytest.raises(RuntimeError, match="boom"), lat.applied():
        raise RuntimeError("boom")
    assert _no_hooks(micro.model)


def test_memory_losses_scale_with_vocabulary():
    """kl and mse_sum are sums over the vocabulary; mse_mean (legacy) is mse_sum / V."""
    torch.manual_seed(0)
    logits, ref = torch.randn(2, 5, 50), torch.randn(2, 5, 50)
    mask = torch.ones(2, 5)
    ref_lp = torch.log_softmax(ref, -1)
    s = memory_loss(logits, ref_lp, mask, "mse_sum")
    m = memory_loss(logits, ref_lp, mask, "mse_mean")
    assert float(m) == pytest.approx(float(s) / 50, rel=1e-5)
    kl = memory_loss(logits, ref_lp, mask, "kl")
    want = torch.nn.functional.kl_div(torch.log_softmax(logits, -1), ref_lp, log_target=True,
                                      reduction="none").sum(-1).mean()
    assert float(kl) == pytest.approx(float(want), rel=1e-5)
    assert float(memory_loss(ref, ref_lp, mask, "kl")) == pytest.approx(0.0, abs=1e-6)


def test_steps_restore_what_they_target(micro, batches):
    """k ``ce`` steps lower the forget CE under δ; δ stays in its ball."""
    from interp_unlearn.interventions.adversary import forget_ce

    b = batches[0]
    adv = HeadAdversary(micro.model, HEADS, batches=batches, kappa=1.0, objective="ce",
                        steps=5, lr=0.2)
    with torch.no_grad():
        ce0 = float(forget_ce(adv.logits(b), b.input_ids, b.attention_mask))
    out = adv.step(b)
    with torch.no_grad():
        ce1 = float(forget_ce(adv.logits(b), b.input_ids, b.attention_mask))
    assert ce1 < ce0 and set(out) == {"delta_ce", "delta_reg"}
    assert bool((adv.norms() <= adv.radii * (1 + 1e-5)).all()) and _no_hooks(micro.model)
    assert not adv.param.requires_grad


# ------------------------------------------------------------------ the unlearning runs


def _run(tmp_path, method, params, steps, heads=HEADS, **config):
    cfg = UnlearnConfig(method=method, max_num_batches=steps, progress=False, evaluate=False,
                        params=params, **config)
    lm = load_model(MICRO)
    return Trainer(lm, cfg, heads=heads, out_dir=tmp_path / method).run()


# a short run that still forgets: 30 steps of 4 x 64 tokens at a higher θ rate (the micro
# preset's 80 x 8 x 128 would take ~1 min); heads before, at and after micro's ℓ = 2
SHORT = dict(lr=2e-2, batch_size=4, seq_len=64)
SHORT_HEADS = [(1, 0), (2, 1), (3, 2)]


def test_almpu_new_defaults_alive_and_legacy_inert(tmp_path):
    """The diagnostic can fail: the same short ALMPU run is alive with the defaults and
    reported inert with the legacy adversary (vocabulary-averaged MSE, λ_reg = 1e-4, one
    step per θ step). Measured (seed 42): median ‖δ‖/ε 1.0 and answer log-prob gain
    +0.096 vs median 0.06."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a live run must not warn
        res = _run(tmp_path / "new", "almpu", {}, 30, SHORT_HEADS, **SHORT)
    diag = json.loads((res.out_dir / "diagnostics.json").read_text())
    assert diag["adversary_alive"] is True, diag
    assert diag["delta_over_eps_median"] >= 0.5 and diag["adversary_gain_logprob"] > 0
    assert {"adversary_gain", "adversary_gain_choice_logprob", "frac_on_boundary",
            "restores_ranking"} <= set(diag)
    assert diag["gain_pool"] == "forget-attack (held out)"  # micro is scored on practice
    assert [(r["layer"], r["head"]) for r in diag["per_head"]] == SHORT_HEADS
    lines = [json.loads(x) for x in (res.out_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["diagnostics"]["adversary_alive"] is True
    legacy = {"memory_loss": "mse_mean", "lambda_reg": 1e-4, "delta_steps": 1}
    with pytest.warns(RuntimeWarning, match="INERT"):
        res = _run(tmp_path / "old", "almpu", legacy, 20, SHORT_HEADS, **SHORT)
    diag = json.loads((res.out_dir / "diagnostics.json").read_text())
    assert diag["adversary_alive"] is False and diag["delta_over_eps_median"] < 0.1, diag


def test_output_weight_lets_heads_after_the_rmu_layer_matter(tmp_path):
    """With δ only at a head after ℓ = 2, ALMPU's θ equals RMU's (the early-stopped RMU
    forward never reaches it); the output-level extension (output_weight > 0) changes θ."""
    out = {}
    for name, method, params in (("rmu", "rmu", {}), ("late", "almpu", {}),
                                 ("late_out", "almpu", {"output_weight": 0.5})):
        lm = load_model(MICRO)
        cfg = UnlearnConfig(method=method, max_num_batches=3, progress=False, evaluate=False,
                            params=params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "θ follows plain RMU"
            Trainer(lm, cfg, heads=[(3, 2)] if method == "almpu" else None,
                    out_dir=tmp_path / name).run()
        out[name] = {k: v.clone() for k, v in lm.model.state_dict().items()}
    assert all(torch.equal(out["rmu"][k], out["late"][k]) for k in out["rmu"])
    assert not all(torch.equal(out["rmu"][k], out["late_out"][k]) for k in out["rmu"])


def test_ga_mp_bridge_backend_equals_hf(tmp_path):
    """GA-MP's bridge path (δ through ``attach(bridge, adv.delta)``) trains the same θ and δ
    as the HF ``o_proj`` hooks."""
    out = {}
    for backend in ("hf", "bridge"):
        lm = load_model(MICRO)
        cfg = UnlearnConfig(method="ga_mp", max_num_batches=2, progress=False, evaluate=False,
                            params={"backend": backend})
        tr = Trainer(lm, cfg, heads=[(0, 1), (1, 0)], out_dir=tmp_path / backend)
        tr.run()
        out[backend] = ({k: v.clone() for k, v in lm.model.state_dict().items()},
                        tr.method.adv.param.detach().clone())
    (w_hf, d_hf), (w_br, d_br) = out["hf"], out["bridge"]
    w0 = load_model(MICRO).model.state_dict()
    moved = sum(float((w_hf[k] - w0[k]).abs().sum()) for k in w_hf)
    diff = sum(float((w_hf[k] - w_br[k]).abs().sum()) for k in w_hf)
    # every weight is trained with Adam, whose first steps are ±lr for any gradient sign,
    # so a ~1e-6 forward difference can flip a few near-zero-gradient entries: compare in
    # aggregate (measured: total |Δ| 9e-4 against 222 moved; δ within 6e-6)
    assert diff <= 1e-4 * moved, (diff, moved)
    assert float((d_hf - d_br).abs().max()) <= 1e-4 and float(d_hf.abs().max()) > 0


def test_rmu_writes_no_adversary_diagnostics(tmp_path):
    res = _run(tmp_path, "rmu", {}, 2, heads=None)
    assert not (res.out_dir / "diagnostics.json").exists()
    lines = (res.out_dir / "metrics.jsonl").read_text()
    assert "delta_over_eps" not in lines and "adversary" not in lines


BAD = [
    ("almpu", {"kappa": 0}, r"kappa must be .*> 0"),
    ("almpu", {"kappa": float("inf")}, r"kappa must be .*finite"),
    ("almpu", {"epsilon": -1.0}, r"epsilon must be None or a finite number > 0"),
    ("almpu", {"delta_steps": 0}, r"delta_steps must be an int in 1\.\.100"),
    ("almpu", {"delta_steps": 2.5}, r"delta_steps must be an int in 1\.\.100"),
    ("ga_mp", {"delta_steps": 101}, r"delta_steps must be an int in 1\.\.100"),
    ("almpu", {"lambda_reg": -1e-4}, r"lambda_reg must be a finite number >= 0"),
    ("almpu", {"adv_objective": "maximise"}, r"adv_objective must be one of \('match', 'ce'\)"),
    ("rmu_lat", {"memory_loss": "l1"}, r"memory_loss must be one of \('kl', 'mse_sum'"),
    ("almpu", {"delta_optimizer": "lion"}, r"delta_optimizer must be one of"),
    ("rmu_lat", {"lat_layer": 3}, r"lat_layer must be an int in 0\.\.2"),
    ("rmu_lat", {"backend": "bridge"}, r"backend must be 'hf' for rmu_lat"),
    ("ga_mp", {"output_weight": 1.0}, r"output_weight must be 0 for ga_mp"),
]


@pytest.mark.parametrize("method,params,match", BAD)
def test_bad_adversary_options_raise_before_training(tmp_path, method, params, match):
    lm = load_model(MICRO)
    cfg = UnlearnConfig(method=method, max_num_batches=2, progress=False, evaluate=False,
                        params=params)
    heads = HEADS if method == "almpu" else None
    with pytest.raises(ValueError, match=match):
        Trainer(lm, cfg, heads=heads, out_dir=tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists() and _no_hooks(lm.model)


def test_heads_outside_the_model_raise(tmp_path, micro):
    with pytest.raises(ValueError, match=r"valid heads are 0\.\.3"):
        HeadAdversary(micro.model, [(1, 4)], epsilon=1.0, objective="ce")
    lm = load_model(MICRO)
    with pytest.raises(ValueError, match=r"layer 5 out of range \(head \(5, 0\)\)"):
        Trainer(lm, UnlearnConfig(method="ga_mp", max_num_batches=2, progress=False),
                heads=[(5, 0)], out_dir=tmp_path)


def test_rmu_lat_runs_and_forgets(tmp_path):
    """RMU-LAT on micro with the short config: forget accuracy (practice pool) drops by
    ≥ 15 points, retain within 10, and the residual adversary is alive. Measured (seed 42):
    forget 0.856 -> 0.600, retain 0.771 -> 0.693, ‖δ‖/ε 1.0, answer log-prob gain +0.18."""
    lm = load_model(MICRO)
    cfg = UnlearnConfig(method="rmu_lat", max_num_batches=30, progress=False, **SHORT)
    res = Trainer(lm, cfg, out_dir=tmp_path / "lat").run()
    assert res.after["forget"] <= res.before["forget"] - 0.15, (res.before, res.after)
    assert res.after["retain"] >= res.before["retain"] - 0.10, (res.before, res.after)
    diag = json.loads((res.out_dir / "diagnostics.json").read_text())
    assert diag["adversary"] == "ResidualAdversary" and diag["lat_layer"] == 0
    assert diag["adversary_alive"] is True, diag
