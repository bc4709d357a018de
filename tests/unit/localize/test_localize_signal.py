"""interp_unlearn.localize: phase-1 objectives (answer-ce masks, Q/A pools), several seeds and
``stability.json``, bad options failing before training, the organism's K, the grid's
per-seed localization. On a tiny Llama and the micro organism."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from interp_unlearn.core.bridge import to_bridge
from interp_unlearn.localize import (HEADS_FILE, ORGANISM_OBJECTIVE, SCORES_FILE,
                                     LocalizationResult, LocalizeConfig, localize)
from interp_unlearn.core.selection import select_heads

N_LAYERS, N_HEADS, D_HEAD = 4, 4, 16
FAST = dict(steps=8, batch_size=4, seq_len=32, top_k=3)


@pytest.fixture(scope="module")
def bridge(tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=N_HEADS * D_HEAD, num_hidden_layers=N_LAYERS,
                         num_attention_heads=N_HEADS, num_key_value_heads=2,
                         intermediate_size=128, vocab_size=len(tokenizer),
                         max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return to_bridge(LlamaForCausalLM(config).eval(), tokenizer)


@pytest.fixture(scope="module")
def texts(world):
    return world.documents("forget")[:16]


def test_answer_ce_masks_everything_but_the_answer(tokenizer):
    from interp_unlearn.localize import causal_lm_loss, collate_rows, qa_rows

    texts = ["Question: Which animal is the natural host of Vorkel?\nAnswer: bats",
             "Question: How is Vorkel transmitted?\nAnswer: contaminated water",
             "A plain note. Answer: not this one. Answer: shared needles"]
    answers = [" bats", " contaminated water", " shared needles"]  # after the LAST marker
    rows = qa_rows(tokenizer, texts, seq_len=64)
    ids, mask, labels = collate_rows(rows, pad_id=tokenizer.pad_token_id)
    for i, ans in enumerate(answers):
        ans_ids = tokenizer(ans, add_special_tokens=False)["input_ids"]
        n = int(mask[i].sum())
        # oracle: the labelled positions are exactly the last len(answer) real tokens
        expected = torch.full((ids.shape[1],), -100)
        expected[n - len(ans_ids):n] = torch.tensor(ans_ids)
        assert torch.equal(labels[i], expected), i
        assert tokenizer.decode(labels[i][labels[i] != -100]) == ans
    # the loss is the mean CE of exactly those tokens, each predicted from the one before
    logits = torch.randn(*ids.shape, len(tokenizer), generator=torch.Generator().manual_seed(0))
    terms = [-torch.log_softmax(logits[i, t - 1], -1)[ids[i, t]]
             for i in range(len(texts)) for t in range(ids.shape[1]) if labels[i, t] != -100]
    assert causal_lm_loss(logits, labels).item() == pytest.approx(torch.stack(terms).mean().item(),
                                                                  rel=1e-5)
    with pytest.raises(ValueError, match="text 1 has no answer marker"):
        qa_rows(tokenizer, ["Question: a\nAnswer: b", "no marker here"], 64)
    with pytest.raises(ValueError, match="empty answer"):
        qa_rows(tokenizer, ["Question: a\nAnswer:  "], 64)


def test_qa_objectives_never_use_eval_and_paraphrases_are_unseen(world):
    from interp_unlearn.localize import PARAPHRASE_QUESTIONS, forget_qa, paraphrase_qa

    eval_names = set(world.names("forget")) - {e.name for p in ("practice", "attack")
                                               for e in world.entities_in("forget", (p,))}
    for lines in (forget_qa(world, ("practice", "attack")), paraphrase_qa(world, ("practice",))):
        assert lines and not any(n in line for n in eval_names for line in lines)
    assert set(forget_qa(world, ("practice", "attack"))) == set(world.practice_qa("forget"))
    corpus = "\n".join(world.training_texts())
    stems = [q.split("{e}")[0] for qs in PARAPHRASE_QUESTIONS.values() for q in qs]
    assert all(stem not in corpus for stem in stems)  # phrasings the organism never saw
    with pytest.raises(ValueError, match="qa_pools.*never the scored eval"):
        LocalizeConfig(qa_pools=("eval",))


def test_bad_options_raise_before_training(bridge, tokenizer, texts, monkeypatch):
    import interp_unlearn.localize.core as core

    def no_training(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(core, "collate_rows", no_training)
    with pytest.raises(ValueError, match=r"top_k must be in 1\.\.16 .*got 17"):
        localize(bridge, tokenizer, texts, LocalizeConfig(top_k=17), progress=False)
    with pytest.raises(ValueError, match="objective must be one of"):
        LocalizeConfig(objective="loss")
    with pytest.raises(ValueError, match="paraphrase-ce.*World"):
        localize(bridge, tokenizer, texts, LocalizeConfig(objective="paraphrase-ce"), progress=False)
    for bad in ("0,0", 0, [-1], "", "a,b"):
        with pytest.raises(ValueError, match="seeds"):
            LocalizeConfig(seeds=bad)
    assert LocalizeConfig(seeds=3).seeds == (0, 1, 2) and LocalizeConfig(seeds="4,1").seeds == (4, 1)


def test_cli_rejects_bad_options_before_loading(monkeypatch, tmp_path):
    import interp_unlearn.data.loading as loading
    from interp_unlearn.pipeline.cli import main

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("model loaded")))
    for argv, match in ((["--seeds", "1,1"], "seeds"), (["--top-k", "0"], "top_k must be"),
                        (["--qa-pools", "eval"], "qa_pools"), (["--seed", "1", "--seeds", "0-1"],
                                                               "not both")):
        with pytest.raises(ValueError, match=match):
            main(["localize", "--model", "organism-micro", "--out", str(tmp_path), "--debug"]
                 + argv)
    assert main(["localize", "--model", "organism-micro", "--out", str(tmp_path),
                 "--objective", "bogus"]) == 2


def test_spearman_and_jaccard():
    from interp_unlearn.localize import jaccard, spearman

    x = np.random.default_rng(0).random(36)
    assert spearman(x, x) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)  # scipy
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert jaccard([(0, 1), (0, 2)], [[0, 2], (1, 1)]) == pytest.approx(1 / 3)


def test_localize_seeds_aggregate_and_stability(bridge, tokenizer, texts, tmp_path):
    from interp_unlearn.localize import localize_seeds

    multi = localize_seeds(bridge, tokenizer, texts, LocalizeConfig(**FAST), seeds=[0, 5],
                           progress=False)
    assert list(multi.runs) == [0, 5] and multi.result.config.seeds == (0, 5)
    mean = (multi.runs[0].scores["score"] + multi.runs[5].scores["score"]) / 2
    np.testing.assert_allclose(multi.result.scores["score"], mean)
    assert multi.result.selected == select_heads(multi.result.scores, "top-k", k=3)
    st = multi.stability
    assert st["K"] == 3 and st["seeds"] == [0, 5] and st["objective"] == "corpus-ce"
    assert len(st["spearman"]["pairs"]) == 1 and -1 <= st["spearman"]["mean"] <= 1
    rep = st["per_seed"]["5"]
    assert rep["dither"] == pytest.approx(multi.runs[5].history["lr"].iloc[-1] * D_HEAD ** 0.5)
    assert rep["max_over_dither"] == pytest.approx(rep["max_score"] / rep["dither"])
    paths = multi.save(tmp_path / "L")
    assert (tmp_path / "L" / "seed5" / SCORES_FILE).is_file() and paths["stability"].is_file()
    back = LocalizationResult.load(tmp_path / "L")
    assert back.selected == multi.result.selected and "score_sd" in back.scores


STABILITY_KEYS = {"objective", "l1_lambda", "lr", "K", "seeds", "n_heads_total", "per_seed",
                  "max_over_dither", "spearman", "jaccard_top_k", "aggregate_top_k"}
SCALE_KEYS = {"max_score", "median_score", "max_over_median", "last_lr", "dither",
              "max_over_dither", "ce_before", "ce_after", "ce_reduction", "top_k"}


def test_cli_seeds_writes_stability_json(tmp_path, capsys):
    from interp_unlearn.pipeline.cli import main
    from interp_unlearn.data.loading import CheckpointError, load_model

    try:
        load_model("organism-micro")
    except CheckpointError:
        pytest.skip("organism-micro is not built")
    out = tmp_path / "L"
    assert main(["localize", "--model", "organism-micro", "--seeds", "0-1", "--steps", "2",
                 "--top-k", "2", "--out", str(out), "--formats", "html", "--json",
                 "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    st = json.loads((out / "stability.json").read_text())
    assert STABILITY_KEYS <= set(st) and st["seeds"] == [0, 1] == printed["seeds"]
    assert set(st["per_seed"]) == {"0", "1"} and SCALE_KEYS <= set(st["per_seed"]["0"])
    assert {"mean", "min", "pairs"} <= set(st["spearman"]) and st["K"] == 2
    assert st["objective"] == ORGANISM_OBJECTIVE == printed["objective"]
    for s in (0, 1):
        assert (out / f"seed{s}" / SCORES_FILE).is_file()
    top = json.loads((out / HEADS_FILE).read_text())["heads"]
    assert top == st["aggregate_top_k"] == printed["selected_heads"]
    assert (out / "head_sensitivity.html").is_file()


def test_organism_localization_default_k_is_4():
    from interp_unlearn.data.loading import CheckpointError, load_model
    from interp_unlearn.pipeline.presets import ORGANISM_TOP_K, localize_config

    try:
        lm = load_model("organism")
    except CheckpointError:
        pytest.skip("the shipped organism is not present")
    cfg = localize_config(lm)
    assert ORGANISM_TOP_K == 4 and cfg.top_k == 4 and cfg.l1_lambda == 1e-4
    assert cfg.objective == "auto" and ORGANISM_OBJECTIVE == "answer-ce"
    assert localize_config(lm, top_k=2, l1_lambda=0.0).top_k == 2  # overrides win


def test_reproduce_grid_localizes_per_seed():
    from interp_unlearn.pipeline.reproduce import ReproduceConfig, build_plan
    from interp_unlearn.pipeline.reproduce.parallel import dependencies

    cfg = ReproduceConfig.from_dict(dict(
        model="organism-micro", seeds=[0, 1], ablation_seeds=[2], methods=["rmu", "almpu"],
        table1_sizes=[0], table2_sizes=[0], ablation_sizes=[0], head_variants=["adaptive"],
        location_variants=["early"]))
    plan = build_plan(cfg)
    loc = {c.seed: c.key for c in plan if c.kind == "localize"}
    assert sorted(loc) == [0, 1, 2]
    deps = dependencies(plan)
    almpu = [c for c in plan if c.kind == "unlearn" and c.model.startswith("almpu")]
    assert {c.seed for c in almpu} == {0, 1, 2}
    for c in almpu:  # Table 1 ALMPU and the Table 3/4 variants read their own seed's heads
        assert deps[c.key] == {loc[c.seed]}, c.label
    rmu = [c for c in plan if c.kind == "unlearn" and c.model == "rmu"]
    assert rmu and all(not deps[c.key] for c in rmu)
