"""The baselines ALMPU must beat: Adaptive RMU (Dang et al. 2024) and NPO + SAM (Fan et al.
2025), on the micro organism.

Oracles: Adaptive RMU's target is β times the frozen residual norm (computed here from an
independent full forward with ``output_hidden_states``), so doubling the activation doubles
it; NPO + SAM's gradient equals a two-pass SAM gradient computed by hand with
``torch.func.functional_call``, and ρ → 0 gives NPO's gradient. Forgetting on the micro
organism is checked in ``tests/unit/unlearn/test_unlearn.py::test_method_forgets_and_retains`` (same
bounds as every method: forget −15 points, retain within 10).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.func import functional_call

from interp_unlearn.pipeline.cli import main
from interp_unlearn.data.loading import load_model
from interp_unlearn.unlearn import Trainer, UnlearnConfig
from interp_unlearn.unlearn.methods.adaptive_rmu import AdaptiveRMUParams, adaptive_coefficient
from interp_unlearn.unlearn.methods.npo import npo_loss
from interp_unlearn.unlearn.methods.npo_sam import sam_surrogate
from interp_unlearn.unlearn.trainer import sequence_logprob

pytestmark = pytest.mark.usefixtures("one_thread")

MICRO = "organism-micro"


def _trainer(method: str, tmp_path, **params) -> Trainer:
    cfg = UnlearnConfig(method=method, max_num_batches=2, progress=False, evaluate=False,
                        params=params)
    return Trainer(load_model(MICRO), cfg, out_dir=tmp_path / method)


def _forget_batch(tr: Trainer):
    """The next forget batch of the run (padded as the method's runs pad)."""
    return next(tr.forget_stream)


# ------------------------------------------------------------------------- adaptive RMU


def test_adaptive_coefficient_is_beta_times_mean_token_norm():
    h = torch.zeros(2, 3, 4)
    h[0, :, 0] = torch.tensor([3.0, 4.0, 5.0])   # token norms 3, 4, 5 -> mean 4
    h[1, :, 1] = torch.tensor([1.0, 1.0, 10.0])  # 1, 1, 10 -> mean 4
    assert float(adaptive_coefficient(h, 2.5, "first_batch")) == pytest.approx(10.0)
    assert float(adaptive_coefficient(h, 2.5, "batch")) == pytest.approx(10.0)
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])   # real-token means 3.5 and 5.5
    assert float(adaptive_coefficient(h, 2.0, "batch", mask)) == pytest.approx(9.0)
    tok = adaptive_coefficient(h, 2.0, "token")
    assert tok.shape == (2, 3, 1)
    assert torch.allclose(tok[..., 0], 2.0 * h.norm(dim=-1))
    for mode in ("first_batch", "batch", "token"):  # linear in the activation
        assert torch.allclose(adaptive_coefficient(2 * h, 1.5, mode),
                              2 * adaptive_coefficient(h, 1.5, mode))


@pytest.mark.parametrize("mode", ["first_batch", "token"])
def test_adaptive_rmu_target_scales_with_frozen_residual_norm(tmp_path, mode):
    tr = _trainer("adaptive_rmu", tmp_path, norm=mode)
    m = tr.method
    ell, beta = m.params.layer, m.params.beta
    batch = _forget_batch(tr)
    # independent oracle: the untouched model's residual output of layer ℓ
    ref = load_model(MICRO).model
    with torch.no_grad():
        h = ref(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                output_hidden_states=True).hidden_states[ell + 1]
    target = m.target(batch)
    assert float(m.unit.norm()) == pytest.approx(1.0, rel=1e-5)
    if mode == "first_batch":
        want = beta * h.norm(dim=-1).mean()
        assert float(target.norm()) == pytest.approx(float(want), rel=1e-4)
    else:
        assert torch.allclose(target.norm(dim=-1), beta * h.norm(dim=-1), rtol=1e-4)
    # doubling the frozen activation doubles the target
    m.coeff = None
    orig = m.frozen_activation
    m.frozen_activation = lambda b: 2 * orig(b)
    assert torch.allclose(m.target(batch).norm(dim=-1), 2 * target.norm(dim=-1), rtol=1e-5)


def test_adaptive_rmu_first_batch_coefficient_is_fixed(tmp_path):
    tr = _trainer("adaptive_rmu", tmp_path)
    tr.train_step()
    c1 = float(tr.method.coeff)
    tr.train_step()  # another batch: the coefficient stays (authors' code)
    assert float(tr.method.coeff) == c1 and c1 > 0
    tr2 = _trainer("adaptive_rmu", tmp_path / "b", norm="batch")
    tr2.train_step()
    b1 = float(tr2.method.coeff)
    tr2.train_step()
    assert b1 == pytest.approx(c1) and float(tr2.method.coeff) != b1


# ------------------------------------------------------------------------------ NPO+SAM


def _npo(model_params: dict, model, batch, logp_ref, beta):
    logits = functional_call(model, model_params, (),
                             dict(input_ids=batch.input_ids,
                                  attention_mask=batch.attention_mask, use_cache=False)).logits
    return npo_loss(sequence_logprob(logits, batch), logp_ref, beta)


def _method_forget_grad(tr: Trainer, batch) -> dict[str, torch.Tensor]:
    before = {n: p.detach().clone() for n, p in tr.trainable.items()}
    terms = tr.method.loss_terms(1, batch, None)
    assert set(terms) == {"forget"}
    terms["forget"].backward()
    for n, p in tr.trainable.items():  # the weights are restored exactly
        assert torch.equal(p.detach(), before[n]), n
    return {n: p.grad.detach().clone() for n, p in tr.trainable.items()}


def _drifted(tr: Trainer) -> None:
    """Move the model off the reference (at θ = θ_ref NPO's gradient is a plain NLL
    gradient; a few steps make the test less special)."""
    tr.train_step()
    tr.train_step()


def test_npo_sam_gradient_equals_hand_computed_two_pass_sam(tmp_path):
    rho = 0.05
    tr = _trainer("npo_sam", tmp_path, rho=rho)
    _drifted(tr)
    batch = _forget_batch(tr)
    got = _method_forget_grad(tr, batch)

    model, beta = tr.model, tr.method.params.beta
    names = list(tr.trainable)
    with torch.no_grad():
        logp_ref = sequence_logprob(tr.method.ctx.reference(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch)
    theta = {n: tr.trainable[n].detach().clone().requires_grad_(True) for n in names}
    g = torch.autograd.grad(_npo(theta, model, batch, logp_ref, beta), list(theta.values()))
    norm = torch.sqrt(sum((x ** 2).sum() for x in g))
    pert = {n: (theta[n] + rho * gi / norm).detach().requires_grad_(True)
            for n, gi in zip(names, g)}
    g_sam = torch.autograd.grad(_npo(pert, model, batch, logp_ref, beta),
                                list(pert.values()))
    flat = lambda xs: torch.cat([x.reshape(-1) for x in xs])  # noqa: E731
    want, have, plain = flat(g_sam), flat([got[n] for n in names]), flat(g)
    assert torch.allclose(have, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()))
    # the ascent step matters: the SAM gradient is not NPO's
    assert float((have - plain).norm()) > 0.05 * float(plain.norm())


def test_npo_sam_rho_to_zero_is_npo(tmp_path):
    tr = _trainer("npo_sam", tmp_path, rho=1e-7)
    _drifted(tr)
    batch = _forget_batch(tr)
    got = _method_forget_grad(tr, batch)
    names = list(tr.trainable)
    with torch.no_grad():
        logp_ref = sequence_logprob(tr.method.ctx.reference(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch)
    theta = {n: tr.trainable[n].detach().clone().requires_grad_(True) for n in names}
    g = torch.autograd.grad(_npo(theta, tr.model, batch, logp_ref, tr.method.params.beta),
                            list(theta.values()))
    flat = lambda xs: torch.cat([x.reshape(-1) for x in xs])  # noqa: E731
    want, have = flat(g), flat([got[n] for n in names])
    assert float((have - want).norm()) <= 1e-3 * float(want.norm())


def test_sam_surrogate_value_and_gradient():
    p = [torch.randn(3, requires_grad=True), torch.randn(2, 2, requires_grad=True)]
    g = [torch.randn(3), torch.randn(2, 2)]
    s = sam_surrogate(torch.tensor(7.5), g, p)
    assert float(s.detach()) == pytest.approx(7.5)
    s.backward()
    assert torch.equal(p[0].grad, g[0]) and torch.equal(p[1].grad, g[1])


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("method,params,match", [
    ("npo_sam", {"rho": 0}, r"rho .*\(0, inf\)"),
    ("npo_sam", {"rho": -0.1}, r"rho .*\(0, inf\)"),
    ("npo_sam", {"rho": float("nan")}, "rho"),
    ("npo_sam", {"beta": 0}, r"beta .*\(0, inf\)"),
    ("npo_sam", {"retain_weight": -1}, r"retain_weight .*\[0, inf\)"),
    ("adaptive_rmu", {"beta": 0}, r"beta .*\(0, inf\)"),
    ("adaptive_rmu", {"beta": -2.0}, r"beta .*\(0, inf\)"),
    ("adaptive_rmu", {"beta": math.inf}, "beta"),
    ("adaptive_rmu", {"alpha": -1}, r"alpha .*\[0, inf\)"),
    ("adaptive_rmu", {"norm": "sequence"}, "norm must be one of"),
    ("adaptive_rmu", {"layer": 9}, r"0\.\.3"),
])
def test_bad_parameters_raise_before_training(tmp_path, method, params, match):
    lm = load_model(MICRO)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    cfg = UnlearnConfig(method=method, max_num_batches=2, progress=False, evaluate=False,
                        params=params)
    with pytest.raises(ValueError, match=match):
        Trainer(lm, cfg, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    after = lm.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_params_validate_on_construction():
    with pytest.raises(ValueError, match="beta"):
        AdaptiveRMUParams(beta=0.0)


# ------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("method", ["adaptive-rmu", "npo-sam"])
def test_cli_runs(tmp_path, capsys, method):
    out = tmp_path / method
    rc = main(["unlearn", "--method", method, "--model", MICRO, "--steps", "2",
               "--out", str(out), "--threads", "1", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["config"]["method"] == method.replace("-", "_")
    assert res["config"]["preset"] == "organism-micro"
    assert (out / "model.safetensors").exists()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    key = "coeff" if method == "adaptive-rmu" else "cos_g_gsam"
    assert key in lines[-1]
    if method == "npo-sam":  # per-step SAM diagnostics, logged but not trained on
        steps = [x["loss"] for x in lines if "loss" in x]
        assert len(steps) == 2
        assert all(-1.0 <= x["sam_cos_g_gsam"] <= 1.0 and x["sam_grad_norm"] > 0
                   for x in steps)
        assert all(x["total"] == pytest.approx(x["forget"] + x.get("retain", 0.0))
                   for x in steps)
