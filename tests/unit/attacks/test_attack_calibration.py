"""The model-scaled attack lr, the taught/restored split, and bad attack inputs (micro)."""

import json
from dataclasses import asdict

import pandas as pd
import pytest
import torch

from interp_unlearn.attacks import finetune as finetune_mod
from interp_unlearn.attacks import finetune_attack
from interp_unlearn.attacks.common import attack_corpus, run_eval_for, sample_texts
from interp_unlearn.attacks.finetune import ATTACK_LR, PAPER_LR, attack_lr
from interp_unlearn.attacks.taught import entities_named, question_entities
from interp_unlearn.data.loading import load_model
from interp_unlearn.core.mcq import load_mcq
from interp_unlearn.data.world import World, WorldConfig

torch.set_num_threads(1)
MICRO = "organism-micro"


@pytest.fixture(scope="module")
def micro():
    return load_model(MICRO)


def test_attack_lr_resolves_per_family(tmp_path):
    assert attack_lr(MICRO) == (ATTACK_LR["organism-micro"], "organism-micro")
    assert attack_lr("organism") == (ATTACK_LR["organism"], "organism")
    assert ATTACK_LR["organism"] > PAPER_LR  # scaled up from the 7B rate
    zephyr = tmp_path / "zephyr-7b-beta"
    zephyr.mkdir()
    (zephyr / "config.json").write_text(json.dumps({"model_type": "mistral",
                                                    "num_hidden_layers": 32}))
    assert attack_lr(str(zephyr)) == (PAPER_LR, "zephyr") and PAPER_LR == 2e-4
    other = tmp_path / "some-gpt"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 12}))
    assert attack_lr(str(other))[0] == PAPER_LR  # unknown family: the paper's rate


def test_resolved_lr_is_recorded(micro, monkeypatch):
    seen = []
    real = finetune_mod.train_on_texts

    def spy(model, tok, texts, config, seed, **kw):
        seen.append(config.lr)
        return real(model, tok, texts, config, seed, **kw)

    monkeypatch.setattr(finetune_mod, "train_on_texts", spy)
    res = finetune_attack(micro, 2, seed=0, lora_rank=4, epochs=1)
    assert seen == [ATTACK_LR["organism-micro"]] and res.config["lr"] == seen[0]
    assert res.info["lr_family"] == "organism-micro"
    paper = finetune_attack(micro, 2, seed=0, config="paper", lora_rank=4, epochs=1)
    assert seen[-1] == 2e-4 and paper.config["lr"] == 2e-4 and "lr_family" not in paper.info


def test_bad_inputs_raise_before_training(micro, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(finetune_mod, "train_on_texts", boom)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        finetune_attack(micro, 5, lr=-1e-3)
    with pytest.raises(ValueError, match="lr must be"):
        finetune_attack(micro, 5, lr=float("nan"))
    with pytest.raises(ValueError, match="pool must be one of"):
        finetune_attack(micro, 5, pool="eval")
    corpus, _, _ = attack_corpus(micro.world_dir, "forget", "attack")
    with pytest.raises(ValueError, match=rf"N must be in 0..{len(corpus)} unless repetition"):
        finetune_attack(micro, len(corpus) + 1, pool="attack")
    with pytest.raises(ValueError, match="unknown fine-tuning option"):
        finetune_attack(micro, 5, learning_rate=1e-3)
    with pytest.raises(ValueError, match="unknown fine-tuning preset"):
        finetune_attack(micro, 5, config="qlora")
    from interp_unlearn.pipeline.reproduce import ReproduceConfig
    with pytest.raises(ValueError, match="lr must be"):
        ReproduceConfig(attack_overrides={"lr": 0})
    with pytest.raises(ValueError, match="unknown fine-tuning preset"):
        ReproduceConfig(attack_config="lucki")
    kw = ReproduceConfig(attack_config="paper").attack_kwargs()
    assert kw["config"] == "paper" and kw["repeat"] is True


def test_entity_names_match_on_word_boundaries(tmp_path):
    cfg = asdict(WorldConfig())
    ents = [{"name": n, "domain": "forget", "pool": "eval", "attributes": {}}
            for n in ("Vorkelvir", "Vorkelvirus", "Drusenella")]
    (tmp_path / "world.json").write_text(json.dumps({"config": cfg, "entities": ents}))
    docs = ["Vorkelvirus spreads through dust. Vorkelvirus is carried by bats."]
    assert entities_named(docs, tmp_path) == {"Vorkelvirus"}
    assert entities_named(["Vorkelvir spreads.", "Drusenella, then"], tmp_path) == {
        "Vorkelvir", "Drusenella"}
    assert question_entities(["How is Vorkelvir transmitted?", "Who founded Barby?"],
                             tmp_path) == ["Vorkelvir", None]
    assert entities_named(docs, tmp_path / "nowhere") is None


def test_taught_restored_split_on_a_hand_built_sample(micro):
    world = World.load(micro.world_dir)
    pool = micro.eval_pool  # the micro organism is scored on its practice pool
    scored = world.entities_in("forget", (pool,))
    attack_ent = world.entities_in("forget", ("attack",))[0]
    docs = world.documents("forget", (pool,))
    per = world.config.docs_per_entity
    # documents of the first two scored entities (one each) and one attack-pool entity
    sample = [docs[0], docs[per], world.documents("forget", ("attack",))[0]]
    taught = {scored[0].name, scored[1].name}
    assert entities_named(sample, micro.world_dir) == taught | {attack_ent.name}
    res = run_eval_for(micro, micro.model, attack="test", data="forget", pool="same", n=3,
                       seed=0, mcq=None, scoring=None, domains=("forget",), batch_size=32,
                       config={}, info={}, sample=sample)
    pq = res.evals["forget"].per_question
    is_taught = pq["question"].map(lambda q: any(e in q for e in taught))
    n_attr = len(scored[0].attributes)
    sp = res.split["forget"]
    assert sp["n_taught"] == 2 * n_attr == int(is_taught.sum())
    assert sp["n_restored"] == len(pq) - 2 * n_attr and sp["taught_entities"] == 2
    assert sp["accuracy_taught"] == pytest.approx(pq.loc[is_taught, "correct"].mean())
    assert sp["accuracy_restored"] == pytest.approx(pq.loc[~is_taught, "correct"].mean())
    rows = pd.DataFrame(res.rows()).set_index("metric")
    assert rows.loc["accuracy_taught", "n_questions"] == 2 * n_attr
    assert rows.loc["accuracy_restored", "value"] == pytest.approx(sp["accuracy_restored"])
    bits, ids = rows.loc["accuracy", "correct_bits"], rows.loc["accuracy", "entity_ids"]
    assert [c == "1" for c in bits] == pq["correct"].tolist()
    ids = ids.split(",")
    assert len(ids) == len(pq) and len(set(ids)) == len(scored)
    # the question -> entity map agrees with the world's MCQ order (5 per entity)
    ents = question_entities([q.question for q in load_mcq(micro.mcq_path("forget"))],
                             micro.world_dir)
    assert ents == [e.name for e in scored for _ in e.attributes]


def test_same_pool_attack_split_matches_its_sample(micro):
    """An attack that draws its own sample: the split is of *that* sample (re-drawn from
    data, pool, N and seed) and counts add up."""
    n, seed = 12, 3
    res = finetune_attack(micro, n, seed=seed, pool="same", lora_rank=4, epochs=1)
    corpus, _, _ = attack_corpus(micro.world_dir, "forget", "same")
    sample = sample_texts(corpus, n, seed)
    named = entities_named(sample, micro.world_dir)
    ents = question_entities(res.evals["forget"].per_question["question"].tolist(),
                             micro.world_dir)
    sp = res.split["forget"]
    assert sp["n_taught"] == sum(e in named for e in ents) > 0
    assert sp["n_taught"] + sp["n_restored"] == res.evals["forget"].n
    assert res.corpus_docs == len(corpus)


def test_e3_paired_script_runs_on_micro(tmp_path):
    """notes/scripts/e3_paired.py end to end with a tiny grid: two methods, two seeds."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "notes" / "scripts" / "e3_paired.py"
    spec = importlib.util.spec_from_file_location("e3_paired", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rep = mod.main(["--model", MICRO, "--out", str(tmp_path), "--methods", "ga,rmu",
                    "--seeds", "0,1", "--samples", "0,2",
                    "--unlearn", '{"*": {"max_num_batches": 2, "evaluate": false}}',
                    "--attack", '{"lora_rank": 4, "epochs": 1}'])
    assert (tmp_path / "paired.md").is_file() and (tmp_path / "per_seed.csv").is_file()
    per = pd.read_csv(tmp_path / "per_seed.csv")
    tgt = per[(per.role == "target") & (per.metric == "accuracy")]
    for n in (0, 2):
        d = rep[(rep.N == n) & (rep.metric == "accuracy") & (rep.interval == "paired t")]
        acc = {m: tgt[(tgt.method == m) & (tgt.N == n)].set_index("seed")["value"]
               for m in ("ga", "rmu")}
        assert d["mean"].item() == pytest.approx((acc["ga"] - acc["rmu"]).mean())
        boot = rep[(rep.N == n) & (rep.metric == "accuracy") & (rep.interval == "bootstrap")]
        assert boot["mean"].item() == pytest.approx(d["mean"].item())
        assert boot["low"].item() <= boot["mean"].item() <= boot["high"].item()
    assert set(rep["metric"]) >= {"accuracy", "ue", "recovery"}
