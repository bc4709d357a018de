"""interp_unlearn.bridge: offline TransformerBridge around a config-built Llama."""

from __future__ import annotations

import socket

import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from interp_unlearn.core.bridge import (HOOK_EMBED, HOOK_FINAL_NORM, active_hook_count,
                                        hf_model_of, hook_z_name, model_dims, resid_post_name,
                                        resid_pre_name, run_to_resid_post, to_bridge)

VOCAB = 300
N_LAYERS = 4
N_HEADS = 4
D_HEAD = 16


def make_tokenizer() -> PreTrainedTokenizerFast:
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    words = specials + [chr(c) for c in range(33, 127)]
    words += [f"w{i}" for i in range(len(words), VOCAB)]
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def make_model(n_kv_heads: int = 2, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=N_HEADS * D_HEAD,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        num_key_value_heads=n_kv_heads,
        intermediate_size=128,
        vocab_size=VOCAB,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer()


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded batch: row 0 full, rows 1 and 2 padded after 7 and 4 tokens."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(4, VOCAB, (3, 10), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = 0
    return ids, mask


@pytest.fixture(scope="module")
def pair(tokenizer):
    """A GQA model (4 query heads, 2 KV heads) and its bridge; tests must not modify them."""
    model = make_model(n_kv_heads=2)
    return model, to_bridge(model, tokenizer)


def hf_logits(model, ids, mask, attn_implementation: str | None = None) -> torch.Tensor:
    previous = model.config._attn_implementation
    if attn_implementation is not None:
        model.set_attn_implementation(attn_implementation)
    try:
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=mask).logits
    finally:
        model.set_attn_implementation(previous)


@pytest.mark.parametrize("n_kv_heads", [N_HEADS, 2])
def test_logits_match_hf_with_padding_mask(tokenizer, batch, n_kv_heads):
    ids, mask = batch
    model = make_model(n_kv_heads=n_kv_heads)
    bridge = to_bridge(model, tokenizer)
    with torch.no_grad():
        out = bridge(ids, attention_mask=mask)
    assert out.shape == (3, 10, VOCAB)
    torch.testing.assert_close(out, hf_logits(model, ids, mask), atol=1e-4, rtol=0)  # sdpa
    torch.testing.assert_close(out, hf_logits(model, ids, mask, "eager"), atol=1e-5, rtol=0)


def test_weights_are_shared_not_copied(tokenizer, batch):
    ids, mask = batch
    model = make_model()
    bridge = to_bridge(model, tokenizer)
    assert {p.data_ptr() for p in bridge.parameters()} == {p.data_ptr() for p in model.parameters()}
    with torch.no_grad():
        before = bridge(ids, attention_mask=mask)
        model.model.layers[1].mlp.down_proj.weight.mul_(3.0)
        after = bridge(ids, attention_mask=mask)
    assert (after - before).abs().max() > 1e-3
    torch.testing.assert_close(after, hf_logits(model, ids, mask), atol=1e-4, rtol=0)
    # Gradients of a bridge forward land on the HF model's own parameters.
    model.zero_grad()
    bridge(ids, attention_mask=mask).logsumexp(-1).sum().backward()
    assert model.model.layers[1].mlp.down_proj.weight.grad.abs().sum() > 0


def test_hf_model_left_untouched_and_saveable(tokenizer, batch, tmp_path):
    ids, mask = batch
    model = make_model()
    keys = list(model.state_dict())
    attn = model.config._attn_implementation
    bridge = to_bridge(model, tokenizer)
    assert list(model.state_dict()) == keys
    assert model.config._attn_implementation == attn
    assert type(model.model.layers[0]).__name__ == "LlamaDecoderLayer"
    assert hf_model_of(bridge) is model
    model.save_pretrained(tmp_path)
    reloaded = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            bridge(ids, attention_mask=mask), reloaded(input_ids=ids, attention_mask=mask).logits, atol=1e-4, rtol=0
        )


def test_boot_makes_no_hub_call_and_leaves_tokenizer_alone(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:]}")

    def no_hub(*args, **kwargs):
        raise AssertionError(f"from_pretrained called with {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", no_hub)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_hub)
    tok = make_tokenizer()
    tok.padding_side = "left"
    init_kwargs = dict(tok.init_kwargs)
    model = make_model()
    model.name_or_path = "some-org/not-a-real-model"  # a hub id must not be looked up
    bridge = to_bridge(model, tok)
    assert tok.padding_side == "left" and tok.init_kwargs == init_kwargs
    # The bridge's tokenizer copy tokenizes like ours (no BOS forced in).
    assert bridge.tokenizer.encode("a b c") == tok.encode("a b c")
    assert bridge.cfg.tokenizer_prepends_bos is False


def test_hook_names_and_shapes(pair, batch):
    model, bridge = pair
    ids, mask = batch
    names = [HOOK_EMBED, HOOK_FINAL_NORM, hook_z_name(1, bridge), resid_pre_name(0, bridge), resid_post_name(3, bridge)]
    with torch.no_grad():
        _, cache = bridge.run_with_cache(ids, attention_mask=mask, names_filter=names)
        hs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert cache[hook_z_name(1, bridge)].shape == (3, 10, N_HEADS, D_HEAD)  # query heads under GQA
    for name in (HOOK_EMBED, HOOK_FINAL_NORM, resid_pre_name(0, bridge), resid_post_name(3, bridge)):
        assert cache[name].shape == (3, 10, N_HEADS * D_HEAD)
    torch.testing.assert_close(cache[HOOK_EMBED], hs[0], atol=0, rtol=0)
    torch.testing.assert_close(cache[HOOK_FINAL_NORM], hs[-1], atol=1e-5, rtol=0)


def test_hook_z_equals_o_proj_input(pair, batch):
    model, bridge = pair
    ids, mask = batch
    seen = {}
    handle = model.model.layers[2].self_attn.o_proj.register_forward_pre_hook(
        lambda module, args: seen.__setitem__("z", args[0].detach().clone())
    )
    try:
        hf_logits(model, ids, mask, "eager")
    finally:
        handle.remove()
    with torch.no_grad():
        _, cache = bridge.run_with_cache(ids, attention_mask=mask, names_filter=[hook_z_name(2, bridge)])
    z = cache[hook_z_name(2, bridge)]
    torch.testing.assert_close(seen["z"].view(z.shape), z, atol=1e-6, rtol=0)


def test_hook_z_edits_reach_the_logits(pair, batch):
    _, bridge = pair
    ids, mask = batch
    name = hook_z_name(1, bridge)

    def keep(z, hook):
        return z

    def zero_head_2(z, hook):
        z = z.clone()
        z[:, :, 2] = 0.0
        return z

    with torch.no_grad():
        base = bridge(ids, attention_mask=mask)
        with bridge.hooks(fwd_hooks=[(name, keep)]):
            same = bridge(ids, attention_mask=mask)
        with bridge.hooks(fwd_hooks=[(name, zero_head_2)]):
            ablated = bridge(ids, attention_mask=mask)
    assert torch.equal(same, base)
    assert (ablated - base).abs().max() > 1e-3
    assert active_hook_count(bridge) == 0


def test_gradient_reaches_hook_owned_parameter_with_frozen_model(tokenizer, batch):
    ids, mask = batch
    model = make_model()
    for p in model.parameters():
        p.requires_grad_(False)
    bridge = to_bridge(model, tokenizer)
    delta = torch.nn.Parameter(torch.zeros(N_HEADS, D_HEAD))
    with bridge.hooks(fwd_hooks=[(hook_z_name(1, bridge), lambda z, hook: z + delta)]):
        bridge(ids, attention_mask=mask).logsumexp(-1).sum().backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_run_to_resid_post_matches_cache_for_every_layer(pair, batch):
    _, bridge = pair
    ids, mask = batch
    names = [resid_post_name(layer, bridge) for layer in range(N_LAYERS)]
    with torch.no_grad():
        _, cache = bridge.run_with_cache(ids, attention_mask=mask, names_filter=names)
        for layer in range(N_LAYERS):  # the last one cannot use stop_at_layer
            resid = run_to_resid_post(bridge, ids, layer, mask)
            assert resid.shape == (3, 10, N_HEADS * D_HEAD)
            torch.testing.assert_close(resid, cache[names[layer]], atol=0, rtol=0)
    assert active_hook_count(bridge) == 0


@pytest.mark.parametrize("name_fn", [hook_z_name, resid_post_name, resid_pre_name])
@pytest.mark.parametrize("layer", [N_LAYERS, -1, 99])
def test_invalid_layer_names_the_valid_range(pair, name_fn, layer):
    model, bridge = pair
    for target in (model, bridge, N_LAYERS):
        with pytest.raises(ValueError, match=r"0\.\.3"):
            name_fn(layer, target)
    with pytest.raises(TypeError):
        name_fn(1.0, model)


def test_no_hook_left_after_exception_inside_hooks_block(pair, batch):
    _, bridge = pair
    ids, mask = batch
    assert active_hook_count(bridge) == 0
    with torch.no_grad():
        base = bridge(ids, attention_mask=mask)
    with pytest.raises(RuntimeError, match="boom"):
        with bridge.hooks(fwd_hooks=[(hook_z_name(0, bridge), lambda z, hook: z * 0)]):
            assert active_hook_count(bridge) == 1
            raise RuntimeError("boom")
    assert active_hook_count(bridge) == 0

    def failing(z, hook):
        raise RuntimeError("boom in hook")

    with pytest.raises(RuntimeError, match="boom in hook"):
        with bridge.hooks(fwd_hooks=[(resid_post_name(1, bridge), failing)]):
            bridge(ids, attention_mask=mask)
    assert active_hook_count(bridge) == 0
    with torch.no_grad():
        assert torch.equal(bridge(ids, attention_mask=mask), base)


def test_model_dims(pair):
    model, bridge = pair
    expected = {"n_layers": N_LAYERS, "n_heads": N_HEADS, "d_head": D_HEAD, "d_model": N_HEADS * D_HEAD}
    assert model_dims(model) == expected
    assert model_dims(bridge) == expected


def test_rejects_bad_inputs(tokenizer):
    model = make_model()
    with pytest.raises(TypeError):
        to_bridge(torch.nn.Linear(2, 2), tokenizer)
    with pytest.raises(TypeError):
        to_bridge(model, None)
    bridge = to_bridge(model, tokenizer)
    with pytest.raises(ValueError, match="already wrapped"):
        to_bridge(bridge.original_model, tokenizer)
