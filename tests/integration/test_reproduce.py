"""``interp-unlearn reproduce`` on the micro organism with a tiny grid: resumability after
SIGKILL, worker processes, ``figures --run``, tables equal to the store, the CLI.

One uninterrupted, sequential tiny run (module fixture) is the reference; the same
configuration run with two worker processes, and run with two workers but killed in a
subprocess while an unlearning cell is in flight and then resumed, must end with
identical tables and stored values.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from interp_unlearn.attacks.floor import t_interval
from interp_unlearn.pipeline.cli import main
from interp_unlearn.plotting import static_export_problem
from interp_unlearn.pipeline.reproduce import (CONFIG_FILE, GridRunner, ReproduceConfig,
                                               ResultsStore, build_plan, build_tables,
                                               load_results, run_reproduce)
from interp_unlearn.pipeline.reproduce.figures import FIGURES
from interp_unlearn.pipeline.reproduce.parallel import dependencies
from interp_unlearn.pipeline.reproduce.manifest import MANIFEST_FILE
from interp_unlearn.pipeline.reproduce.store import (DONE_METRIC, LOCK_FILE, PLAN_FILE,
                                                     RESULTS_FILE)
from interp_unlearn.pipeline.reproduce.tables import TABLES, to_markdown

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(model="organism-micro", seeds=[0], methods=["rmu", "almpu"],
            table1_sizes=[0, 3], table2_sizes=[0, 3], table2_methods=["rmu"],
            ablation_sizes=[0, 3], head_variants=["adaptive", "random-50%"],
            location_variants=["adaptive", "early"], unlearn={"*": {"max_num_batches": 2}},
            localize={"steps": 2}, attack_overrides={"epochs": 1, "lora_rank": 8},
            threads=1, workers=1, progress=False, formats=["html", "png"])
CORE_TABLES = ("table1_finetune_forget", "table2_finetune_unrelated", "table3_head_selection",
               "table4_location", "table1_recovery", "unlearning")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "ref"
    summary = run_reproduce(ReproduceConfig.from_dict(TINY), out)
    return out, summary


def _values(run: Path) -> pd.DataFrame:
    """Stored values without timings, in a canonical order."""
    df = load_results(run)
    df = df[~df["metric"].isin(["seconds"])]
    keys = [c for c in ("cell_label", "role", "stage", "domain", "block", "layer", "head",
                        "metric") if c in df.columns]
    return (df.sort_values(keys, kind="mergesort")[keys + ["value"]]
            .reset_index(drop=True))


def _finished_cells(run: Path) -> int:
    return len(ResultsStore(run).finished())


# ------------------------------------------------------------------------ the grid


def test_reference_run_covers_the_plan(reference_run):
    out, summary = reference_run
    plan = build_plan(ReproduceConfig.from_dict(TINY))
    assert summary["cells"] == len(plan) == summary["ran"] and summary["skipped"] == 0
    assert _finished_cells(out) == len(plan)
    df = load_results(out)
    assert set(df["kind"]) == {"localize", "unlearn", "lens", "depth", "reference", "attack"}
    prov = df[["config_hash", "package_version", "torch_version"]].drop_duplicates()
    assert len(prov) == 1 and prov["torch_version"].item() == torch.__version__
    assert prov["config_hash"].item() == ReproduceConfig.from_dict(TINY).config_hash()
    att = df[df["kind"] == "attack"]
    assert set(att["table"]) == {"table1", "table2", "table3", "table4"}
    assert set(att["role"]) == {"target"}
    ref = df[df["kind"] == "reference"]
    assert set(ref["variant"]) == {"original", "never-learned"}
    # the twin has not learned the forget facts; the original has
    acc = ref[(ref.metric == "accuracy") & (ref.N == 0)].groupby("variant")["value"].mean()
    assert acc["original"] > acc["never-learned"] + 0.3
    # Table 4's adaptive row is Table 1's ALMPU model: same checkpoint, same numbers
    t1 = att[(att.table == "table1") & (att.variant == "almpu")].set_index(["N", "metric"])["value"]
    t4 = att[(att.table == "table4") & (att.variant == "adaptive")].set_index(["N", "metric"])["value"]
    pd.testing.assert_series_equal(t1.sort_index(), t4.sort_index())
    un = df[(df.kind == "unlearn") & (df.metric == "steps")]
    assert (un["value"] == 2).all()
    heads = dict(zip(un["model_id"], un["heads"].map(json.loads)))
    layer = GridRunner(ReproduceConfig.from_dict(TINY), out).rmu_layer()
    assert all(h[0] == layer for h in heads["almpu[layer-random-50%]"])
    assert len(heads["almpu[layer-random-50%]"]) == 2  # 50 % of micro's 4 heads
    assert {h[0] for h in heads["almpu[early]"]} == {0}  # 4 layers: early = layer 0
    manifest = json.loads((out / "manifest.json").read_text())
    for k in ("package_version", "torch_version", "seeds", "config_hash", "sessions"):
        assert k in manifest
    assert manifest["sessions"][-1]["end"] is not None
    saved = json.loads((out / CONFIG_FILE).read_text())
    assert saved["config_hash"] == manifest["config_hash"]
    assert not list((out / "checkpoints").glob(".*tmp-*"))


def _marked_processes(mark: str) -> list[int]:
    """PIDs of live processes whose environment carries ``mark`` (Linux /proc)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if mark.encode() in (d / "environ").read_bytes():
                    status = (d / "status").read_text()
                    if "\nState:\tZ" not in status:  # zombies hold no resources
                        pids.append(int(d.name))
            except OSError:
                continue
    return pids


def test_depth_cells_score_every_method_against_the_twin(reference_run):
    out, _ = reference_run
    df = load_results(out)
    dep = df[df["kind"] == "depth"]
    uds = dep[dep["metric"] == "uds"].set_index("model_id")["value"]
    assert set(uds.index) == {"rmu", "almpu"} and uds.between(0, 1).all()
    per_layer = dep[(dep["metric"] == "erasure") & dep["layer"].notna()]
    assert len(per_layer) == 2 * 4  # two methods x the micro organism's 4 layers
    heads = dep[dep["metric"] == "head_erasure"]
    assert len(heads) == 2 * 16
    table = build_tables(out)["depth"]
    assert set(table["row"]) == {"rmu", "almpu"} and "UDS" in set(table["column"])
    got = table[(table["row"] == "rmu") & (table["column"] == "UDS")]["mean"].item()
    assert got == pytest.approx(uds["rmu"])


def test_dependencies_come_first_in_the_plan():
    plan = build_plan(ReproduceConfig.from_dict(TINY))
    deps = dependencies(plan)
    pos = {c.key: i for i, c in enumerate(plan)}
    by_key = {c.key: c for c in plan}
    for c in plan:
        assert all(pos[d] < pos[c.key] for d in deps[c.key]), c.label
        kinds = sorted(by_key[d].kind for d in deps[c.key])
        if c.kind == "attack":
            assert kinds == ["reference", "unlearn"], c.label
            assert {by_key[d].N for d in deps[c.key] if by_key[d].kind == "reference"} == {c.N}
        elif c.kind == "unlearn":
            assert kinds == (["localize"] if c.model.startswith("almpu") else []), c.label
        elif c.kind == "lens":
            assert kinds == ([] if c.model in ("original", "twin") else ["unlearn"]), c.label


def test_two_workers_give_the_same_results(reference_run, tmp_path):
    ref, _ = reference_run
    out = tmp_path / "workers"
    cfg = ReproduceConfig.from_dict({**TINY, "workers": 2, "figures": False})
    assert cfg.config_hash() == ReproduceConfig.from_dict(TINY).config_hash()
    summary = run_reproduce(cfg, out)
    assert summary["ran"] == len(build_plan(cfg)) and _finished_cells(out) == summary["ran"]
    pd.testing.assert_frame_equal(_values(out), _values(ref))
    session = json.loads((out / "manifest.json").read_text())["sessions"][-1]
    assert session["workers"] == 2 and session["threads"] == 1
    # an error in a worker names the cell and stops the run
    bad = ReproduceConfig.from_dict({**TINY, "workers": 2, "figures": False,
                                     "unlearn": {"rmu": {"params": {"layer": 99}}}})
    with pytest.raises(Exception, match="layer") as info:
        run_reproduce(bad, tmp_path / "bad")
    assert any("in grid cell unlearn/rmu" in n for n in getattr(info.value, "__notes__", []))


def test_sigkill_mid_run_then_resume_gives_the_same_results(reference_run, tmp_path):
    ref, _ = reference_run
    out = tmp_path / "killed"
    ReproduceConfig.from_dict({**TINY, "workers": 2}).save_json(out / CONFIG_FILE)
    mark = f"IU_TEST_RUN_{os.getpid()}_{time.time_ns()}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", mark: "1"}
    proc = subprocess.Popen([sys.executable, "-m", "interp_unlearn.pipeline.cli", "reproduce", "--out",
                             str(out), "--resume", "--no-figures", "--no-progress"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 900  # generous: a shared, niced CPU can be slow
    try:
        # kill while an unlearning run is writing its checkpoint, after a few finished cells
        while time.time() < deadline and proc.poll() is None:
            tmp = list((out / "checkpoints").glob(".*tmp-*")) if (out / "checkpoints").is_dir() else []
            if tmp and _finished_cells(out) >= 4:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    # the worker processes die with the run: nothing keeps writing into its directory
    deadline = time.time() + 20
    while _marked_processes(mark) and time.time() < deadline:
        time.sleep(0.1)
    assert _marked_processes(mark) == []
    finished = _finished_cells(out)
    total = len(build_plan(ReproduceConfig.from_dict(TINY)))
    assert 4 <= finished < total
    # the killed run's manifest entry counts its finished cells (updated after each store
    # write; a kill between the two writes leaves it one behind)
    killed = json.loads((out / MANIFEST_FILE).read_text())["sessions"][0]
    assert finished - 1 <= killed["cells_run"] <= finished and killed["end"] is None
    summary = run_reproduce(ReproduceConfig.load_json(out / CONFIG_FILE), out)
    assert summary["skipped"] == finished and summary["ran"] == total - finished
    assert not list((out / "checkpoints").glob(".*tmp-*"))
    assert (sorted(p.name for p in (out / "checkpoints").iterdir())
            == sorted(p.name for p in (ref / "checkpoints").iterdir()))
    # every cell finished exactly once in the resumed store
    assert _finished_cells(out) == total
    pd.testing.assert_frame_equal(_values(out), _values(ref))
    for name in CORE_TABLES:
        a = pd.read_csv(out / "tables" / f"{name}.csv")
        b = pd.read_csv(ref / "tables" / f"{name}.csv")
        if name == "unlearning":
            a, b = (t[t["column"] != "seconds"].reset_index(drop=True) for t in (a, b))
        pd.testing.assert_frame_equal(a, b)
    sessions = json.loads((out / "manifest.json").read_text())["sessions"]
    assert len(sessions) == 2 and sessions[0]["end"] is None and sessions[1]["end"]


def test_a_refused_run_changes_no_file(tmp_path, capsys):
    """Another run holds the lock: a second run, dry or not, fails at once with one line
    and rewrites neither the config nor the plan of the running grid."""
    out = tmp_path / "locked"
    run_reproduce(ReproduceConfig.from_dict(TINY), out, dry_run=True)
    files = {n: out / n for n in (CONFIG_FILE, PLAN_FILE)}
    before = {n: (p.read_bytes(), p.stat().st_mtime_ns) for n, p in files.items()}
    time.sleep(0.01)  # a rewrite would move the mtimes
    other = ReproduceConfig.from_dict({**TINY, "seeds": [0, 1], "table1_sizes": [0, 5]})
    with open(out / LOCK_FILE, "a") as held:  # the running grid's lock
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for dry in (False, True):
            with pytest.raises(RuntimeError, match="another reproduce run is using"):
                run_reproduce(other, out, dry_run=dry)
        for extra in ([], ["--dry-run"]):
            argv = ["reproduce", "--model", "organism-micro", "--quick", "--out", str(out),
                    "--seeds", "0-2", "--no-figures", "--no-progress", *extra]
            assert main(argv) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and "another reproduce run is using" in err[0], err
    after = {n: (p.read_bytes(), p.stat().st_mtime_ns) for n, p in files.items()}
    assert after == before
    assert not (out / MANIFEST_FILE).exists() and not (out / RESULTS_FILE).exists()
    # the lock released, the same dry run goes through (over the untouched old config)
    with pytest.warns(RuntimeWarning, match="configuration changed"):
        assert run_reproduce(other, out, dry_run=True)["dry_run"] is True
    assert json.loads((out / CONFIG_FILE).read_text())["seeds"] == [0, 1]


def test_an_interrupted_run_records_the_cells_it_finished(tmp_path, monkeypatch):
    """manifest.json's entry of a run stopped mid-grid counts the cells it stored (kept
    current after every cell, so a SIGKILL leaves it true as well)."""
    out, stop_at, seen = tmp_path / "stopped", 3, []

    def fake_cell(self, cell):
        if len(seen) == stop_at:
            # the manifest on disk already counts every stored cell before the stop
            seen.append(json.loads((out / MANIFEST_FILE).read_text())["sessions"][-1])
            raise KeyboardInterrupt
        seen.append(cell.key)
        return [{"metric": "m", "value": 1.0}]

    monkeypatch.setattr(GridRunner, "run_cell", fake_cell)
    with pytest.raises(KeyboardInterrupt):
        run_reproduce(ReproduceConfig.from_dict({**TINY, "figures": False}), out)
    assert _finished_cells(out) == stop_at == seen[-1]["cells_run"]
    session = json.loads((out / MANIFEST_FILE).read_text())["sessions"][-1]
    assert session["cells_run"] == stop_at and session["end"] is None
    assert session["cells_skipped"] == 0


def test_rerun_skips_everything(reference_run):
    out, _ = reference_run
    before = (out / RESULTS_FILE).read_text()
    summary = run_reproduce(ReproduceConfig.from_dict({**TINY, "formats": ["html"]}), out)
    assert summary["ran"] == 0 and summary["skipped"] == summary["cells"]
    assert (out / RESULTS_FILE).read_text() == before


# ---------------------------------------------------------------- figures & tables


def test_figures_command_redraws_every_file(reference_run, capsys):
    out, _ = reference_run
    for d in ("figures", "tables"):
        for f in (out / d).glob("*"):
            f.unlink()
    store = (out / RESULTS_FILE).read_text()
    assert main(["figures", "--run", str(out), "--formats", "html,png", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    problem = static_export_problem()
    for name in FIGURES:  # TINY measures the lens on both domains
        html = out / "figures" / f"{name}.html"
        assert html.is_file() and "plotly" in html.read_text()[:200_000], name
        png = out / "figures" / f"{name}.png"
        if problem is None:
            assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG", name
        else:
            assert not png.exists() and res["static_skipped"]
    for name in TABLES:
        for ext in ("csv", "md", "tex"):
            assert (out / "tables" / f"{name}.{ext}").is_file(), (name, ext)
    assert (out / RESULTS_FILE).read_text() == store  # nothing recomputed


def test_tables_equal_the_store(reference_run):
    out, _ = reference_run
    df = load_results(out)
    t1 = pd.read_csv(out / "tables" / "table1_finetune_forget.csv")
    att = df[(df.kind == "attack") & (df.table == "table1") & (df.metric == "ue")]
    ref = df[(df.kind == "reference") & (df.data == "forget") & (df.metric == "ue")]
    assert len(t1) == 2 * 2 + 2 * 2
    for r in t1.itertuples():
        src = ref if r.row in ("original", "never-learned") else att
        vals = src[(src.variant == r.row) & (src.N == r.column)]["value"]
        assert len(vals) == 1 and r.mean == pytest.approx(vals.item(), abs=1e-12)
        assert r.n_seeds == 1 and math.isnan(r.ci95_low)
    t3 = pd.read_csv(out / "tables" / "table3_head_selection.csv")
    a3 = df[(df.kind == "attack") & (df.table == "table3") & (df.metric == "ue")]
    for r in t3.itertuples():
        assert r.mean == pytest.approx(a3[(a3.variant == r.row) & (a3.N == r.column)]["value"].item())
    un = pd.read_csv(out / "tables" / "unlearning.csv").set_index(["row", "column"])["mean"]
    u = df[(df.kind == "unlearn") & (df.metric == "accuracy")]
    for r in u.itertuples():
        assert un[(r.model_id, f"{r.domain} {r.stage}")] == pytest.approx(r.value)
    md = (out / "tables" / "table1_finetune_forget.md").read_text()
    for r in t1.itertuples():
        assert f"{r.mean:.1f}" in md


def test_tables_do_not_depend_on_the_order_cells_finished(reference_run, tmp_path):
    """Workers finish cells in any order: the same cells stored in reverse give the same
    tables."""
    ref, _ = reference_run
    for name in (CONFIG_FILE, PLAN_FILE):
        (tmp_path / name).write_text((ref / name).read_text())
    blocks: dict[str, list[str]] = {}
    for line in (ref / RESULTS_FILE).read_text().splitlines():
        blocks.setdefault(json.loads(line)["attempt"], []).append(line)
    (tmp_path / RESULTS_FILE).write_text(
        "".join(line + "\n" for b in reversed(list(blocks.values())) for line in b))
    a, b = build_tables(tmp_path), build_tables(ref)
    assert set(a) == set(b)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)


def _synthetic_run(run: Path) -> pd.DataFrame:
    """A store with three seeds of Table 1 rows written by hand (no computation)."""
    cfg = ReproduceConfig.from_dict({**TINY, "seeds": [0, 1, 2], "table1_sizes": [0, 5]})
    cfg.save_json(run / CONFIG_FILE)
    plan = [c for c in build_plan(cfg) if c.table in ("table1", "reference")
            and c.data == "forget" and c.N in (0, 5)]
    (run / PLAN_FILE).write_text(json.dumps({"cells": [c.to_dict() for c in plan]}))
    store = ResultsStore(run, {"config_hash": cfg.config_hash()})
    rng = torch.Generator().manual_seed(0)
    for c in plan:
        rows = []
        roles = ("twin", "original") if c.kind == "reference" else ("target",)
        for role in roles:
            v = float(torch.rand(1, generator=rng)) * 100
            label = {"twin": "never-learned", "original": "original"}.get(role)
            rows.append({"role": role, "domain": "forget", "metric": "ue", "value": v,
                         **({"variant": label} if label else {})})
        store.write_cell(c.key, rows, seconds=0.0, **c.columns())
    return load_results(run)


def test_tables_mean_and_ci_over_seeds(tmp_path):
    df = _synthetic_run(tmp_path)
    t = build_tables(tmp_path)["table1_finetune_forget"]
    assert set(t["n_seeds"]) == {3}
    for r in t.itertuples():
        src = df[(df.variant == r.row) & (df.N == r.column) & (df.metric == "ue")]["value"]
        mean, lo, hi = t_interval(src.tolist())
        assert len(src) == 3
        assert (r.mean, r.ci95_low, r.ci95_high) == pytest.approx((mean, lo, hi))
        assert r.ci95_low < r.mean < r.ci95_high
    md = to_markdown(t, "table1_finetune_forget")
    r = t.iloc[0]
    assert f"{r['mean']:.1f} ± {(r['ci95_high'] - r['ci95_low']) / 2:.1f}" in md


# ----------------------------------------------------------------------- the store


def test_store_ignores_unfinished_and_cut_writes(tmp_path):
    store = ResultsStore(tmp_path)
    store.write_cell("a", [{"metric": "m", "value": 1.0}], seconds=0.1)
    # an attempt killed before its marker, then a line cut in half
    with (tmp_path / RESULTS_FILE).open("a") as f:
        f.write(json.dumps({"cell": "b", "attempt": "x", "metric": "m", "value": 2.0}) + "\n")
        f.write('{"cell": "c", "attempt": "y", "metr')
    store.write_cell("c", [{"metric": "m", "value": 3.0}, {"metric": "k", "value": 4.0}],
                     seconds=0.2)
    store.write_cell("a", [{"metric": "m", "value": 5.0}], seconds=0.1)  # a redo: last wins
    done = store.finished()
    assert set(done) == {"a", "c"}
    assert [r["value"] for r in done["a"][0]] == [5.0]
    assert [r["value"] for r in done["c"][0]] == [3.0, 4.0]
    df = load_results(tmp_path, plan_only=False)
    assert len(df) == 3 and DONE_METRIC not in set(df["metric"])
    with pytest.raises(ValueError, match="row 0 of cell 'd'"):
        store.write_cell("d", [{"value": 1}], seconds=0)


# -------------------------------------------------------------------- config & CLI


def test_cli_reproduce_dry_run_writes_config_and_plan(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["reproduce", "--model", "organism-micro", "--quick", "--out", str(out),
                 "--seeds", "0-1", "--methods", "rmu,almpu,npo", "--set", "table1_sizes=[0,5]",
                 "--set", 'unlearn={"*": {"max_num_batches": 3}}', "--workers", "3",
                 "--dry-run", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cfg = json.loads((out / CONFIG_FILE).read_text())
    assert cfg["model"] == "organism-micro" and cfg["quick"] is True
    assert cfg["seeds"] == [0, 1] and cfg["methods"] == ["rmu", "almpu", "npo"]
    assert cfg["table1_sizes"] == [0, 5] and cfg["attack_overrides"] == {"epochs": 1}
    assert cfg["unlearn"] == {"*": {"max_num_batches": 3}} and cfg["workers"] == 3
    assert cfg["config_hash"] == ReproduceConfig.load_json(out / CONFIG_FILE).config_hash()
    plan = json.loads((out / PLAN_FILE).read_text())["cells"]
    assert res["cells"] == len(plan) and res["dry_run"] is True
    assert not (out / RESULTS_FILE).exists()
    # the full preset is the paper's grid
    full = ReproduceConfig.preset("organism")
    assert full.table1_sizes == [0, 5, 10, 15, 20, 30, 40, 50] and full.seeds == [0, 1, 2]
    assert full.table2_sizes == [0, 10, 50, 100, 200, 500] and full.ablation_sizes == [0, 25, 50]


def test_config_errors_name_the_culprit(tmp_path):
    with pytest.raises(ValueError, match="unknown ReproduceConfig field"):
        main(["reproduce", "--out", str(tmp_path), "--set", "table9=1", "--dry-run", "--debug"])
    with pytest.raises(ValueError, match="methods: unknown method 'foo'"):
        ReproduceConfig(methods=["rmu", "foo"])
    with pytest.raises(ValueError, match="add 'almpu' to methods"):
        ReproduceConfig(methods=["rmu"], head_variants=["adaptive"])
    with pytest.raises(ValueError, match=r"table2_methods \['npo'\] are not in methods"):
        ReproduceConfig(methods=["rmu", "almpu"], table2_methods=["rmu", "npo"])
    only_rmu = ReproduceConfig.preset("organism-micro", quick=True, methods=["rmu"])
    assert only_rmu.table2_methods == ["rmu"] and only_rmu.head_variants == []
    with pytest.raises(ValueError, match="head_variants"):
        ReproduceConfig(head_variants=["random-10%"])
    with pytest.raises(ValueError, match="workers must be an int >= 0"):
        ReproduceConfig(workers=-1)
    with pytest.raises(FileNotFoundError, match="no reproduce config"):
        ReproduceConfig.load_json(tmp_path / "missing.json")
    # execution fields do not change the hash; result-changing fields do
    a = ReproduceConfig(threads=1, workers=2, progress=False)
    assert a.config_hash() == ReproduceConfig().config_hash()
    assert a.config_hash() != ReproduceConfig(table1_sizes=[0, 5]).config_hash()
