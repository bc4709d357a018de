"""Attacks and the relearning floor on the micro organism (small and fast by design).

The degraded model is made here with a few steps of gradient ascent on the forget corpus
(the scored practice pool's own documents) and saved as a checkpoint whose
``interp_unlearn.json`` records the micro organism as its source, like an unlearning run.
Some fine-tuning tests set the learning rate explicitly so the effect shows within a
test's budget (the presets and the per-family default are checked separately).
"""

import json
import random

import numpy as np
import pandas as pd
import pytest
import torch

from interp_unlearn.attacks import (FinetuneAttackConfig, attack_corpus, checkpoint_digest,
                                    finetune_attack, head_restore_attack, in_context_attack,
                                    orthogonalize_attack, quantize_attack, quantize_weight,
                                    related_models, run_attack, sample_texts, summarize,
                                    t_interval)
from interp_unlearn.attacks import floor as floor_mod
from interp_unlearn.attacks.head_restore import _weight_slices
from interp_unlearn.evaluation.scoring import EvalConfig, evaluate_mcq
from interp_unlearn.data.loading import builtin_path, load_model
from interp_unlearn.data.organism import META_FILE
from interp_unlearn.data.world import World, corpus_path, read_texts

torch.set_num_threads(1)
MICRO = "organism-micro"
HEADS = [[1, 0], [2, 3]]


@pytest.fixture(scope="module")
def micro():
    return load_model(MICRO)


@pytest.fixture(scope="module")
def micro_digest():
    return checkpoint_digest(builtin_path(MICRO))


@pytest.fixture(scope="module")
def degraded(micro, tmp_path_factory):
    """Gradient ascent (6 steps, batch 8, lr 1e-3) on the practice pool's forget documents:
    forget accuracy 0.86 -> ~0.36 on the micro organism's default (practice) pool."""
    model = load_model(MICRO).model
    model.train()
    docs = read_texts(corpus_path(micro.world_dir, "forget-practice"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    rng = random.Random(0)
    for _ in range(6):
        enc = micro.tokenizer(rng.sample(docs, 8), return_tensors="pt", padding=True)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        (-model(**enc, labels=labels).loss).backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    out = tmp_path_factory.mktemp("degraded")
    model.save_pretrained(out, safe_serialization=True)
    micro.tokenizer.save_pretrained(out)
    meta = {**micro.meta, "world_dir": str(micro.world_dir),
            "unlearn": {"method": "ga-test", "source_model": str(micro.path), "heads": HEADS}}
    (out / META_FILE).write_text(json.dumps(meta))
    return out


def _acc(lm, mcq=None):
    return evaluate_mcq(lm.model, lm.tokenizer, mcq or lm.mcq_path("forget"),
                        EvalConfig(scoring=lm.default_scoring)).accuracy


# ------------------------------------------------------------------------ attack data


def test_attack_data_pools_and_sampling(micro):
    world = World.load(micro.world_dir)
    attack, label, files = attack_corpus(micro.world_dir, "forget", "attack")
    assert label == "attack" and files == ["forget-attack.jsonl"]
    scored = world.names("forget")
    attack_names = {e.name for e in world.entities_in("forget", ("attack",))}
    other = [n for n in scored if n not in attack_names]
    assert not any(name in t for t in attack for name in other)  # disjoint facts
    same, label, _ = attack_corpus(micro.world_dir, "forget", "same")
    assert label == "same" and set(attack) < set(same)
    practice = {e.name for e in world.entities_in("forget", ("practice",))}
    assert any(name in t for t in same for name in practice)
    general, label, _ = attack_corpus(micro.world_dir, "unrelated")
    assert label == "general" and not any(n in t for t in general for n in scored)
    assert sample_texts(attack, 5, seed=3) == sample_texts(attack, 5, seed=3)
    assert sample_texts(attack, 5, seed=3) != sample_texts(attack, 5, seed=4)
    assert len(set(sample_texts(attack, len(attack), 0))) == len(attack)
    assert sample_texts(attack, 0, 0) == []
    with pytest.raises(ValueError, match=rf"N must be in 0..{len(attack)} unless repetition"):
        sample_texts(attack, len(attack) + 3, 0)
    with pytest.warns(RuntimeWarning, match="repeated"):
        rep = sample_texts(attack, len(attack) + 3, 0, repeat=True)
    assert len(rep) == len(attack) + 3 and set(rep) == set(attack)
    with pytest.raises(ValueError, match="pool"):
        attack_corpus(micro.world_dir, "forget", "eval")
    with pytest.raises(ValueError, match="pool"):  # checked whatever the data
        attack_corpus(micro.world_dir, "unrelated", "eval")


def test_related_models(degraded):
    assert related_models(MICRO) == (MICRO, f"{MICRO}-twin")
    assert related_models(f"{MICRO}-twin") == (MICRO, f"{MICRO}-twin")
    orig, twin = related_models(str(degraded))
    assert orig == str(builtin_path(MICRO).resolve()) and twin.endswith("twin")


def test_presets_are_faithful():
    paper = FinetuneAttackConfig.preset("paper")
    assert (paper.method, paper.lora_rank, paper.lora_alpha, paper.lora_dropout, paper.lr,
            paper.epochs, paper.batch_size, paper.warmup_ratio, paper.weight_decay,
            paper.schedule, paper.max_length) == ("lora", 128, 16, 0.0, 2e-4, 3, 1, 0.05, 0.01,
                                                  "linear", 1024)
    lora = FinetuneAttackConfig.preset("lora")  # the same recipe, lr scaled per family
    assert lora.lr is None and FinetuneAttackConfig(lr=None).lr is None
    from dataclasses import replace
    assert replace(lora, lr=2e-4, preset_name="paper") == paper
    assert set(lora.lora_targets) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                      "up_proj", "down_proj"}
    full = FinetuneAttackConfig.preset("full")
    assert (full.method, full.lr, full.epochs, full.batch_size, full.grad_accum) == (
        "full", 1e-5, 3, 1, 4)
    assert FinetuneAttackConfig.preset("lora", lora_rank=8).lora_rank == 8
    with pytest.raises(ValueError):
        FinetuneAttackConfig(method="qlora")


# ------------------------------------------------------------------------ fine-tuning


def test_finetune_raises_forget_accuracy_of_degraded_model(degraded, micro):
    before = checkpoint_digest(degraded)
    base = finetune_attack(degraded, 0)
    assert base.info.get("steps") is None and base.pool == "attack"
    orig = _acc(micro)
    assert base.accuracy() < orig - 0.3  # the gradient ascent did degrade it
    res = finetune_attack(degraded, 20, seed=0, lr=1e-3)
    assert res.accuracy() > base.accuracy() + 0.05, (base.accuracy(), res.accuracy())
    assert res.info["steps"] == 60 and res.info["corpus"] == ["forget-attack.jsonl"]
    rows = pd.DataFrame(res.rows())
    assert set(rows["metric"]) == {"accuracy", "ue", "accuracy_restored", "n_taught",
                                   "n_restored", "taught_entities"}
    # the disjoint pool teaches no scored entity: every question is "restored"
    value = rows.set_index("metric")["value"]
    assert value["n_taught"] == 0 and value["n_restored"] == res.evals["forget"].n
    assert value["accuracy_restored"] == pytest.approx(res.accuracy())
    assert (rows["pool"] == "attack").all() and (rows["N"] == 20).all()
    ue = rows.loc[rows.metric == "ue", "value"].item()
    assert ue == pytest.approx(100 * (1 - res.accuracy()))
    assert checkpoint_digest(degraded) == before


def test_twin_attacked_stays_near_chance(micro):
    twin_dir = builtin_path(f"{MICRO}-twin")
    before = checkpoint_digest(twin_dir)
    res = finetune_attack(f"{MICRO}-twin", 20, seed=0, lr=1e-3, mcq=micro.mcq_path("forget"))
    orig = _acc(micro)
    assert res.accuracy() < 0.45 and res.accuracy() < orig - 0.3, res.accuracy()
    assert checkpoint_digest(twin_dir) == before


def test_finetune_leaves_loaded_model_and_checkpoint_untouched(micro, micro_digest):
    state = {k: v.clone() for k, v in micro.model.state_dict().items()}
    res = finetune_attack(micro, 2, seed=1, config="full", keep_model=True)
    assert res.attack == "finetune-full" and res.info["steps"] == 3  # 3 epochs x ceil(2 docs / accum 4)
    changed = any(not torch.equal(state[k], v) for k, v in res.attacked_model.state_dict().items())
    assert changed
    assert all(torch.equal(state[k], v) for k, v in micro.model.state_dict().items())
    assert checkpoint_digest(builtin_path(MICRO)) == micro_digest


# ----------------------------------------------------------------------- quantization


def test_quantize_weight_levels():
    w = torch.randn(6, 32)
    q4 = quantize_weight(w, 4)
    assert not torch.equal(q4, w)
    for row, qrow in zip(w, q4):
        scale = row.abs().max() / 7
        levels = torch.round(qrow / scale)
        assert torch.allclose(levels * scale, qrow, atol=1e-6)
        assert levels.abs().max() <= 7 and len(levels.unique()) <= 15
    assert (quantize_weight(w, 8) - w).abs().max() <= w.abs().max() / 127 / 2 + 1e-6
    assert quantize_weight(w, 4, group_size=8).shape == w.shape


def test_quantize_attack(micro, micro_digest):
    state = {k: v.clone() for k, v in micro.model.state_dict().items()}
    orig = _acc(micro)
    r8 = quantize_attack(micro, bits=8)
    assert r8.attack == "quantize-int8" and abs(r8.accuracy() - orig) <= 0.05
    r4 = quantize_attack(micro, bits=4, keep_model=True)
    q = r4.attacked_model
    layer = q.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(layer, state["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(q.lm_head.weight, state["lm_head.weight"])  # head kept in float
    assert all(torch.equal(state[k], v) for k, v in micro.model.state_dict().items())
    assert checkpoint_digest(builtin_path(MICRO)) == micro_digest


# ------------------------------------------------------- orthogonalize / heads / context


def test_orthogonalize(degraded, micro):
    before = checkpoint_digest(degraded)
    lm = load_model(degraded)
    probe = torch.tensor([[5, 6, 7, 8]])
    ref = lm.model(input_ids=probe).logits
    res = orthogonalize_attack(lm, 5, seed=0)
    assert res.attack == "orthogonalize" and 0 <= res.info["layer"] < 4
    assert len(res.info["selection_accuracy"]) == 4 and min(res.info["diff_norms"]) > 0
    assert torch.equal(lm.model(input_ids=probe).logits, ref)  # hooks removed
    per_layer = orthogonalize_attack(lm, 5, seed=0, mode="per-layer")
    assert 0 <= per_layer.accuracy() <= 1
    same = orthogonalize_attack(micro, 3, seed=0, original=micro, layer=2)  # zero direction
    assert same.accuracy() == pytest.approx(_acc(micro))
    assert checkpoint_digest(degraded) == before


@pytest.mark.parametrize("mode", ["weights", "delta"])
def test_head_restore(degraded, mode):
    before = checkpoint_digest(degraded)
    lm = load_model(degraded)
    state = {k: v.clone() for k, v in lm.model.state_dict().items()}
    res = head_restore_attack(lm, 5, seed=0, mode=mode, lr=1e-2, keep_model=True)
    assert res.attack == f"head-restore-{mode}"
    assert json.loads(json.dumps(res.config))["heads"] == HEADS  # from the checkpoint's meta
    assert all(torch.equal(state[k], v) for k, v in lm.model.state_dict().items())
    if mode == "weights":
        trained = res.attacked_model
        masks = {id(p): m for p, m in _weight_slices(trained, [tuple(h) for h in HEADS]).items()}
        n_changed = 0
        for name, p in trained.named_parameters():
            diff = p.detach() != state[name]
            if id(p) in masks:
                assert not diff[~masks[id(p)]].any(), name  # nothing outside the slices moved
                n_changed += int(diff.sum())
            else:
                assert not diff.any(), name
        assert n_changed > 0
    else:
        assert max(res.info["delta_norms"]) > 0
        assert not lm.model.model.layers[1].self_attn.o_proj._forward_pre_hooks
    assert checkpoint_digest(degraded) == before


def test_head_restore_delta_bounded_at_explicit_heads(degraded):
    """The delta mode is the shared HeadAdversary: ``kappa`` bounds each head by κ·E‖z‖
    (measured on the attack documents), ``heads=`` overrides the checkpoint's, and info
    reports ‖δ‖ and ‖δ‖/ε; ``epsilon`` gives one absolute radius; bad radii raise."""
    lm = load_model(degraded)
    heads = [(0, 1), (1, 2)]
    res = head_restore_attack(lm, 5, seed=0, mode="delta", heads=heads, kappa=0.5, lr=0.5)
    assert res.config["heads"] == [list(h) for h in heads] and res.info["objective"] == "ce"
    assert len(res.info["radii"]) == 2 and res.info["radii"][0] != res.info["radii"][1]
    assert all(0 < r <= 1.0001 for r in res.info["delta_over_eps"])
    assert max(res.info["delta_over_eps"]) > 0.99  # lr 0.5 reaches the boundary
    fixed = head_restore_attack(lm, 5, seed=0, mode="delta", heads=heads, epsilon=0.05)
    assert fixed.info["radii"] == [0.05, 0.05] and max(fixed.info["delta_norms"]) <= 0.05001
    free = head_restore_attack(lm, 5, seed=0, mode="delta", heads=heads)
    assert "radii" not in free.info and max(free.info["delta_norms"]) > 0
    with pytest.raises(ValueError, match="kappa must be None or a finite number > 0"):
        head_restore_attack(lm, 5, seed=0, mode="delta", heads=heads, kappa=-1.0)
    with pytest.raises(ValueError, match="bound the 'delta' mode only"):
        head_restore_attack(lm, 5, seed=0, mode="weights", heads=heads, epsilon=1.0)
    assert all(not m._forward_pre_hooks for m in lm.model.modules())


def test_in_context(micro, micro_digest):
    from interp_unlearn.attacks import evaluate_with_prefix
    from interp_unlearn.core.mcq import load_mcq
    items = load_mcq(micro.mcq_path("forget"))[:20]
    cfg = EvalConfig(scoring="cloze")
    plain = evaluate_mcq(micro.model, micro.tokenizer, items, cfg)
    same = evaluate_with_prefix(micro.model, micro.tokenizer, items, cfg, "")
    pd.testing.assert_frame_equal(plain.per_question, same.per_question)
    res = in_context_attack(micro, 1, seed=0, mcq=items)
    assert res.attack == "in-context" and res.info["prefix_tokens"] > 0
    assert 0 <= res.accuracy() <= 1
    assert checkpoint_digest(builtin_path(MICRO)) == micro_digest


# ------------------------------------------------------------------------------ floor


def test_t_interval_and_summarize():
    from interp_unlearn.core import stats
    assert t_interval is stats.t_interval  # one implementation, re-exported
    mean, lo, hi = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and hi - mean == pytest.approx(4.302653 / 3 ** 0.5, rel=1e-5)
    assert np.isnan(t_interval([1.0])[1])
    df = pd.DataFrame({"method": "m", "role": "target", "attack": "a", "data": "forget",
                       "pool": "attack", "N": 5, "seed": [0, 1, 2], "domain": "forget",
                       "metric": "accuracy", "value": [0.1, 0.2, 0.3]})
    s = summarize(df)
    assert len(s) == 1 and s["mean"].item() == pytest.approx(0.2) and s["n_seeds"].item() == 3


def test_floor_rows_recovery_and_resume(degraded, tmp_path, monkeypatch):
    before = checkpoint_digest(degraded)
    calls = []
    real = floor_mod.ATTACKS["finetune"]

    def counted(model, n, seed, **kw):
        calls.append((n, seed))
        return real(model, n, seed, **kw)

    monkeypatch.setitem(floor_mod.ATTACKS, "finetune", counted)
    kw = dict(samples="0,2", seeds=2, out=tmp_path, config="lora", lora_rank=8, epochs=1,
              progress=False)
    df = run_attack(str(degraded), "finetune", "forget", **kw)
    assert set(df["role"]) == {"target", "twin", "original"}
    assert set(df["method"]) == {"ga-test", "never-learned", "original"}
    assert {"accuracy", "ue", "recovery", "accuracy_restored", "recovery_restored",
            "n_taught"} <= set(df["metric"])
    assert {"method", "attack", "data", "pool", "N", "seed", "metric", "value"} <= set(df.columns)
    assert (df["pool"] == "attack").all() and (df["attack"] == "finetune-lora").all()
    assert len(calls) == 3 * (1 + 2)  # N=0 once per model (copied to every seed), N=2 x 2 seeds
    acc = df[df.metric == "accuracy"].set_index(["role", "N", "seed"])["value"]
    rec = df[df.metric == "recovery"].set_index(["N", "seed"])["value"]
    for (n, seed), value in rec.items():
        tw, orig, tgt = (acc[(r, n, seed)] for r in ("twin", "original", "target"))
        assert value == pytest.approx((tgt - tw) / (orig - tw))
    # disjoint pool: every question is restored, so restored recovery is recovery
    rr = df[df.metric == "recovery_restored"].set_index(["N", "seed"])["value"]
    pd.testing.assert_series_equal(rr.sort_index(), rec.sort_index())
    assert (tmp_path / "results.csv").is_file() and (tmp_path / "summary.csv").is_file()
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert {"mean", "ci95_low", "ci95_high", "n_seeds"} <= set(summary.columns)

    # a finished run is not redone
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    df2 = run_attack(str(degraded), "finetune", "forget", **kw)
    assert len(calls) == 9 and len(df2) == len(df)
    # an interrupted run (last cells lost, a line cut in half) redoes only what is missing
    cut = [ln for ln in lines if json.loads(ln)["role"] != "original" or json.loads(ln)["N"] == 0]
    (tmp_path / "results.jsonl").write_text("\n".join(cut) + "\n" + lines[-1][:40])
    df3 = run_attack(str(degraded), "finetune", "forget", **kw)
    assert len(calls) == 11 and len(df3) == len(df)
    pd.testing.assert_series_equal(
        df3.sort_values(["role", "N", "seed", "metric"])["value"].reset_index(drop=True),
        df.sort_values(["role", "N", "seed", "metric"])["value"].reset_index(drop=True))
    assert checkpoint_digest(degraded) == before


def test_append_after_a_cut_line_keeps_the_new_rows(tmp_path):
    """A kill mid-write leaves a line without its newline; the next append must not merge
    into it (the cut row is dropped by the reader, the new one survives)."""
    from interp_unlearn.attacks.floor import _append, read_results
    path = tmp_path / "results.jsonl"
    _append(path, [{"a": 1}])
    with path.open("a") as f:
        f.write('{"a": 2, "cut')
    _append(path, [{"a": 3}])
    assert [r["a"] for r in read_results(path)] == [1, 3]
