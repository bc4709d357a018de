"""The CLI is a thin main(argv) over the library: each subcommand, end to end on micro,
and the grammar every command shares (flags, --seeds, errors, --quiet, results dir)."""

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import interp_unlearn
from interp_unlearn.pipeline import commands
from interp_unlearn.pipeline.cli import CommandResult, build_parser, main
from interp_unlearn.pipeline.cli_common import (COMMON_FLAGS, UsageError, finish_common,
                                                parse_seeds_spec)

COMMANDS = (["evaluate"], ["organism"], ["organism", "train"], ["organism", "report"],
            ["localize"], ["unlearn"], ["attack"], ["logit-lens"], ["reproduce"], ["figures"])
SHARED = ("--model", "--out", "--seeds", "--device", "--dtype", "--json", "--quiet",
          "--debug")
REPO = Path(__file__).resolve().parents[2]


def _one_error_line(capsys) -> str:
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1, cap.err
    assert lines[0].startswith("interp-unlearn: error:"), lines[0]
    assert cap.out == ""
    return lines[0]


def _parse(argv):
    args = build_parser().parse_args(argv)
    return finish_common(args, args.command)


# ------------------------------------------------------------------- the shared grammar


def test_help_lists_every_command():
    text = build_parser().format_help()
    for cmd in ("evaluate", "organism", "localize", "unlearn", "attack", "logit-lens",
                "reproduce", "figures"):
        assert cmd in text


def test_the_shared_flags_are_these():
    assert [f"--{name}" for name in COMMON_FLAGS] == list(SHARED)


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_every_command_help_lists_the_shared_flags(cmd, capsys):
    assert main([*cmd, "--help"]) == 0
    text = capsys.readouterr().out
    assert "shared options" in text
    for flag in SHARED:
        assert flag in text, (cmd, flag)
    assert "--no-progress" in text  # the old spelling of --quiet, everywhere


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"interp-unlearn {interp_unlearn.__version__}"


def test_help_does_not_import_torch():
    code = ("import sys; from interp_unlearn.pipeline import cli; "
            "cli.build_parser().format_help(); "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "assert not bad, bad")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


@pytest.mark.parametrize("spec, seeds", [("0,2,5", [0, 2, 5]), ("0-4", [0, 1, 2, 3, 4]),
                                         ("3", [3]), ("0", [0]), ("2-2", [2]),
                                         (" 0-2, 7 ", [0, 1, 2, 7])])
def test_seeds_spec(spec, seeds):
    assert parse_seeds_spec(spec) == seeds


@pytest.mark.parametrize("spec", ["0-", "-1", "a,b", "1,1", "0-2,2", "4-0", "", "0,,1",
                                  "1.5", "0-2-4", "+1"])
def test_seeds_spec_rejects_malformed(spec):
    with pytest.raises(ValueError, match=r"comma list \(0,2,5\) or an inclusive range"):
        parse_seeds_spec(spec)


def test_seeds_flag_means_the_same_everywhere():
    """A single number is that seed (no longer a count), on every command."""
    at = ["attack", "--model", "organism-micro", "--kind", "quantize"]
    assert _parse(at + ["--seeds", "3"]).seeds == [3]
    assert _parse(at + ["--seeds", "0-2"]).seeds == [0, 1, 2]
    assert _parse(at).seeds == [0, 1, 2]  # attack's default: 0-2
    assert _parse(["localize", "--seeds", "1,4"]).seeds == [1, 4]
    assert _parse(["reproduce", "--seeds", "2"]).seeds == [2]
    assert _parse(["localize"]).seeds is None
    from interp_unlearn.pipeline.cli_common import one_seed
    assert one_seed(_parse(["unlearn", "--method", "rmu", "--seeds", "3"]), "unlearn") == 3
    args = build_parser().parse_args(["organism", "train", "--seeds", "5"])
    assert one_seed(finish_common(args, "organism train"), "organism train") == 5


def test_shared_flags_on_a_command_group_reach_its_subcommand():
    args = build_parser().parse_args(["organism", "--json", "--quiet", "report"])
    finish_common(args, "organism report")
    assert args.json and args.quiet and args.model == "organism" and args.device == "cpu"
    args = build_parser().parse_args(["organism", "report", "--organism", "organism-micro"])
    assert finish_common(args, "organism report").model == "organism-micro"


@pytest.mark.parametrize("argv, needle", [
    (["evaluate", "--bogus"], "unrecognized arguments: --bogus"),
    (["no-such-command"], "invalid choice"),
    (["attack", "--kind", "quantize"], "required: --model"),
    (["attack", "--model", "organism-micro", "--kind", "quantize", "--seeds", "0-"], "--seeds"),
    (["localize", "--seeds", "a,b"], "--seeds"),
    (["reproduce", "--seeds", "1,1"], "repeats"),
    (["localize", "--seeds", "-1"], "--seeds"),
    (["unlearn", "--method", "rmu", "--seeds", "0-2"], "runs one seed"),
    (["organism", "train", "--seeds", "0,1"], "runs one seed"),
    (["evaluate", "--dtype", "int8"], "--dtype"),
    (["figures", "--run", "/no/such/run"], "--run"),
])
def test_bad_arguments_are_one_line_and_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in _one_error_line(capsys)


def test_a_missing_model_directory_is_one_line(tmp_path, capsys):
    missing = str(tmp_path / "no-such-checkpoint")
    for cmd in (["evaluate"], ["logit-lens"], ["attack", "--kind", "quantize"], ["localize"]):
        assert main([*cmd, "--model", missing]) == 2
        line = _one_error_line(capsys)
        assert "--model" in line and missing in line


def _fake(name, monkeypatch, fn):
    monkeypatch.setattr(commands, commands.HANDLERS[name], fn)


def test_errors_of_a_run_are_one_line_and_debug_raises(tmp_path, monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("the run failed\nwith a second line")

    _fake("evaluate", monkeypatch, boom)
    assert main(["evaluate"]) == 2
    assert _one_error_line(capsys) == ("interp-unlearn: error: RuntimeError: the run failed "
                                       "with a second line")
    with pytest.raises(RuntimeError, match="the run failed"):
        main(["evaluate", "--debug"])
    with pytest.raises(UsageError, match="--seeds"):  # argument errors too
        main(["localize", "--seeds", "0-", "--debug"])

    def interrupted(args):
        raise KeyboardInterrupt

    _fake("evaluate", monkeypatch, interrupted)
    assert main(["evaluate"]) == 130
    assert _one_error_line(capsys) == "interp-unlearn: error: interrupted"


def test_debug_prints_the_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "interp_unlearn.pipeline.cli", "evaluate", "--model",
            str(tmp_path / "missing")]
    plain = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert plain.returncode == 2 and plain.stdout == ""
    assert plain.stderr.strip().splitlines() == [
        f"interp-unlearn: error: argument --model: no such checkpoint directory: "
        f"{tmp_path / 'missing'}"]
    debug = subprocess.run(argv + ["--debug"], capture_output=True, text=True, env=env,
                           timeout=120)
    assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stderr
    assert "UsageError" in debug.stderr


def test_results_line_and_json_out_key(tmp_path, monkeypatch, capsys):
    def fake(args):
        print("chatter from the run")
        return CommandResult(args.out, {"accuracy": 0.5}, "accuracy 0.5")

    _fake("evaluate", monkeypatch, fake)
    assert main(["evaluate", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == ["accuracy 0.5", f"results: {tmp_path}"]
    assert main(["evaluate", "--out", str(tmp_path), "--json"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out) == {"accuracy": 0.5, "out": str(tmp_path)}  # stdout: JSON only
    assert "chatter from the run" in cap.err

    def rows(args):
        return CommandResult(Path("runs/x"), [{"a": 1}], "a table")

    _fake("logit-lens", monkeypatch, rows)
    assert main(["logit-lens", "--model", "organism-micro", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"out": "runs/x", "rows": [{"a": 1}]}


def test_quiet_silences_bars_warnings_and_transformers(tmp_path, monkeypatch, capsys):
    import transformers.utils.logging as tlog
    from tqdm.auto import tqdm

    seen = {}

    def noisy(args):
        warnings.warn("a noisy warning", UserWarning)
        logging.getLogger("interp_unlearn.test").warning("a noisy log record")
        seen.update(verbosity=tlog.get_verbosity(), bars=tlog.is_progress_bar_enabled(),
                    tqdm_env=os.environ.get("TQDM_DISABLE"), quiet=args.quiet,
                    tqdm_disabled=tqdm(range(3)).disable)
        return CommandResult(tmp_path, {}, "done")

    _fake("evaluate", monkeypatch, noisy)
    before = tlog.get_verbosity(), tlog.is_progress_bar_enabled(), os.environ.get("TQDM_DISABLE")
    for flag in ("--quiet", "--no-progress"):  # --no-progress: the old alias
        seen.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert main(["evaluate", flag]) == 0
        assert not [w for w in caught if "noisy" in str(w.message)], flag
        cap = capsys.readouterr()
        assert "noisy" not in cap.err and cap.out.splitlines()[-1] == f"results: {tmp_path}"
        assert seen == {"verbosity": tlog.ERROR, "bars": False, "tqdm_env": "1", "quiet": True,
                        "tqdm_disabled": True}, flag
        # restored afterwards (main may run in-process)
        assert (tlog.get_verbosity(), tlog.is_progress_bar_enabled(),
                os.environ.get("TQDM_DISABLE")) == before
    with warnings.catch_warnings(record=True) as caught:  # the control: without --quiet
        warnings.simplefilter("always")
        assert main(["evaluate"]) == 0
    assert [w for w in caught if "noisy" in str(w.message)]
    assert seen["quiet"] is False and seen["tqdm_disabled"] is False


def test_unused_shared_flags_are_accepted_with_a_warning(tmp_path, monkeypatch, capsys):
    got = {}

    def fake(args):
        got.update(vars(args))
        return CommandResult(args.out or args.run, {}, "")

    _fake("figures", monkeypatch, fake)
    with pytest.warns(UserWarning, match=r"--seeds is not used by this command \(figures\)"):
        assert main(["figures", "--run", str(tmp_path), "--seeds", "0-1"]) == 0
    assert got["seeds"] == [0, 1] and got["out"] is None
    assert capsys.readouterr().out.strip() == f"results: {tmp_path}"


def test_unlearn_help_names_every_registered_method():
    from interp_unlearn.pipeline.unlearn_command import METHOD_NAMES
    from interp_unlearn.unlearn.registry import available_methods

    assert set(METHOD_NAMES) == {m.replace("-", "_") for m in available_methods()}


# ----------------------------------------------------------- the commands, on micro


def test_localize_cli_writes_files(tmp_path, capsys):
    out = tmp_path / "loc"
    assert main(["localize", "--model", "organism-micro", "--top-k", "3", "--out", str(out),
                 "--steps", "3", "--batch-size", "4", "--formats", "html", "--json",
                 "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(res["selected_heads"]) == 3 and res["out"] == str(out)
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
                 "--seeds", "0", "--out", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["out"] == str(out)
    assert {"accuracy", "ue"} <= {r["metric"] for r in res["rows"]}
    assert {r["seed"] for r in res["rows"]} == {0}
    assert (out / "results.jsonl").is_file()


def test_logit_lens_cli(tmp_path, capsys):
    assert main(["logit-lens", "--model", "organism-micro", "--out", str(tmp_path),
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert {r["block"] for r in res["rows"]} == {0, 1, 2, 3}
    assert {r["domain"] for r in res["rows"]} == {"forget", "retain"}
    assert (tmp_path / "logit_lens.csv").is_file() and res["out"] == str(tmp_path)


def test_logit_lens_cli_writes_a_default_results_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["logit-lens", "--model", "organism-micro", "--quiet"]) == 0
    out = Path("runs") / "logit-lens-organism-micro"
    assert capsys.readouterr().out.splitlines()[-1] == f"results: {out}"
    assert (tmp_path / out / "logit_lens.csv").is_file()
    assert (tmp_path / out / "logit_lens.json").is_file()


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


def test_attack_cli_head_restore_delta_at_given_heads(tmp_path, monkeypatch, capsys):
    """`attack --heads` attacks chosen heads of any model (RMU included) with the shared
    head adversary; its radius is reported relative to κ·E‖z‖. Without --out the results
    go to runs/attack-KIND-MODEL."""
    monkeypatch.chdir(tmp_path)
    assert main(["attack", "--model", "organism-micro", "--kind", "head-restore",
                 "--mode", "delta", "--heads", "0.0,1.1", "--kappa", "1", "--samples", "2",
                 "--seeds", "0", "--no-floor", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["out"] == str(Path("runs") / "attack-head-restore-organism-micro")
    assert (tmp_path / res["out"] / "results.jsonl").is_file()
    acc = [r for r in res["rows"] if r["metric"] == "accuracy"][0]
    config, info = (c if isinstance(c, dict) else json.loads(c)
                    for c in (acc["config"], acc["info"]))
    assert config["heads"] == [[0, 0], [1, 1]] and config["kappa"] == 1.0
    assert len(info["delta_over_eps"]) == 2
    assert all(0 < x <= 1.0 + 1e-5 for x in info["delta_over_eps"])


def test_attack_cli_names_a_malformed_heads_file(tmp_path, capsys):
    """Issue 18: a malformed --heads file is named (before: a bare int() error)."""
    bad = tmp_path / "heads.txt"
    bad.write_text("x.y\n")
    for spec, why in ((str(bad), f"{bad}: not valid JSON"), ("0.0,0.0", "listed twice"),
                      ("0.x", "0.x")):
        assert main(["attack", "--model", "organism-micro", "--kind", "head-restore",
                     "--heads", spec, "--samples", "0", "--seeds", "0", "--no-floor"]) == 2
        assert why in _one_error_line(capsys), spec


def test_attack_cli_rejects_head_options_for_other_kinds(capsys):
    assert main(["attack", "--model", "organism-micro", "--kind", "quantize", "--heads", "0.0",
                 "--samples", "0", "--seeds", "0", "--no-floor"]) == 2
    assert "only apply to --kind head-restore" in _one_error_line(capsys)
    assert main(["attack", "--model", "organism-micro", "--kind", "finetune", "--lr", "0",
                 "--samples", "0", "--seeds", "0", "--no-floor"]) == 2
    assert "--lr must be > 0" in _one_error_line(capsys)
    with pytest.raises(ValueError, match="--lr must be > 0"):  # --debug: the exception itself
        main(["attack", "--model", "organism-micro", "--kind", "finetune", "--lr", "0",
              "--samples", "0", "--seeds", "0", "--no-floor", "--debug"])


def test_unlearn_set_values_are_typed_and_checked_before_loading(monkeypatch, capsys):
    """Issue 18 #3: --set values are read by the method parameter's type, and a bad method,
    key or value fails before the model is loaded."""
    import interp_unlearn.data.loading as loading
    from interp_unlearn.core.config import parse_assignments
    from interp_unlearn.pipeline.cli import main
    from interp_unlearn.unlearn.registry import get_method

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("model loaded")))
    params = get_method("almpu").Params
    assert parse_assignments(["adversarial=False"], params) == {"adversarial": False}
    assert parse_assignments(["masked=false"], get_method("rmu").Params) == {"masked": False}
    for argv, msg in ((["--method", "nope"], "unknown unlearning method 'nope'"),
                      (["--method", "almpu", "--set", "adversarial=maybe"], "cannot read as bool"),
                      (["--method", "rmu", "--set", "alpha=abc"], "cannot read as float"),
                      (["--method", "rmu", "--set", "steering=3"], "unknown rmu parameter field")):
        assert main(["unlearn", "--model", "organism-micro"] + argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("interp-unlearn: error:") and msg in err[0], err


def test_evaluate_checks_its_files_before_loading(tmp_path, monkeypatch, capsys):
    """Issue 18: evaluate read --mcq (and --per-question's folder) only after loading."""
    import interp_unlearn.data.loading as loading
    from interp_unlearn.pipeline.cli import main

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("model loaded")))
    good = tmp_path / "q.jsonl"
    good.write_text('{"question": "q?", "choices": ["a", "b", "c", "d"], "answer": 0}\n')
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q?", "choices": ["a", "b"], "answer": 0}\n')
    for argv, msg in ((["--mcq", str(tmp_path / "nope.jsonl")], "no such file"),
                      (["--mcq", str(bad)], "bad.jsonl:1"),
                      (["--mcq", str(good), "--per-question", str(tmp_path / "no" / "x.csv")],
                       "does not exist")):
        assert main(["evaluate", "--model", "organism-micro"] + argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err


def test_depth_cli_writes_its_files_and_the_twin_scores_1(tmp_path, capsys):
    out = tmp_path / "depth"
    assert main(["depth", "--model", "organism-micro-twin", "--full", "organism-micro",
                 "--max-questions", "12", "--heads", "--formats", "", "--out", str(out),
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["out"] == str(out) and res["uds"] == 1.0 and res["uds_heads"] == 1.0
    assert "control_ratio" in res
    for name in ("uds.csv", "uds_heads.csv", "per_question.csv", "summary.json",
                 "depth_config.json"):
        assert (out / name).is_file(), name


def test_depth_cli_names_a_missing_reference(tmp_path, capsys):
    plain = tmp_path / "plain"
    from interp_unlearn.data.loading import load_model

    lm = load_model("organism-micro")
    lm.model.save_pretrained(plain)
    lm.tokenizer.save_pretrained(plain)
    capsys.readouterr()
    assert main(["depth", "--model", str(plain), "--full", str(plain),
                 "--mcq", str(lm.mcq_path("forget"))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--reference" in err


def test_depth_cli_refuses_a_reference_with_another_tokenizer(tmp_path, capsys):
    """organism-twin (the small organism's tokenizer) as the micro organism's reference:
    one line naming the tokenizer, before any question is scored."""
    assert main(["depth", "--model", "organism-micro-twin", "--full", "organism-micro",
                 "--reference", "organism-twin", "--formats", "", "--out",
                 str(tmp_path / "d")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(err) == 1 and "tokenizer differs" in err[0] and "reference" in err[0], err
    assert not (tmp_path / "d" / "uds.csv").exists()
