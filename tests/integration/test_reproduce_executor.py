"""``reproduce --executor submitit``: every grid cell a self-contained job (run directory
+ cell key in, ``RUN/cells/{key}.json`` out), merged by the parent into the same store.

Shard 1 of 2 of a small plan on the micro organism (four cells) run through submitit's
local executor (each cell a separate Python process started by submitit) must store the
same values as the local executor, and shards 1/2 and 2/2 both run that way, then merged,
the tables of one local run; result files a dead parent never merged are merged on the
next run without recomputation; jobs a killed parent left running are cancelled; bad
input fails before any file is written.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from interp_unlearn.pipeline.cli import main
from interp_unlearn.pipeline.reproduce import (GridRunner, ReproduceConfig, ResultsStore,
                                               build_plan, build_tables, run_reproduce)
from interp_unlearn.pipeline.reproduce import executors
from interp_unlearn.pipeline.reproduce.config import CONFIG_FILE, EXECUTORS
from interp_unlearn.pipeline.reproduce.executors import CELLS_DIR, INFLIGHT_FILE, job_file
from interp_unlearn.pipeline.reproduce.parallel import auto_workers, worker_gpus
from interp_unlearn.pipeline.reproduce.store import LOCK_FILE, PLAN_FILE, RESULTS_FILE
from interp_unlearn.pipeline.reproduce_flags import EXECUTOR_CHOICES
from reproduce_small import (SMALL, SUBMITIT_OPTIONS, TABLES, local_run, submitit_shard,
                            values)

pytestmark = pytest.mark.usefixtures("one_thread")
#: the jobs need submitit (the ``cluster`` extra); the other tests run without it
needs_submitit = pytest.mark.skipif(importlib.util.find_spec("submitit") is None,
                                    reason="pip install 'interp-unlearn[cluster]'")

SUBMITIT = {**SMALL, "executor": "submitit", "executor_options": SUBMITIT_OPTIONS}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The local run, and shard 1 of 2 of the same plan (the unlearning, its logit lens,
    the reference and the attack: four cells, one a dependency of two others) run as
    submitit jobs."""
    local = local_run(tmp_path_factory)
    summary = submitit_shard(tmp_path_factory, 1)
    return local, Path(summary["out"]), summary


@pytest.mark.slow
@needs_submitit
def test_submitit_local_jobs_store_the_same_values_as_the_local_pool(runs):
    local, out, summary = runs
    assert out.parts[-2:] == ("shards", "1-of-2")
    plan = json.loads((out / PLAN_FILE).read_text())["cells"]
    assert summary["ran"] == len(plan) == 4
    assert sorted(c["kind"] for c in plan) == ["attack", "lens", "reference", "unlearn"]
    assert (ReproduceConfig.from_dict(SUBMITIT).config_hash()
            == ReproduceConfig.from_dict(SMALL).config_hash())
    mine = values(out)
    ref = values(local)
    ref = ref.loc[ref["cell_label"].isin(set(mine["cell_label"])), list(mine.columns)]
    ref = ref.reset_index(drop=True)
    assert len(mine) > 30
    pd.testing.assert_frame_equal(mine, ref)
    # each cell ran as its own job, in its own process, and left its own result file
    for c in plan:
        d = json.loads(job_file(out, c["key"]).read_text())
        assert d["key"] == c["key"] and d["label"] == c["label"] and d["rows"]
    assert not (local / CELLS_DIR).exists()
    assert not (out / CELLS_DIR / INFLIGHT_FILE).exists()
    logs = list((out / "submitit").glob("*/*_log.out"))
    assert len({p.parent.name for p in logs}) == 4  # four job ids
    assert sorted(p.name for p in (out / "submitit").iterdir()) == sorted(
        {p.parent.name for p in logs})  # no empty template folder left behind
    session = json.loads((out / "manifest.json").read_text())["sessions"][-1]
    assert session["executor"] == "submitit" and session["workers"] == 2
    assert session["shard"] == "1/2"


@pytest.mark.slow
@needs_submitit
def test_unmerged_result_files_are_merged_without_recomputing(runs, tmp_path, monkeypatch):
    """A parent killed after its jobs finished but before merging them: the next run
    merges their result files; no cell runs again."""
    local, done, _ = runs
    out = tmp_path / "dead-parent"
    out = Path(run_reproduce(ReproduceConfig.from_dict(SUBMITIT), out, dry_run=True,
                             shard="1/2")["out"])
    (out / CELLS_DIR).mkdir()
    for f in (done / CELLS_DIR).glob("*.json"):
        (out / CELLS_DIR / f.name).write_text(f.read_text())

    def no_rerun(self, cell):
        raise AssertionError(f"{cell.label} ran again")

    monkeypatch.setattr(GridRunner, "run_cell", no_rerun)
    summary = run_reproduce(ReproduceConfig.from_dict(SUBMITIT), out.parent.parent, shard="1/2")
    assert summary["ran"] == 4 and len(ResultsStore(out).finished()) == 4
    pd.testing.assert_frame_equal(values(out), values(done))


@pytest.mark.slow
@needs_submitit
def test_a_failed_job_names_its_cell(runs, tmp_path):
    """A failing job stops the run with its cell named; only that job ran (the cells whose
    inputs did not change are finished in the copied store)."""
    local, _, _ = runs
    out = tmp_path / "bad"
    out.mkdir()
    for name in (CONFIG_FILE, PLAN_FILE, RESULTS_FILE):
        (out / name).write_text((local / name).read_text())
    bad = ReproduceConfig.from_dict({**SUBMITIT, "unlearn": {"rmu": {"params": {"layer": 99}}}})
    with pytest.raises(Exception, match="layer") as info:
        run_reproduce(bad, out)
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "in grid cell unlearn/rmu/seed=0" in notes and "logs in" in notes
    assert not (out / CELLS_DIR / INFLIGHT_FILE).exists()
    assert len(list((out / "submitit").glob("*/*_log.out"))) == 1  # one job ran
    assert len(ResultsStore(out).finished()) == 7  # the old cells; no new one


def test_jobs_left_by_a_killed_parent_are_cancelled(tmp_path):
    """``inflight.json`` of a dead parent: the next run stops those jobs before it cleans
    -- with SIGINT, and with SIGTERM when SIGINT is ignored (a controller started by a
    background parent, or under pytest-xdist)."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)", "submitit"]
    procs = [subprocess.Popen(sleeper, preexec_fn=lambda: signal.signal(signal.SIGINT, how))
             for how in (signal.SIG_DFL, signal.SIG_IGN)]
    try:
        out = tmp_path / "orphans"
        run_reproduce(ReproduceConfig.from_dict(SUBMITIT), out, dry_run=True)
        (out / CELLS_DIR).mkdir()
        (out / CELLS_DIR / INFLIGHT_FILE).write_text(json.dumps(
            {f"k{i}": {"job_id": str(p.pid), "cluster": "local", "host": socket.gethostname(),
                       "folder": str(out)} for i, p in enumerate(procs)}))
        executors.prepare(GridRunner(ReproduceConfig.from_dict(SUBMITIT), out))
        assert procs[0].wait(timeout=10) != 0
        assert procs[1].wait(timeout=10) == -signal.SIGTERM
        assert not (out / CELLS_DIR / INFLIGHT_FILE).exists()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def test_bad_executor_input_fails_before_any_file(tmp_path, capsys, monkeypatch):
    assert EXECUTOR_CHOICES == EXECUTORS
    out = tmp_path / "never"
    base = ["reproduce", "--model", "organism-micro", "--quick", "--out", str(out),
            "--no-progress"]
    assert main([*base, "--executor", "ray"]) == 2
    assert "invalid choice: 'ray'" in capsys.readouterr().err
    assert main([*base, "--set", 'executor_options={"queue": "x"}', "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown option(s) ['queue']" in err[0]
    assert main([*base, "--gpus-per-job", "-1", "--executor", "submitit"]) == 2
    assert "--gpus-per-job must be >= 0" in capsys.readouterr().err
    real = executors.importlib.util.find_spec
    monkeypatch.setattr(executors.importlib.util, "find_spec",
                        lambda name, *a: None if name == "submitit" else real(name, *a))
    for extra in ([], ["--dry-run"]):
        assert main([*base, "--executor", "submitit", *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "executor 'submitit' is not installed" in err[0], err
    assert not out.exists()


def test_one_gpu_per_worker(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6")
    assert worker_gpus("cuda", 4) == ["3", "5", "6", "3"]
    assert auto_workers("cuda") == 3
    assert worker_gpus("cuda", 1) is None and worker_gpus("cpu", 4) is None
    assert worker_gpus("cuda:1", 4) is None  # one named GPU: every worker on it
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert worker_gpus("cuda", 2) is None and auto_workers("cuda") == 1


@pytest.mark.slow
@needs_submitit
def test_two_shards_then_a_merge_give_the_tables_of_one_run(tmp_path_factory, capsys):
    """``reproduce --executor submitit --shard 1/2`` and ``--shard 2/2`` (each cell a
    submitit job), then a merge: the stored values and tables of one local run."""
    local = local_run(tmp_path_factory)
    shards = [submitit_shard(tmp_path_factory, i) for i in (1, 2)]
    out = Path(shards[0]["out"]).parent.parent
    assert Path(shards[1]["out"]).parent.parent == out
    assert sum(s["ran"] for s in shards) == len(build_plan(ReproduceConfig.from_dict(SMALL))) == 7
    assert not (out / RESULTS_FILE).exists()
    # a running shard stops the merge before it copies anything
    with open(out / "shards" / "2-of-2" / LOCK_FILE, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # --resume: the shards' configuration (the run directory has none yet)
        argv = ["reproduce", "--out", str(out), "--resume", "--no-progress", "--no-figures"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "another reproduce run is using" in err and "2-of-2" in err
    assert not (out / RESULTS_FILE).exists()  # shard 1 was not copied either
    # the merge: the parent runs nothing, copies every shard cell, writes the tables
    assert main(argv + ["--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["ran"] == 0 and res["skipped"] == 7
    session = json.loads((out / "manifest.json").read_text())["sessions"][-1]
    assert session["cells_merged_from_shards"] == 7
    pd.testing.assert_frame_equal(values(out), values(local))
    a, b = build_tables(out), build_tables(local)
    for name in TABLES:
        x, y = (t[name][t[name]["column"] != "seconds"].reset_index(drop=True) for t in (a, b))
        pd.testing.assert_frame_equal(x, y, obj=name)
    for name in TABLES:
        assert (out / "tables" / f"{name}.csv").is_file()
    # the shards' checkpoints and localizations moved into the run directory
    assert (sorted(p.name for p in (out / "checkpoints").iterdir())
            == sorted(p.name for p in (local / "checkpoints").iterdir()))
    assert (out / "localize" / "seed0" / "scores.csv").is_file()
    # a second merge copies nothing twice
    assert main(argv) == 0
    assert len(ResultsStore(out).finished()) == 7
    lines = (out / RESULTS_FILE).read_text().splitlines()
    assert sum(json.loads(x)["metric"] == "_cell_done" for x in lines) == 7
