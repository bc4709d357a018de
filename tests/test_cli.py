"""The CLI is a thin main(argv) over the library: each subcommand, end to end on micro."""

import json

from interp_unlearn.pipeline.cli import build_parser, main


def test_help_lists_every_command():
    text = build_parser().format_help()
    for cmd in ("evaluate", "organism", "localize", "unlearn", "attack", "logit-lens",
                "reproduce", "figures"):
        assert cmd in text


def test_localize_cli_writes_files(tmp_path, capsys):
    out = tmp_path / "loc"
    assert main(["localize", "--model", "organism-micro", "--top-k", "3", "--out", str(out),
                 "--steps", "3", "--batch-size", "4", "--formats", "html", "--json",
                 "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(res["selected_heads"]) == 3
    for f in ("scores.csv", "selected_heads.json", "localize_config.json",
              "head_sensitivity.html"):
        assert (out / f).is_file(), f
    heads = json.loads((out / "selected_heads.json").read_text())
    assert json.loads((out / "localize_config.json").read_text())["steps"] == 3
    assert "plotly" in (out / "head_sensitivity.html").read_text()[:100000]
    assert heads


def test_attack_cli_quantize_with_floor(tmp_path, capsys):
    out = tmp_path / "att"
    assert main(["attack", "--model", "organism-micro", "--kind", "quantize", "--samples", "0",
                 "--seeds", "1", "--out", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"accuracy", "ue"} <= {r["metric"] for r in rows}
    assert (out / "results.jsonl").is_file()


def test_logit_lens_cli(tmp_path, capsys):
    assert main(["logit-lens", "--model", "organism-micro", "--out", str(tmp_path),
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {r["block"] for r in rows} == {0, 1, 2, 3}


def test_localize_cli_takes_a_local_forget_corpus_and_dtype(tmp_path, capsys):
    """The path a real model uses: forget texts from a local JSONL file (the
    ``cais/wmdp-corpora`` schema), bf16 weights."""
    corpus = tmp_path / "bio-forget-corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"Prafobella lives in bats, case {i}."}) + "\n"
                              for i in range(12)))
    out = tmp_path / "loc"
    assert main(["localize", "--model", "organism-micro", "--top-k", "2", "--steps", "2",
                 "--forget-corpus", str(corpus), "--max-texts", "8", "--dtype", "bfloat16",
                 "--out", str(out), "--formats", "html", "--json", "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(res["selected_heads"]) == 2
    heads = json.loads((out / "selected_heads.json").read_text())
    assert heads["n_texts"] == 8, heads


def test_attack_cli_head_restore_delta_at_given_heads(tmp_path, capsys):
    """`attack --heads` attacks chosen heads of any model (RMU included) with the shared
    head adversary; its radius is reported relative to κ·E‖z‖."""
    assert main(["attack", "--model", "organism-micro", "--kind", "head-restore",
                 "--mode", "delta", "--heads", "0.0,1.1", "--kappa", "1", "--samples", "2",
                 "--seeds", "1", "--no-floor", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    acc = [r for r in rows if r["metric"] == "accuracy"][0]
    config, info = (c if isinstance(c, dict) else json.loads(c)
                    for c in (acc["config"], acc["info"]))
    assert config["heads"] == [[0, 0], [1, 1]] and config["kappa"] == 1.0
    assert len(info["delta_over_eps"]) == 2
    assert all(0 < x <= 1.0 + 1e-5 for x in info["delta_over_eps"])


def test_attack_cli_rejects_head_options_for_other_kinds():
    import pytest

    with pytest.raises(ValueError, match="only apply to --kind head-restore"):
        main(["attack", "--model", "organism-micro", "--kind", "quantize", "--heads", "0.0",
              "--samples", "0", "--seeds", "1", "--no-floor"])
    with pytest.raises(ValueError, match="--lr must be > 0"):
        main(["attack", "--model", "organism-micro", "--kind", "finetune", "--lr", "0",
              "--samples", "0", "--seeds", "1", "--no-floor"])
