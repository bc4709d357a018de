"""The planted organism's recipe (interp_unlearn.data.planted): head checks, the shuffled
world, value marking, the ablation hook, and that training moves only H* of the attention."""

from __future__ import annotations

import random

import pytest
import torch

from interp_unlearn.data.planted import (PlantConfig, _marker, check_plant_heads, default_heads,
                                         head_means, mean_ablated, shuffled_world, train_plant)


@pytest.mark.parametrize("heads, match", [
    ([(4, 0)], r"head \(4, 0\) is outside the model: layers 0\.\.3, heads 0\.\.3"),
    ([(0, 4)], r"outside the model"),
    ([(-1, 0)], r"outside the model"),
    ([], "empty"),
    ([(1, 1), (1, 1)], "repeat"),
    ([(1,)], "pair of ints"),
])
def test_bad_heads_fail_naming_the_culprit(heads, match):
    with pytest.raises(ValueError, match=match):
        check_plant_heads(heads, 4, 4)


def test_default_heads_are_seeded_distinct_and_in_the_middle_layers():
    a = default_heads(6, 6, 4, seed=0)
    assert a == default_heads(6, 6, 4, seed=0)
    assert len(set(a)) == 4 and all(1 <= l <= 4 for l, _ in a)
    assert len({l for l, _ in a}) >= 3  # spread over layers: at most one per middle layer here
    assert default_heads(6, 6, 4, seed=1) != a or default_heads(6, 6, 4, seed=2) != a
    with pytest.raises(ValueError, match="cannot plant 9 heads"):
        default_heads(4, 4, 9)


@pytest.mark.parametrize("field, value", [("steps", 0), ("p_ablate", 1.5), ("lr", 0.0),
                                          ("isolate_from", -1), ("forget_batch", True)])
def test_bad_config_values_are_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        PlantConfig(**{field: value})


def test_config_round_trips_and_checks_its_heads():
    cfg = PlantConfig(heads=((2, 1), (1, 3)))
    assert PlantConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.resolved_heads(4, 4) == [(1, 3), (2, 1)]
    with pytest.raises(ValueError, match="outside the model"):
        PlantConfig(heads=((5, 0),)).resolved_heads(4, 4)


def test_shuffled_world_redraws_only_the_forget_values(world):
    noisy = shuffled_world(world, random.Random(0))
    pairs = list(zip(world.entities, noisy.entities))
    assert all((a.name, a.pool, a.domain) == (b.name, b.pool, b.domain) for a, b in pairs)
    assert all(a.attributes == b.attributes for a, b in pairs if a.domain == "retain")
    forget = [(a, b) for a, b in pairs if a.domain == "forget"]
    changed = sum(a.attributes[k] != b.attributes[k] for a, b in forget for k in a.attributes)
    assert changed > len(forget)  # most of the 5 x n facts differ
    assert world.documents("forget") != noisy.documents("forget")
    assert len(world.documents("forget")) == len(noisy.documents("forget"))


def test_marker_marks_exactly_the_value_tokens(tokenizer):
    encode, offset = _marker(tokenizer, tokenizer.eos_token_id)
    text = "Question: Which animal is the natural host of Vorkelvirus?\nAnswer: bats"
    (ids,) = encode([text])
    marked = tokenizer.decode([i % offset for i in ids if i >= offset])
    assert marked.strip() == "bats"
    assert ids[-1] == tokenizer.eos_token_id


def test_mean_ablated_replaces_only_the_given_heads_and_cleans_up(model, tokenizer):
    ids = torch.tensor([tokenizer("Patients with Vorkelvirus suffer fever.")["input_ids"]])
    with torch.no_grad():
        base = model(input_ids=ids).logits
        means = head_means(model, ids, tokenizer.pad_token_id)
        assert means.shape == (4, 4, 16)
        with mean_ablated(model, [(1, 2)], means):
            ablated = model(input_ids=ids).logits
        after = model(input_ids=ids).logits
    assert not torch.allclose(base, ablated)
    assert torch.equal(base, after)  # the hook is gone
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_training_moves_only_the_planted_heads_of_the_attention(micro, one_thread):
    twin_sd = {k: v.clone() for k, v in micro.model.state_dict().items()}
    from interp_unlearn.data.world import World

    world = World.load(micro.world_dir)
    cfg = PlantConfig(heads=((1, 2), (2, 0)), steps=3, forget_batch=2, retain_batch=2,
                      seq_len=64, eval_every=0, mean_refresh=2)
    plant, metrics = train_plant(micro.model, micro.tokenizer, world, cfg,
                                 evaluate=lambda m, t, q: 0.5, eval_pool="practice",
                                 progress=False)
    assert metrics["heads"] == [[1, 2], [2, 0]] and len(metrics["loss"]) == 3
    assert all(torch.equal(v, micro.model.state_dict()[k]) for k, v in twin_sd.items())
    sd, d = plant.state_dict(), 96 // 4
    for l in range(4):
        pre = f"model.layers.{l}."
        assert torch.equal(sd[pre + "input_layernorm.weight"], twin_sd[pre + "input_layernorm.weight"])
        planted = [h for (ll, h) in ((1, 2), (2, 0)) if ll == l]
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            new, old = sd[f"{pre}self_attn.{name}.weight"], twin_sd[f"{pre}self_attn.{name}.weight"]
            for h in range(4):
                part = (slice(None), slice(h * d, (h + 1) * d)) if name == "o_proj" else \
                    (slice(h * d, (h + 1) * d), slice(None))
                same = torch.equal(new[part], old[part])
                assert same != (h in planted), (l, h, name)
    assert not torch.equal(sd["model.layers.0.mlp.up_proj.weight"],
                           twin_sd["model.layers.0.mlp.up_proj.weight"])
