"""The Python front door (``import interp_unlearn as iu``): verbs over loaded models or
names, the same results as the lower-level functions, and a twin-less floor reported as
unavailable."""

from __future__ import annotations

import json

import pytest

import interp_unlearn as iu
from interp_unlearn.evaluation.scoring import EvalConfig, evaluate_mcq
from interp_unlearn.pipeline.cli import main


def test_verbs_are_exported_and_subpackages_stay_packages():
    for verb in ("load", "evaluate", "localize", "unlearn", "attack", "lens", "depth"):
        assert verb in iu.__all__ and callable(getattr(iu, verb))
    # the subpackages are still subpackages (their names import) and are callable verbs
    from interp_unlearn.localize import LocalizeConfig
    from interp_unlearn.unlearn import UnlearnConfig, unlearn
    assert iu.localize.LocalizeConfig is LocalizeConfig
    assert iu.unlearn.UnlearnConfig is UnlearnConfig and callable(unlearn)


def test_load_passes_a_loaded_model_through(micro):
    assert iu.load(micro) is micro


def test_evaluate_equals_evaluate_mcq_with_the_models_scoring(micro, one_thread):
    items = micro.mcq_path("forget")
    got = iu.evaluate(micro, "forget")
    want = evaluate_mcq(micro.model, micro.tokenizer, items, EvalConfig(scoring="cloze"))
    assert got.scoring == "cloze" == micro.default_scoring
    assert got.accuracy == want.accuracy and got.n == want.n
    # a bare model with its tokenizer, a file: the checkpoint's own scoring still applies
    bare = iu.evaluate(micro.model, items, tokenizer=micro.tokenizer)
    assert bare.accuracy == want.accuracy
    letter = iu.evaluate(micro, "forget", scoring="letter")
    assert letter.scoring == "letter"


def test_evaluate_names_what_is_missing(micro):
    with pytest.raises(ValueError, match="tokenizer="):
        iu.evaluate(micro.model, micro.mcq_path("forget"))
    with pytest.raises(ValueError, match="own set"):
        iu.evaluate(micro.model, "forget", tokenizer=micro.tokenizer)
    with pytest.raises(ValueError, match="pool="):
        iu.evaluate(micro, micro.mcq_path("forget"), pool="eval")


def test_lens_is_the_logit_lens_table(micro, one_thread):
    df = iu.lens(micro, "forget")
    assert set(df["domain"]) == {"forget"}
    assert list(df["block"]) == list(range(micro.model.config.num_hidden_layers))
    assert df["accuracy"].between(0, 1).all()


def test_unlearn_verb_trains_and_saves(tmp_path, one_thread):
    res = iu.unlearn("organism-micro", "rmu", out_dir=tmp_path / "rmu", steps=1)
    assert (tmp_path / "rmu" / "config.json").is_file()
    assert set(res.after) >= {"forget", "retain"}


@pytest.fixture(scope="module")
def twinless(micro, tmp_path_factory):
    """The micro organism saved as a plain HF checkpoint: no interp_unlearn.json, so no
    derivable twin or original."""
    d = tmp_path_factory.mktemp("plain")
    micro.model.save_pretrained(d)
    micro.tokenizer.save_pretrained(d)
    return d


def test_a_floor_without_twin_is_reported_unavailable(twinless, micro, one_thread):
    with pytest.warns(RuntimeWarning, match="unavailable"):
        df = iu.attack(twinless, "quantize", samples=[0], seeds=[0],
                       mcq=micro.mcq_path("forget"))
    rec = df[df["metric"] == "recovery"]
    acc = df[(df["metric"] == "accuracy") & (df["domain"] == "forget")]
    assert len(rec) == len(acc) > 0 and rec["value"].isna().all()  # one per accuracy row
    assert all("no never-learned twin" in json.loads(i)["unavailable"] for i in rec["info"])
    assert "no never-learned twin" in df.attrs["unavailable"]
    assert set(df["role"]) == {"target"}


def test_attack_cli_takes_mcq_files_and_says_recovery_is_unavailable(twinless, micro, tmp_path,
                                                                      capsys):
    forget = str(micro.mcq_path("forget"))
    retain = str(micro.mcq_path("retain"))
    with pytest.warns(RuntimeWarning):
        assert main(["attack", "--model", str(twinless), "--kind", "quantize", "--samples",
                     "0", "--seeds", "0", "--forget-mcq", forget, "--retain-mcq", retain,
                     "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "recovery: unavailable (no never-learned twin" in out
    rows = [json.loads(line) for line in (tmp_path / "a" / "results.jsonl").open()]
    assert {r["domain"] for r in rows} == {"forget", "retain"}


def test_attack_cli_checks_mcq_files_before_loading(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "choices": ["a"], "answer": 0}\n')
    assert main(["attack", "--model", "organism-micro", "--kind", "quantize",
                 "--forget-mcq", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:1" in err and len(err.strip().splitlines()) == 1


def test_the_old_evaluate_module_path_keeps_the_verb_callable(micro, one_thread):
    """``import interp_unlearn.evaluate`` (0.1's module path, kept until 0.2) rebinds
    ``iu.evaluate`` to the module it aliases; the verb still works."""
    import importlib
    import sys

    sys.modules.pop("interp_unlearn.evaluate", None)  # a fresh import through the alias
    with pytest.warns(DeprecationWarning):
        old = importlib.import_module("interp_unlearn.evaluate")
    assert hasattr(old, "evaluate_mcq")
    assert iu.evaluate(micro, "forget").scoring == "cloze"
