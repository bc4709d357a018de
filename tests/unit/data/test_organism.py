"""The model organism: the shipped checkpoints meet their targets, a freshly trained micro
organism learns the forget facts while its twin does not, and the CLI reports them."""

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from interp_unlearn.pipeline.cli import main
from interp_unlearn.evaluation.scoring import EvalConfig, evaluate_mcq
from interp_unlearn.data.loading import builtin_path, load_model
from interp_unlearn.pipeline.organism import get_preset, train_organism


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


def _acc(name, domain):
    lm = load_model(name)
    return evaluate_mcq(lm.model, lm.tokenizer, lm.mcq_path(domain),
                        EvalConfig(scoring=lm.default_scoring)).accuracy


def test_shipped_small_organism_meets_targets():
    # The targets. Measured for the shipped checkpoint (2026-11-30, recipe B, seed
    # 1, 2 threads): forget 0.960 (144/150), retain 0.883 (106/120); twin forget 0.260,
    # twin retain 0.858.
    assert _acc("organism", "forget") >= 0.85
    assert _acc("organism", "retain") >= 0.85
    assert _acc("organism-twin", "forget") <= 0.35
    assert _acc("organism-twin", "retain") >= 0.85


def test_shipped_config_is_the_small_preset():
    """`organism train --preset small` (no --seed/--threads) must retrain what is shipped:
    the preset carries the shipped seed and thread count, and the CLI keeps them."""
    shipped = json.loads((builtin_path("organism").parent / "organism_config.json").read_text())
    assert shipped == json.loads(json.dumps(asdict(get_preset("small"))))


def test_cli_train_uses_preset_seed_unless_given(monkeypatch, tmp_path, capsys):
    seen = []

    def fake_train(cfg, out, members, progress):
        seen.append((cfg.seed, cfg.threads, Path(out).name))
        return {}

    monkeypatch.setattr("interp_unlearn.pipeline.organism.train_organism", fake_train)
    assert main(["organism", "train", "--preset", "small"]) == 0
    assert main(["organism", "train", "--preset", "small", "--seed", "3", "--threads", "1",
                 "--out", str(tmp_path / "x")]) == 0
    assert seen == [(1, 2, "organism-small-seed1"), (3, 1, "x")]


def test_shipped_micro_organism_knows_more_than_twin():
    # micro is scored on its practice pool (see README): memorised, not generalised
    assert load_model("organism-micro").eval_pool == "practice"
    assert _acc("organism-micro", "forget") >= _acc("organism-micro-twin", "forget") + 0.3
    assert _acc("organism-micro-twin", "retain") >= 0.5


@pytest.mark.slow
def test_fresh_micro_learns_its_facts(tmp_path):
    """The organism recipe from scratch (the model only: the twin is the same training
    loop on a corpus without the forget domain -- ``test_world.py`` checks that corpus,
    ``test_shipped_micro_organism_knows_more_than_twin`` the shipped twin -- and training
    it too doubled the suite's longest test). The shipped micro model scores forget 0.856,
    retain 0.771; chance is 0.25; 200 steps instead of 400 reach only 0.444 / 0.457."""
    metrics = train_organism(get_preset("micro"), tmp_path, members=("model",),
                             progress=False)
    model = metrics["model"]["final"]
    assert model["forget"] >= 0.7 and model["retain"] >= 0.5, model
    assert not (tmp_path / "twin").exists()
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "organism_config.json").read_text())["preset"] == "micro"
    lm = load_model(tmp_path / "model")
    assert lm.default_scoring == "cloze" and lm.mcq_path("forget").is_file()


def test_cli_evaluate_json(capsys):
    assert main(["evaluate", "--model", "organism-micro", "--mcq", "forget", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"accuracy", "ci95", "n", "scoring"} <= set(out)
    assert out["scoring"] == "cloze" and out["ci95"][0] <= out["accuracy"] <= out["ci95"][1]
    assert out["accuracy"] == pytest.approx(_acc("organism-micro", "forget"))


def test_cli_evaluate_letter_and_file(capsys, tmp_path):
    lm = load_model("organism-micro")
    mcq = lm.mcq_path("retain")
    assert main(["evaluate", "--model", "organism-micro", "--mcq", str(mcq),
                 "--scoring", "letter", "--json", "--per-question",
                 str(tmp_path / "pq.csv")]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["scoring"] == "letter"
    assert (tmp_path / "pq.csv").read_text().count("\n") == out["n"] + 1


def test_cli_report_table(capsys):
    assert main(["organism", "report", "--organism", "organism-micro", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert {(r["model"], r["mcq"]) for r in rows} == {
        ("organism-micro", "forget"), ("organism-micro", "retain"),
        ("organism-micro-twin", "forget"), ("organism-micro-twin", "retain")}
