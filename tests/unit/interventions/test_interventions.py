"""interp_unlearn.interventions (HeadScale, HeadPerturbation, HeadAblation, attach) and
interp_unlearn.causal, as oracle tests on a tiny config-built Llama."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from interp_unlearn.core.bridge import active_hook_count, hook_z_name, to_bridge
from interp_unlearn.evaluation.causal import ABLATION_COLUMNS, BridgeLM, ablation_table
from interp_unlearn.evaluation.scoring import EvalConfig, evaluate_mcq
from interp_unlearn.interventions import (HeadAblation, HeadPerturbation, HeadScale, attach,
                                          mean_head_outputs, validate_heads)

N_LAYERS, N_HEADS, D_HEAD = 4, 4, 16


@pytest.fixture(scope="module")
def bridge(model, tokenizer):
    return to_bridge(model, tokenizer)


@pytest.fixture(scope="module")
def batch(world, tokenizer):
    enc = tokenizer(world.documents("forget")[:3], padding=True, truncation=True,
                    max_length=24, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def run(bridge, batch, *interventions):
    ids, mask = batch
    with torch.no_grad(), attach(bridge, *interventions):
        return bridge(ids, attention_mask=mask)


@pytest.fixture(scope="module")
def clean_logits(bridge, batch):
    return run(bridge, batch)


# ----------------------------------------------------------------- identities (oracles)


def test_head_scale_zero_is_identity(bridge, batch, clean_logits):
    scale = HeadScale.for_model(bridge, sigma=0.0)
    assert torch.count_nonzero(scale.A) == 0
    assert torch.equal(run(bridge, batch, scale), clean_logits)


def test_head_perturbation_zero_is_identity(bridge, batch, clean_logits):
    pert = HeadPerturbation.for_model(bridge, [(0, 1), (2, 3)], sigma=0.0)
    assert torch.equal(run(bridge, batch, pert), clean_logits)


def test_head_scale_minus_one_equals_zero_ablation(bridge, batch, clean_logits):
    scale = HeadScale.for_model(bridge, sigma=0.0)
    with torch.no_grad():
        scale.A[2, 1] = -1.0
    scaled = run(bridge, batch, scale)
    ablated = run(bridge, batch, HeadAblation([(2, 1)], mode="zero"))
    assert (scaled - clean_logits).abs().max() > 1e-4  # the head matters
    torch.testing.assert_close(scaled, ablated, rtol=0, atol=1e-6)


def test_nonzero_interventions_change_logits(bridge, batch, clean_logits):
    for iv in (HeadScale.for_model(bridge, sigma=0.5, seed=1),
               HeadPerturbation.for_model(bridge, [(1, 0)], sigma=1.0, seed=1)):
        assert (run(bridge, batch, iv) - clean_logits).abs().max() > 1e-4


def test_perturbation_adds_delta_to_exactly_its_heads():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, 5, N_HEADS, D_HEAD, generator=gen)
    pert = HeadPerturbation([(1, 2), (1, 0), (3, 3)], D_HEAD, sigma=1.0, seed=3)
    out = pert(z, 1)
    diff = out - z
    torch.testing.assert_close(diff[:, :, 2], pert.delta[0].detach().expand(2, 5, -1))
    torch.testing.assert_close(diff[:, :, 0], pert.delta[1].detach().expand(2, 5, -1))
    assert torch.count_nonzero(diff[:, :, [1, 3]]) == 0
    assert torch.equal(pert(z, 0), z)  # no selected head in layer 0


def test_head_scale_forward_is_elementwise():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, N_HEADS, D_HEAD, generator=gen)
    scale = HeadScale(N_LAYERS, N_HEADS, D_HEAD, sigma=0.3, seed=5)
    torch.testing.assert_close(scale(z, 2), z * (1 + scale.A[2].detach()))
    torch.testing.assert_close(scale.scores(), scale.A.detach().norm(dim=-1))
    assert scale.scores().shape == (N_LAYERS, N_HEADS)


def test_mean_ablation_replaces_head_by_batch_mean(bridge, batch):
    ids, mask = batch
    seen = {}

    def grab(z, hook):
        seen["z"] = z.detach().clone()

    with torch.no_grad():
        with bridge.hooks(fwd_hooks=[(hook_z_name(1, bridge), grab)]):
            bridge(ids, attention_mask=mask)
        clean = seen["z"]
        with attach(bridge, HeadAblation([(1, 3)], mode="mean")):
            with bridge.hooks(fwd_hooks=[(hook_z_name(1, bridge), grab)]):  # runs after the ablation
                bridge(ids, attention_mask=mask)
    ablated = seen["z"]
    expected = clean[:, :, 3].mean(dim=(0, 1))
    torch.testing.assert_close(ablated[:, :, 3], expected.expand_as(ablated[:, :, 3]))
    torch.testing.assert_close(ablated[:, :, :3], clean[:, :, :3])


def test_mean_ablation_with_fixed_means(bridge, batch):
    means = mean_head_outputs(bridge, [batch])
    assert means.shape == (N_LAYERS, N_HEADS, D_HEAD)
    full = HeadAblation([(0, 2), (3, 1)], mode="mean", means=means)
    rows = HeadAblation([(0, 2), (3, 1)], mode="mean", means=torch.stack([means[0, 2], means[3, 1]]))
    torch.testing.assert_close(run(bridge, batch, full), run(bridge, batch, rows))
    z = torch.zeros(1, 2, N_HEADS, D_HEAD)
    torch.testing.assert_close(full(z, 3)[0, 1, 1], means[3, 1])


def test_init_is_seeded():
    a = HeadScale(N_LAYERS, N_HEADS, D_HEAD, sigma=1e-3, seed=7).A
    b = HeadScale(N_LAYERS, N_HEADS, D_HEAD, sigma=1e-3, seed=7).A
    c = HeadScale(N_LAYERS, N_HEADS, D_HEAD, sigma=1e-3, seed=8).A
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 5e-4 < float(a.detach().std()) < 2e-3
    d1 = HeadPerturbation([(0, 0), (1, 1)], D_HEAD, sigma=0.1, seed=3).delta
    d2 = HeadPerturbation([(0, 0), (1, 1)], D_HEAD, sigma=0.1, seed=3).delta
    assert torch.equal(d1, d2) and d1.shape == (2, D_HEAD)


# -------------------------------------------------------------------------- gradients


@pytest.fixture
def frozen(model):
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
        p.grad = None
    yield model
    for p, f in zip(model.parameters(), flags):
        p.requires_grad_(f)


def test_gradients_reach_only_intervention_parameters(frozen, bridge, batch):
    ids, mask = batch
    scale = HeadScale.for_model(bridge, sigma=1e-3)
    pert = HeadPerturbation.for_model(bridge, [(0, 0), (3, 2)], sigma=1e-3)
    with attach(bridge, scale, pert):
        bridge(ids, attention_mask=mask).float().logsumexp(-1).mean().backward()
    assert scale.A.grad is not None and scale.A.grad.abs().sum() > 0
    assert pert.delta.grad is not None and (pert.delta.grad.abs().sum(-1) > 0).all()
    assert all(p.grad is None for p in frozen.parameters())
    assert all(p.grad is None for p in bridge.parameters())


# ----------------------------------------------------------------------- hook hygiene


def test_hooks_removed_after_exit_and_exception(bridge, batch, clean_logits):
    before = active_hook_count(bridge)
    scale = HeadScale.for_model(bridge, sigma=0.5)
    with attach(bridge, scale, HeadAblation([(1, 1)])):
        assert active_hook_count(bridge) == before + N_LAYERS + 1
    assert active_hook_count(bridge) == before
    with pytest.raises(RuntimeError, match="boom"):
        with attach(bridge, scale):
            raise RuntimeError("boom")
    assert active_hook_count(bridge) == before

    class Exploding:
        def fwd_hooks(self, model=None):
            def fn(z, hook):
                raise ValueError("hook exploded")
            return [(hook_z_name(2, model), fn)]

    with pytest.raises(ValueError, match="hook exploded"):
        run(bridge, batch, scale, Exploding())
    assert active_hook_count(bridge) == before
    assert torch.equal(run(bridge, batch), clean_logits)


def test_attach_keeps_callers_hooks(bridge, batch):
    before = active_hook_count(bridge)
    with bridge.hooks(fwd_hooks=[(hook_z_name(0, bridge), lambda z, hook: None)]):
        with attach(bridge, HeadAblation([(0, 0)])):
            assert active_hook_count(bridge) == before + 2
        assert active_hook_count(bridge) == before + 1
    assert active_hook_count(bridge) == before


def test_attach_rejects_non_bridge(model):
    with pytest.raises(TypeError, match="TransformerBridge"):
        with attach(model, HeadAblation([(0, 0)])):
            pass


# ------------------------------------------------------------------------- validation


def test_out_of_range_heads_raise_with_range(bridge):
    before = active_hook_count(bridge)
    with pytest.raises(ValueError, match=r"head 9 out of range for layer 2: valid heads are 0\.\.3"):
        with attach(bridge, HeadAblation([(2, 9)])):
            pass
    with pytest.raises(ValueError, match=r"layer 7 out of range.*valid layers are 0\.\.3"):
        with attach(bridge, HeadPerturbation([(7, 0)], D_HEAD)):
            pass
    with pytest.raises(ValueError, match=r"valid heads are 0\.\.3"):
        HeadPerturbation.for_model(bridge, [(0, 4)])
    with pytest.raises(ValueError, match=r"5 layers x 4 heads.*valid layers 0\.\.3"):
        with attach(bridge, HeadScale(5, N_HEADS, D_HEAD)):
            pass
    with pytest.raises(ValueError, match="d_head=8"):
        with attach(bridge, HeadPerturbation([(0, 0)], 8)):
            pass
    assert active_hook_count(bridge) == before  # nothing was attached


def test_head_list_checks():
    with pytest.raises(ValueError, match="listed twice"):
        HeadPerturbation([(0, 1), (0, 1)], D_HEAD)
    with pytest.raises(ValueError, match="no heads"):
        HeadAblation([])
    with pytest.raises(TypeError, match="pair"):
        HeadAblation([(0, 1, 2)])
    with pytest.raises(ValueError, match="mode"):
        HeadAblation([(0, 1)], mode="resample")
    assert validate_heads([[1, 2]], {"n_layers": 4, "n_heads": 4}) == [(1, 2)]


def test_project_keeps_delta_in_ball():
    pert = HeadPerturbation([(0, 0), (1, 1), (2, 2)], D_HEAD, sigma=1.0, seed=0)
    with torch.no_grad():
        pert.delta[1] *= 1e-3  # already inside: must not change
    inside = pert.delta[1].detach().clone()
    big = pert.delta[0].detach().clone()
    eps = 0.5
    assert pert.project_(eps) is pert
    norms = pert.norms()
    assert (norms <= eps + 1e-6).all()
    torch.testing.assert_close(norms[[0, 2]], torch.full((2,), eps))
    assert torch.equal(pert.delta[1].detach(), inside)
    torch.testing.assert_close(pert.delta[0].detach(), big * eps / big.norm())  # same direction
    pert.project_(0.0)
    assert torch.count_nonzero(pert.delta) == 0


# ------------------------------------------------------------------------------ causal


def test_ablation_table(bridge, tokenizer, world):
    forget, retain = world.mcq("forget")[:4], world.mcq("retain")[:4]
    df = ablation_table(bridge, tokenizer, forget, retain, [(1, 0), (2, 3)], n_random=2, seed=0)
    assert list(df.columns) == ABLATION_COLUMNS
    assert list(df["condition"]) == ["none", "selected", "random"]
    assert list(df["k"]) == [0, 2, 2] and df.loc[2, "n_draws"] == 2
    cfg = EvalConfig(scoring="cloze")
    assert df.loc[0, "forget_acc"] == evaluate_mcq(BridgeLM(bridge), tokenizer, forget, cfg).accuracy
    assert df.loc[0, "retain_acc"] == evaluate_mcq(BridgeLM(bridge), tokenizer, retain, cfg).accuracy
    assert df.loc[0, "forget_drop"] == 0.0
    draws = df.loc[2, "heads"]
    assert len(draws) == 2 and all(len(d) == 2 for d in draws)
    assert all([1, 0] not in d and [2, 3] not in d for d in draws)  # drawn outside the selection
    again = ablation_table(bridge, tokenizer, forget, retain, [(1, 0), (2, 3)], n_random=2,
                           seed=0, mode="zero")
    assert again.loc[2, "heads"] == draws  # seeded
    assert pd.isna(df.loc[0, "forget_acc_sd"])
    with pytest.raises(ValueError, match="valid heads are 0..3"):
        ablation_table(bridge, tokenizer, forget, retain, [(0, 4)], n_random=0)
