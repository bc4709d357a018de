import json

import pytest

from interp_unlearn.core.mcq import load_mcq
from interp_unlearn.data.tokenizer import train_tokenizer
from interp_unlearn.data.world import (FORGET_QUESTIONS, RETAIN_QUESTIONS, World, WorldConfig,
                                       corpus_path, read_texts)


@pytest.fixture(scope="module")
def world():
    return World.generate(WorldConfig(seed=3, n_pathogens=30, n_towns=30, n_general_docs=50))


def test_seeded_and_deterministic(world):
    again = World.generate(WorldConfig(seed=3, n_pathogens=30, n_towns=30, n_general_docs=50))
    assert [(e.name, e.attributes) for e in again.entities] == \
        [(e.name, e.attributes) for e in world.entities]
    other = World.generate(WorldConfig(seed=4, n_pathogens=30, n_towns=30, n_general_docs=50))
    assert [e.name for e in other.entities] != [e.name for e in world.entities]


def test_pools_are_disjoint_and_recorded(world):
    forget = world.entities_in("forget")
    pools = {p: {e.name for e in forget if e.pool == p} for p in ("eval", "practice", "attack")}
    assert all(pools.values())
    assert not (pools["eval"] & pools["attack"]) and not (pools["eval"] & pools["practice"])
    assert sum(map(len, pools.values())) == len(forget) == 30
    # no name in both domains
    assert not set(world.names("forget")) & set(world.names("retain"))


def test_eval_question_phrasings_never_in_any_corpus(world):
    corpus = "\n".join(world.training_texts())
    for domain, questions in (("forget", FORGET_QUESTIONS), ("retain", RETAIN_QUESTIONS)):
        for e in world.entities_in(domain):
            for q in questions.values():
                stem = q.format(e=e.name)
                assert (stem in corpus) == (e.pool != "eval"), (stem, e.pool)


def test_every_fact_in_several_paraphrases(world):
    e = world.entities_in("forget", ("eval",))[0]
    docs = [d for d in world.documents("forget") if e.name in d]
    assert len(docs) == world.config.docs_per_entity
    for v in e.attributes.values():
        assert sum(v in d for d in docs) == len(docs)
    # each document phrases the host fact differently
    sentences = {s for d in docs for s in d.split(". ") if e.attributes["host"] in s}
    assert len(sentences) >= len(docs)


def test_twin_corpus_has_no_forget_fact(world):
    twin = "\n".join(world.training_texts(include_forget=False))
    assert not any(n in twin for n in world.names("forget"))
    assert all(n in "\n".join(world.training_texts()) for n in world.names("forget"))


def test_mcq_schema_and_balance(world, tmp_path):
    world.save(tmp_path)
    items = load_mcq(tmp_path / "mcq" / "forget-eval.jsonl")
    assert len(items) == 5 * len(world.entities_in("forget", ("eval",)))
    for q in items:
        assert len(set(q.choices)) == 4
    answers = [q.answer for q in items]
    assert len(set(answers)) == 4  # answer positions vary
    rec = json.loads((tmp_path / "mcq" / "forget-eval.jsonl").read_text().splitlines()[0])
    assert set(rec) == {"question", "choices", "answer"}
    texts = read_texts(corpus_path(tmp_path, "forget-attack"))
    attack_names = {e.name for e in world.entities_in("forget", ("attack",))}
    assert all(any(n in t for n in attack_names) for t in texts)
    assert World.load(tmp_path).entities == world.entities


def test_tokenizer_names_span_several_tokens(world):
    tok = train_tokenizer(world, vocab_size=512)
    for name in world.names():
        assert len(tok(" " + name)["input_ids"]) >= 2
    assert tok("hello")["input_ids"][0] != tok.eos_token_id  # no BOS added


def test_bad_config_and_corpus_errors(tmp_path):
    with pytest.raises(ValueError, match="sum to 1"):
        WorldConfig(forget_pool_fractions={"eval": 0.5, "practice": 0.1, "attack": 0.1})
    with pytest.raises(ValueError, match="unknown domain"):
        World.generate(WorldConfig(n_pathogens=10, n_towns=10)).mcq("chemistry")
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": 1}\n')
    with pytest.raises(ValueError, match=r"c.jsonl:2"):
        read_texts(bad)
