"""interp_unlearn.data: real dataset names and schemas, local files, the organism's world."""

import json
import time

import pandas as pd
import pytest

import interp_unlearn.data.loading as loading
from interp_unlearn.data.corpora import load_corpus, resolve_corpus
from interp_unlearn.data.datasets import (CORPORA, MCQ_DATASETS, GatedDatasetError,
                                          load_mcq_dataset, organism_world_dir, resolve_mcq)
from interp_unlearn.data.loading import OfflineError
from interp_unlearn.core.mcq import MCQ, MCQFormatError, load_mcq
from interp_unlearn.data.organism import ASSETS, META_FILE

# cais/wmdp records (extra keys are ignored, as on the hub)
RECORDS = [
    {"question": "Which of these is a virus?", "choices": ["E. coli", "Influenza", "Yeast", "Mold"],
     "answer": 1},
    {"question": "  What does PCR amplify?  ", "choices": ["DNA", "Lipids", "Sugars", "Ions"],
     "answer": 0},
    {"question": "Which organelle makes ATP?",
     "choices": ["Nucleus", "Ribosome", "Golgi", "Mitochondrion"], "answer": 3},
    {"question": "Pick C.", "choices": ["a", "b", "c", "d"], "answer": 2},
]
EXPECTED = [MCQ(r["question"], tuple(r["choices"]), r["answer"]) for r in RECORDS]

# wikitext-2-raw-v1 rows as the hub stores them: empty strings for blank lines
WIKI_ROWS = ["", " = Valkyria Chronicles III = \n", "",
             " Senjō no Valkyria 3 : Unrecorded Chronicles is a tactical role @-@ playing video "
             "game developed by Sega . \n",
             "", " = = Gameplay = = \n", "",
             " As with previous games , the player controls a squad of soldiers . \n"]
MICRO = ASSETS / "organism-micro"

HUB_MCQ = ["wmdp-bio", "wmdp-cyber", "wmdp-chem", "cais/wmdp:wmdp-bio", "wmdp_bio", "cais/mmlu:all"]
HUB_CORPORA = ["bio-retain-corpus", "cyber-forget-corpus", "cyber-retain-corpus",
               "cais/wmdp-corpora:cyber-forget-corpus", "wikitext", "wikitext-2-raw-v1"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    with (d / "wmdp-bio.jsonl").open("w") as f:
        for r in RECORDS:
            f.write(json.dumps({**r, "id": 7}) + "\n")
    (d / "wmdp-bio.json").write_text(json.dumps(RECORDS))
    # the hub's layout and types: wmdp-bio/test-00000-of-00001.parquet, answer int64,
    # choices list<string>
    (d / "wmdp-bio").mkdir()
    pd.DataFrame(RECORDS).to_parquet(d / "wmdp-bio" / "test-00000-of-00001.parquet")
    pd.DataFrame({"text": WIKI_ROWS}).to_parquet(d / "wiki.parquet")
    with (d / "wiki.jsonl").open("w") as f:
        for t in WIKI_ROWS:
            f.write(json.dumps({"text": t}) + "\n")
    (d / "wiki.test.raw").write_text("".join(t if t else "\n" for t in WIKI_ROWS))
    with (d / "bio_remove_dataset.jsonl").open("w") as f:
        for i in range(3):
            f.write(json.dumps({"title": f"t{i}", "abstract": "a", "text": f"paper {i} " * 10,
                                "doi": "10.1/x"}) + "\n")
    return d


# ------------------------------------------------------------------------------ MCQs


def test_mcq_local_formats_agree(files):
    assert load_mcq_dataset(files / "wmdp-bio.jsonl") == EXPECTED
    assert load_mcq_dataset(str(files / "wmdp-bio.json")) == EXPECTED
    parquet = files / "wmdp-bio" / "test-00000-of-00001.parquet"
    items = load_mcq_dataset(parquet)
    assert items == EXPECTED
    assert all(type(i.answer) is int and all(type(c) is str for c in i.choices) for i in items)
    assert load_mcq_dataset(files / "wmdp-bio") == EXPECTED  # hub-layout directory
    assert load_mcq_dataset(parquet, limit=2) == EXPECTED[:2]


def test_mcq_schema_errors_name_the_place(files, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(RECORDS[0]) + "\n" + json.dumps({"question": "q", "answer": 0}) + "\n")
    with pytest.raises(MCQFormatError, match=r"bad\.jsonl:2: missing field 'choices'"):
        load_mcq_dataset(bad)
    short = tmp_path / "short.parquet"
    pd.DataFrame([RECORDS[0], {**RECORDS[1], "choices": ["a", "b", "c"]}]).to_parquet(short)
    with pytest.raises(MCQFormatError, match=r"short\.parquet: row 1 .*exactly 4"):
        load_mcq_dataset(short)
    floaty = tmp_path / "floaty.parquet"
    pd.DataFrame([{**r, "answer": float(r["answer"])} for r in RECORDS]).to_parquet(floaty)
    with pytest.raises(MCQFormatError, match="'answer' must be an integer"):
        load_mcq_dataset(floaty)
    nocol = tmp_path / "nocol.parquet"
    pd.DataFrame({"prompt": ["x"]}).to_parquet(nocol)
    with pytest.raises(MCQFormatError, match="missing column"):
        load_mcq_dataset(nocol)
    arr = tmp_path / "arr.json"
    arr.write_text(json.dumps([RECORDS[0], {**RECORDS[0], "answer": 4}]))
    with pytest.raises(MCQFormatError, match=r"arr\.json: row 1 .*0\.\.3"):
        load_mcq_dataset(arr)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_mcq_dataset(tmp_path / "missing.parquet")
    with pytest.raises(ValueError, match="unknown MCQ dataset 'wmdp-bi0'"):
        load_mcq_dataset("wmdp-bi0")


@pytest.mark.parametrize("name", HUB_MCQ)
def test_mcq_hub_name_offline_fails_fast(name, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", _forbidden)
    t = time.time()
    with pytest.raises(OfflineError, match="local path"):
        load_mcq_dataset(name)
    assert time.time() - t < 2


def test_datasets_offline_alone_is_enough(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(loading, "hub_reachable", _forbidden)
    with pytest.raises(OfflineError, match="HF_DATASETS_OFFLINE"):
        load_corpus("wikitext")


def test_real_names_resolve_to_real_repos():
    assert MCQ_DATASETS["wmdp-bio"] == ("cais/wmdp", "wmdp-bio", "test")
    for name in ("wmdp-bio", "cais/wmdp:wmdp-bio", "wmdp_bio"):
        src = resolve_mcq(name)
        assert (src.kind, src.repo, src.config, src.split) == ("hub", "cais/wmdp", "wmdp-bio", "test")
    src = resolve_corpus("cyber-forget-corpus")
    assert (src.repo, src.config, src.split) == ("cais/wmdp-corpora", "cyber-forget-corpus", "train")
    src = resolve_corpus("wikitext")
    assert (src.repo, src.config, src.split) == ("Salesforce/wikitext", "wikitext-2-raw-v1", "test")
    assert set(CORPORA) == {"bio-retain-corpus", "cyber-forget-corpus", "cyber-retain-corpus",
                            "wikitext"}


def test_online_path_calls_load_dataset_with_real_names(monkeypatch):
    """The network branch, with datasets.load_dataset faked (no network here)."""
    import datasets

    calls = []

    def fake_load_dataset(repo, config=None, split=None):
        calls.append((repo, config, split))
        if repo == "cais/wmdp":
            return datasets.Dataset.from_list(RECORDS)
        return datasets.Dataset.from_list([{"text": t} for t in WIKI_ROWS])

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_mcq_dataset("wmdp-bio") == EXPECTED
    assert load_corpus("wikitext") == [t for t in WIKI_ROWS if t]
    assert load_corpus("cais/wmdp-corpora:bio-retain-corpus", min_len=50) == [WIKI_ROWS[3], WIKI_ROWS[7]]
    assert calls == [("cais/wmdp", "wmdp-bio", "test"),
                     ("Salesforce/wikitext", "wikitext-2-raw-v1", "test"),
                     ("cais/wmdp-corpora", "bio-retain-corpus", "train")]
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(OfflineError, match="cannot be reached"):
        load_mcq_dataset("wmdp-chem")


# ---------------------------------------------------------------------------- corpora


def test_wikitext_style_drops_empty_lines(files):
    nonempty = [t for t in WIKI_ROWS if t]
    assert load_corpus(files / "wiki.parquet") == nonempty
    assert load_corpus(files / "wiki.jsonl") == nonempty
    raw = load_corpus(files / "wiki.test.raw")
    assert raw == [t.rstrip("\n") for t in nonempty]
    # the RMU reference's get_data keeps len(text) > min_len (its default is 50)
    assert load_corpus(files / "wiki.parquet", min_len=50) == [WIKI_ROWS[3], WIKI_ROWS[7]]
    assert load_corpus(files / "wiki.parquet", limit=2) == nonempty[:2]
    with pytest.raises(ValueError, match="no texts longer than min_len=100000"):
        load_corpus(files / "wiki.parquet", min_len=100000)


@pytest.mark.parametrize("name", HUB_CORPORA)
def test_corpus_hub_name_offline_fails_fast(name, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", _forbidden)
    t = time.time()
    with pytest.raises(OfflineError, match="local path"):
        load_corpus(name)
    assert time.time() - t < 2


@pytest.mark.parametrize("name", ["bio-forget-corpus", "cais/wmdp-corpora:bio-forget-corpus",
                                  "cais/wmdp-bio-forget-corpus"])
def test_bio_forget_corpus_is_gated(name, files, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")  # gated, whatever the network
    with pytest.raises(GatedDatasetError, match=r"gated.*local JSONL path.*bio_remove_dataset\.jsonl"):
        load_corpus(name)
    texts = load_corpus(files / "bio_remove_dataset.jsonl")
    assert texts == [f"paper {i} " * 10 for i in range(3)]


def test_corpus_errors(files, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: expected an object with a string 'text'"):
        load_corpus(bad)
    nocol = tmp_path / "nocol.parquet"
    pd.DataFrame({"body": ["x"]}).to_parquet(nocol)
    with pytest.raises(ValueError, match="missing column 'text'"):
        load_corpus(nocol)
    with pytest.raises(FileNotFoundError, match="corpus file not found"):
        load_corpus(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="unknown corpus 'wikitxt'"):
        load_corpus("wikitxt")
    with pytest.raises(ValueError, match="limit"):
        load_corpus(files / "wiki.jsonl", limit=0)


# --------------------------------------------------------------------------- organism


def test_organism_mcq(tmp_path):
    world = MICRO / "world"
    # organism-micro's default pool is practice (its interp_unlearn.json eval_pool)
    assert json.loads((MICRO / "model" / META_FILE).read_text())["eval_pool"] == "practice"
    assert load_mcq_dataset("organism-micro:forget") == load_mcq(world / "mcq" / "forget-practice.jsonl")
    assert load_mcq_dataset("organism-micro:retain") == load_mcq(world / "mcq" / "retain-practice.jsonl")
    assert load_mcq_dataset("organism-micro:forget-eval") == load_mcq(world / "mcq" / "forget-eval.jsonl")
    assert load_mcq_dataset("organism-micro-twin:forget-attack") == \
        load_mcq(world / "mcq" / "forget-attack.jsonl")
    # a directory before the colon: organism dir, world dir, checkpoint dir
    for prefix in (MICRO, world, MICRO / "model"):
        assert load_mcq_dataset(f"{prefix}:forget-eval") == load_mcq(world / "mcq" / "forget-eval.jsonl")
    assert organism_world_dir("organism-micro") == world.resolve()
    with pytest.raises(ValueError, match="forget-eval"):
        load_mcq_dataset("organism-micro:general")
    with pytest.raises(ValueError, match="built-in"):
        load_mcq_dataset("organism-huge:forget")


def test_organism_corpora():
    corpora = MICRO / "world" / "corpora"

    def texts(name):
        return [json.loads(line)["text"] for line in (corpora / f"{name}.jsonl").read_text().splitlines()]

    assert load_corpus("organism-micro:forget") == \
        texts("forget-eval") + texts("forget-practice") + texts("forget-attack")
    assert load_corpus("organism-micro:retain") == texts("retain-eval") + texts("retain-practice")
    assert load_corpus("organism-micro:general") == texts("general")
    assert load_corpus("organism-micro:forget-attack") == texts("forget-attack")
    assert load_corpus("organism-micro:forget-qa", limit=3) == texts("forget-qa")[:3]
    with pytest.raises(FileNotFoundError, match="forget-attack"):  # lists the valid names
        load_corpus("organism-micro:attack")


def test_organism_not_built_or_built():
    """``organism:`` names the shipped default; before it is built the error says how."""
    if (ASSETS / "organism-small" / "model").is_dir():
        assert len(load_mcq_dataset("organism:forget")) > 0
        assert len(load_corpus("organism:general")) > 0
    else:
        with pytest.raises(loading.CheckpointError, match="organism train"):
            load_mcq_dataset("organism:forget")


def _forbidden(*args, **kwargs):
    raise AssertionError("must not be called")
