"""The CLI is a thin main(argv) over the library: each subcommand, end to end on micro."""

import json

from interp_unlearn.cli import build_parser, main


def test_help_lists_every_command():
    text = build_parser().format_help()
    for cmd in ("evaluate", "organism", "localize", "unlearn"):
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
