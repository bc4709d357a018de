"""interp_unlearn.nnsight_backend: head interventions through nnsight, and localization with
``backend="nnsight"`` against the TransformerLens backend on the micro organism."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

from interp_unlearn.core.bridge import to_bridge
from interp_unlearn.pipeline.cli import main
from interp_unlearn.interventions import HeadAblation, HeadPerturbation, HeadScale, attach
from interp_unlearn.localize import LocalizeConfig, localize
from interp_unlearn.interventions.nnsight_backend import NNsightHeads, find_out_proj
from interp_unlearn.data.world import World

torch.set_num_threads(1)
FAST = dict(steps=6, batch_size=4, seq_len=64, top_k=3, seed=5, sigma_A=1e-2, lr=2e-2)


@pytest.fixture(scope="module")
def eager(micro):
    """The micro organism with eager attention (what the bridge computes, bit for bit)."""
    model = copy.deepcopy(micro.model)
    model.set_attn_implementation("eager")
    return model


@pytest.fixture(scope="module")
def texts(micro):
    return World.load(micro.world_dir).documents("forget")[:24]


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 500, (3, 20), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 14:] = 0  # right padding, as localize collates
    return ids, mask


def _plain(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


# ------------------------------------------------------------------ the intervention


def test_out_proj_of_llama_is_o_proj(micro):
    assert find_out_proj(micro.model) == "model.layers.{layer}.self_attn.o_proj"


def test_scale_zero_is_identity(micro, batch):
    ids, mask = batch
    heads = NNsightHeads(micro.model)
    out = heads.forward(ids, mask, HeadScale.for_model(micro.model, sigma=0.0))
    assert torch.equal(out, _plain(micro.model, ids, mask))


def test_same_place_as_hook_z(eager, micro, batch):
    """Random scale, perturbation and ablation: bit-identical to the bridge's hook_z hooks
    under eager attention (the bridge's own attention), ~1e-5 under the default sdpa."""
    ids, mask = batch
    ivs = [HeadScale.for_model(eager, sigma=0.3, seed=1),
           HeadPerturbation.for_model(eager, [(1, 2), (3, 0)], sigma=0.5, seed=2),
           HeadAblation([(2, 1)])]
    bridge = to_bridge(eager, micro.tokenizer)
    with torch.no_grad():
        for iv in ivs:
            with attach(bridge, iv):
                tl = bridge(ids, attention_mask=mask)
            nn_eager = NNsightHeads(eager).forward(ids, mask, iv)
            assert torch.equal(nn_eager, tl), type(iv).__name__
            assert not torch.equal(nn_eager, _plain(eager, ids, mask))
            nn_sdpa = NNsightHeads(micro.model).forward(ids, mask, iv)
            real = mask.bool()
            torch.testing.assert_close(nn_sdpa[real], tl[real], atol=1e-4, rtol=1e-4)


def test_minus_one_scale_zero_ablates(micro, batch):
    ids, mask = batch
    scale = HeadScale.for_model(micro.model, sigma=0.0)
    with torch.no_grad():
        scale.A[2, 3] = -1.0
    heads = NNsightHeads(micro.model)
    with torch.no_grad():
        torch.testing.assert_close(heads.forward(ids, mask, scale),
                                   heads.forward(ids, mask, HeadAblation([(2, 3)])),
                                   atol=1e-6, rtol=0)


def test_gradients_reach_only_the_intervention(micro, batch):
    ids, mask = batch
    scale = HeadScale.for_model(micro.model, sigma=1e-3)
    flags = {n: p.requires_grad for n, p in micro.model.named_parameters()}
    for p in micro.model.parameters():
        p.requires_grad_(False)
    try:
        with NNsightHeads(micro.model).applied(scale) as forward:
            forward(ids, mask).logsumexp(-1).sum().backward()
    finally:
        for n, p in micro.model.named_parameters():
            p.requires_grad_(flags[n])
    assert scale.A.grad is not None and scale.A.grad.abs().sum() > 0
    assert all(p.grad is None for p in micro.model.parameters())


class _Boom:
    """An intervention that fails in layer 2, after layers 0-1 were edited."""

    n_layers = 4

    def forward(self, z, layer):
        if layer == 2:
            raise ValueError("boom in layer 2")
        return z * 0.5


def test_nothing_left_attached_after_an_error(micro, batch):
    ids, mask = batch
    model = micro.model
    before = _plain(model, ids, mask)
    heads = NNsightHeads(model)
    with pytest.raises(ValueError, match="boom in layer 2"):
        heads.forward(ids, mask, _Boom())
    # the caller's model was never instrumented and computes what it did
    assert "forward" not in vars(model)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert torch.equal(_plain(model, ids, mask), before)
    # the wrapped copy is clean too: the next trace without interventions is the plain model
    with torch.no_grad():
        assert torch.equal(heads.forward(ids, mask), before)


def test_localize_error_restores_the_model(micro, texts, monkeypatch):
    model = micro.model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    calls = {"n": 0}
    real_forward = HeadScale.forward

    def failing(self, z, layer):
        calls["n"] += 1
        if calls["n"] > 6:  # second step
            raise RuntimeError("injected failure")
        return real_forward(self, z, layer)

    monkeypatch.setattr(HeadScale, "forward", failing)
    with pytest.raises(RuntimeError, match="injected failure"):
        localize(model, micro.tokenizer, texts, LocalizeConfig(backend="nnsight", **FAST),
                 progress=False)
    monkeypatch.undo()
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert "forward" not in vars(model) and not model.training


def test_invalid_interventions_name_the_range(micro):
    heads = NNsightHeads(micro.model)
    with pytest.raises(ValueError, match=r"valid layers are 0\.\.3"):
        heads.validate(HeadPerturbation([(7, 0)], d_head=24))
    with pytest.raises(ValueError, match=r"valid heads are 0\.\.3"):
        heads.validate(HeadAblation([(1, 9)]))
    with pytest.raises(ValueError, match="d_head"):
        heads.validate(HeadScale(4, 4, 8, sigma=0.0))
    with pytest.raises(TypeError, match="not a head intervention"):
        heads.validate(object())
    with pytest.raises(ValueError, match=r"\{layer\}"):
        NNsightHeads(micro.model, out_proj="model.layers.0.self_attn.o_proj")
    with pytest.raises(ValueError, match="no module 'model.layers.0.attn.c_proj'"):
        NNsightHeads(micro.model, out_proj="model.layers.{layer}.attn.c_proj")
    with pytest.raises(ValueError, match="takes 256 features"):
        NNsightHeads(micro.model, out_proj="model.layers.{layer}.mlp.down_proj")
    with pytest.raises(ValueError, match="backend must be one of"):
        LocalizeConfig(backend="pyvene")


# -------------------------------------------------------- architectures without TL


def _prehook_logits(model, template, scale, ids, n_heads, d_head):
    """Independent oracle: a plain torch forward pre-hook on the output projection."""
    handles = []
    for layer in range(scale.n_layers):
        proj = model.get_submodule(template.format(layer=layer))

        def hook(module, args, layer=layer):
            x = args[0]
            z = x.reshape(*x.shape[:-1], n_heads, d_head)
            return (((1 + scale.A[layer]) * z).reshape(x.shape),)
        handles.append(proj.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            return model(input_ids=ids).logits
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_other_architectures(arch):
    torch.manual_seed(0)
    if arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=64,
                                           n_positions=32)).eval()
        expected = "transformer.h.{layer}.attn.c_proj"
    else:
        model = Qwen2ForCausalLM(Qwen2Config(num_hidden_layers=2, num_attention_heads=4,
                                             num_key_value_heads=2, hidden_size=32,
                                             intermediate_size=64, vocab_size=64)).eval()
        expected = "model.layers.{layer}.self_attn.o_proj"
    heads = NNsightHeads(model)
    assert heads.out_proj == expected
    ids = torch.randint(0, 64, (2, 9))
    scale = HeadScale.for_model(model, sigma=0.3, seed=0)
    with torch.no_grad():
        got = heads.forward(ids, None, scale)
        plain = model(input_ids=ids).logits
        assert torch.equal(heads.forward(ids, None, HeadScale.for_model(model, sigma=0.0)), plain)
    want = _prehook_logits(model, expected, scale, ids, 4, 8)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert not torch.allclose(got, plain, atol=1e-3)


# ------------------------------------------------------------------ localization


def test_localize_backends_agree(micro, texts):
    """Same seed, batches, optimiser: the same loss trajectory and the same top-K."""
    tl = localize(micro.model, micro.tokenizer, texts, LocalizeConfig(**FAST), progress=False)
    ns = localize(micro.model, micro.tokenizer, texts, LocalizeConfig(**FAST), progress=False,
                  backend="nnsight")
    assert tl.config.backend == "tl" and ns.config.backend == "nnsight"
    np.testing.assert_allclose(ns.history["loss"], tl.history["loss"], rtol=1e-4)
    np.testing.assert_allclose(ns.history["ce"], tl.history["ce"], rtol=1e-4)
    assert len(set(tl.history["loss"])) > 1  # the loss actually moves
    assert ns.selected == tl.selected
    np.testing.assert_allclose(ns.scores["score"], tl.scores["score"], rtol=1e-3)
    order = lambda r: r.scores.sort_values("rank")[["layer", "head"]].to_numpy()  # noqa: E731
    assert (order(ns) == order(tl)).all()
    # the selection is not an artefact of the init: training moved the ranking
    init = HeadScale.for_model(micro.model, sigma=FAST["sigma_A"], seed=FAST["seed"]).scores()
    assert not torch.allclose(init, torch.tensor(tl.scores["score"].to_numpy().reshape(4, 4),
                                                 dtype=torch.float32), rtol=1e-2)


def test_localize_backends_bitwise_under_eager(eager, micro, texts):
    cfg = LocalizeConfig(**dict(FAST, steps=3))
    tl = localize(eager, micro.tokenizer, texts, cfg, progress=False)
    ns = localize(eager, micro.tokenizer, texts, cfg, progress=False, backend="nnsight")
    assert tl.history["loss"].tolist() == ns.history["loss"].tolist()
    assert torch.equal(tl.A, ns.A)


def test_cli_backend(tmp_path):
    out = tmp_path / "loc"
    assert main(["localize", "--model", "organism-micro", "--backend", "nnsight", "--steps", "2",
                 "--batch-size", "4", "--top-k", "2", "--out", str(out), "--formats", "html",
                 "--json", "--no-progress"]) == 0
    cfg = json.loads((out / "localize_config.json").read_text())
    assert cfg["backend"] == "nnsight" and cfg["steps"] == 2
    assert len(json.loads((out / "selected_heads.json").read_text())["heads"]) == 2
    assert (out / "head_sensitivity.html").is_file()
