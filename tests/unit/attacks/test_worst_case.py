"""The worst-case attacker (issue 14): search space, validation split, resume, refusal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from interp_unlearn.attacks.worst_case import (FAMILIES, StudyMismatchError, WorstCaseConfig,
                                               inert_reason, split_attack_pool)
from interp_unlearn.pipeline.cli import main


def test_config_refuses_bad_values_before_any_work():
    with pytest.raises(ValueError, match="trials must be an int >= 1"):
        WorstCaseConfig(trials=0)
    with pytest.raises(ValueError, match="unknown attack family"):
        WorstCaseConfig(families=("lora", "dpo"))
    with pytest.raises(ValueError, match="retain_margin"):
        WorstCaseConfig(retain_margin=10)
    assert set(WorstCaseConfig().families) == set(FAMILIES)


def test_cli_trials_zero_is_one_line_and_exit_2(tmp_path, capsys):
    rc = main(["attack", "--model", "organism-micro", "--kind", "worst-case", "--trials", "0",
               "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "trials must be an int >= 1" in err[0]
    assert not (tmp_path / "d").exists()


def test_cli_refuses_options_of_other_kinds(tmp_path, capsys):
    rc = main(["attack", "--model", "organism-micro", "--kind", "worst-case", "--samples", "5",
               "--out", str(tmp_path / "d")])
    assert rc == 2 and "--samples" in capsys.readouterr().err
    rc = main(["attack", "--model", "organism-micro", "--kind", "finetune", "--trials", "5",
               "--out", str(tmp_path / "e")])
    assert rc == 2 and "only apply to --kind worst-case" in capsys.readouterr().err


def test_split_keeps_validation_entities_out_of_the_training_documents(micro):
    from interp_unlearn.attacks.taught import entities_named

    docs, val, train = split_attack_pool(micro.world_dir, seed=0)
    assert docs and val and train and not set(val) & train
    named = entities_named(docs, micro.world_dir)
    assert named and not named & set(val)
    docs1, val1, _ = split_attack_pool(micro.world_dir, seed=1)
    assert val1 != val  # the split seed matters


def test_inert_reason_flags_a_search_that_never_moved_the_model():
    assert inert_reason(0.30, 0.29, 75) is not None
    assert inert_reason(0.70, 0.29, 75) is None
    assert "no trial" in inert_reason(float("nan"), 0.29, 75)


@pytest.mark.slow
def test_study_runs_resumes_after_a_kill_and_refuses_another_search(tmp_path, one_thread):
    """A CLI study killed mid-run resumes: the trial the kill cut is marked FAIL, the rest
    complete, and the outputs (tables, summary, figure) are written. Another search in the
    same directory is refused, naming what differs."""
    out = tmp_path / "wc"
    cmd = [sys.executable, "-m", "interp_unlearn.pipeline.cli", "attack", "--model",
           "organism-micro", "--kind", "worst-case", "--trials", "4", "--seeds", "0",
           "--families", "lora,full", "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
    import sqlite3

    import optuna
    from optuna.trial import TrialState

    deadline = time.time() + 240
    killed_at = None
    try:
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
            if not (out / "study.db").exists():
                continue
            try:  # read-only: opening it through Optuna would write (schema checks)
                con = sqlite3.connect(f"file:{out / 'study.db'}?mode=ro", uri=True, timeout=1)
                states = [r[0] for r in con.execute("SELECT state FROM trials")]
                con.close()
            except sqlite3.Error:
                continue
            if states.count("COMPLETE") >= 1 and "RUNNING" in states:
                os.killpg(proc.pid, signal.SIGKILL)
                killed_at = states.count("COMPLETE")
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert killed_at is not None, (tmp_path / "first.log").read_text()[-2000:]
    rc = main(["attack", "--model", "organism-micro", "--kind", "worst-case", "--trials", "4",
               "--seeds", "0", "--families", "lora,full", "--out", str(out), "--quiet",
               "--formats", "html"])
    assert rc == 0
    st = optuna.load_study(study_name="worst-case", storage=f"sqlite:///{out}/study.db")
    states = [t.state for t in st.trials]
    assert states.count(TrialState.COMPLETE) == 4
    assert states.count(TrialState.FAIL) >= 1  # the trial the kill cut
    trials = pd.read_csv(out / "trials.csv")
    assert trials["default"].iloc[0]  # the study starts from the fixed recipe
    assert (trials.loc[trials.state == "COMPLETE", "best_so_far"].diff().dropna() >= 0).all()
    chosen = pd.read_csv(out / "chosen.csv")
    assert set(chosen["model"]) == {"target", "twin"} and chosen["choice"].max() <= 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials_complete"] == 4 and "worst_case_forget" in summary
    assert 0 <= summary["worst_case_forget"] <= 1
    assert (out / "best_so_far.html").exists()
    # rerun: nothing left to do, no new trial
    n = len(st.trials)
    from interp_unlearn.pipeline.worst_case_run import run_worst_case

    run_worst_case("organism-micro", out, WorstCaseConfig(trials=4, families=("lora", "full")),
                   progress=False, formats=())
    assert len(optuna.load_study(study_name="worst-case",
                                 storage=f"sqlite:///{out}/study.db").trials) == n
    with pytest.raises(StudyMismatchError, match="retain_margin"):
        run_worst_case("organism-micro", out,
                       WorstCaseConfig(trials=4, families=("lora", "full"), retain_margin=0.2),
                       progress=False, formats=())

