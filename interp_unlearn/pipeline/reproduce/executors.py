"""Where the reproduce grid's cells run: ``local`` (this machine) or ``submitit`` (a
cluster scheduler: SLURM, or submitit's local / debug executors).

``local`` (the default) is :mod:`.parallel`'s process pool (or, with one worker, this
process): each worker builds its own runner from the run's config and returns the rows
of a cell it ran.

``submitit`` makes every cell a **self-contained job**: :func:`run_job` takes the run
directory and the cell's key, reads ``reproduce_config.json`` there, runs the cell and
writes its rows to ``RUN/cells/{key}.json`` (written to a temp name and renamed, so the
file is complete or absent). The parent submits a cell once the cells it reads have
finished (:func:`~.parallel.dependencies`; at most ``max_jobs`` in flight), polls the
jobs, and merges each result file into ``results.jsonl`` (it alone writes the store).
Kill / resume semantics are those of the local pool:

* a job that fails or is killed (a preempted or timed-out SLURM job) loses only its cell:
  no new cell is submitted, the jobs in flight finish and are merged, then the error is
  raised naming the cell; a rerun redoes that cell alone;
* an interrupted parent cancels its jobs in flight; a parent killed outright leaves their
  ids in ``RUN/cells/inflight.json``, and the next run cancels those jobs first, merges
  any result file they completed, then cleans ``checkpoints/.tmp-*`` as usual.

Executor options (``ReproduceConfig.executor_options``, or ``--partition``,
``--gpus-per-job``, ``--job-time``): see :data:`~.config.EXECUTOR_OPTIONS`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any, Callable

from interp_unlearn.pipeline.reproduce.config import CONFIG_FILE, EXECUTORS
from interp_unlearn.pipeline.reproduce.parallel import (auto_workers, dependencies, run_cells,
                                                        submit_ready)
from interp_unlearn.pipeline.reproduce.plan import Cell
from interp_unlearn.pipeline.reproduce.store import (CHECKPOINT_DIR, FLOOR_DIR, _plain,
                                                     repair_tail)

__all__ = ["CELLS_DIR", "ExecutorUnavailable", "check_executor", "execute", "job_file",
           "plan_workers", "prepare", "run_job"]

CELLS_DIR = "cells"
INFLIGHT_FILE = "inflight.json"
OnDone = Callable[[Cell, list[dict[str, Any]], float, float], None]


class ExecutorUnavailable(ValueError):
    """The chosen executor's package is not installed."""


def check_executor(name: str) -> None:
    """Raise before any work if executor ``name`` is unknown or not installed."""
    if name not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {name!r}")
    if name == "submitit" and importlib.util.find_spec("submitit") is None:
        raise ExecutorUnavailable("executor 'submitit' is not installed: pip install "
                                  "'interp-unlearn[cluster]' (or pip install submitit)")


def plan_workers(cfg: Any, n_todo: int) -> int:
    """Processes (``local``) or jobs in flight (``submitit``) for ``n_todo`` cells."""
    if cfg.executor == "submitit":
        n = int(cfg.executor_options.get("max_jobs") or cfg.workers or 16)
    else:
        n = int(cfg.workers) or auto_workers(cfg.device)
    return min(n, max(1, n_todo))


def job_file(run_dir: str | Path, key: str) -> Path:
    """``RUN/cells/{key}.json``: the result file of the job that ran cell ``key``."""
    return Path(run_dir) / CELLS_DIR / f"{key}.json"


def run_job(runner_cls: type, config_cls: type, run_dir: str, key: str, threads: int = 0
            ) -> str:
    """Run cell ``key`` of the run in ``run_dir`` (its saved config) and write its rows to
    :func:`job_file`; returns that path. The classes travel by reference (no import cycle)."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    runner = runner_cls(config_cls.load_json(Path(run_dir) / CONFIG_FILE), run_dir)
    cell = next((c for c in runner.plan if c.key == key), None)
    if cell is None:
        raise KeyError(f"cell {key} is not in the plan of {run_dir}")
    c0, p0 = time.time(), time.process_time()
    rows = runner.run_cell(cell)
    out = job_file(run_dir, key)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_plain({"key": key, "label": cell.label, "rows": rows,
                                      "seconds": time.time() - c0,
                                      "cpu_seconds": time.process_time() - p0,
                                      "host": socket.gethostname()})))
    tmp.replace(out)
    return str(out)


def _read_job(path: Path) -> tuple[list[dict[str, Any]], float, float]:
    d = json.loads(Path(path).read_text())
    return d["rows"], float(d["seconds"]), float(d["cpu_seconds"])


# ------------------------------------------------------------------ orphaned jobs
def _inflight(run_dir: Path) -> Path:
    return run_dir / CELLS_DIR / INFLIGHT_FILE


def _save_inflight(run_dir: Path, jobs: dict[str, dict[str, Any]]) -> None:
    path = _inflight(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(jobs, indent=1))
    tmp.replace(path)


def _alive(pid: int, wait_s: float) -> bool:
    """Whether process ``pid`` still runs (not a zombie) after up to ``wait_s`` seconds."""
    deadline = time.time() + wait_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        if state == "Z":
            return False
        if time.time() >= deadline:
            return True
        time.sleep(0.1)


def _cancel_recorded(run_dir: Path) -> None:
    """Cancel the jobs a killed parent left in flight (``inflight.json``)."""
    path = _inflight(run_dir)
    if not path.is_file():
        return
    for rec in json.loads(path.read_text() or "{}").values():
        if rec.get("cluster") == "local" and rec.get("host") == socket.gethostname():
            pid = int(rec["job_id"])
            try:  # only submitit's controller of that job, not a reused pid
                if b"submitit" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGINT)  # the controller stops its task
                    if _alive(pid, wait_s=5.0):  # SIGINT ignored (started in background)
                        os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        elif rec.get("cluster") == "slurm":
            import submitit
            submitit.SlurmJob(folder=rec["folder"], job_id=str(rec["job_id"])).cancel(check=False)
    path.unlink()


def prepare(runner: Any) -> None:
    """Before a (re)run: cancel jobs a killed parent left running, remove what killed cells
    left (temp checkpoints, a cut last line of the floor cache)."""
    _cancel_recorded(runner.out)
    ckdir = runner.out / CHECKPOINT_DIR
    if ckdir.is_dir():
        # a killed run's temp checkpoints (and the trainer's ``..tmp-*.partial`` of one)
        for stale in [*ckdir.glob(".tmp-*"), *ckdir.glob("..tmp-*")]:
            shutil.rmtree(stale, ignore_errors=True)
    repair_tail(runner.out / FLOOR_DIR / "results.jsonl")


# ------------------------------------------------------------------------- running
def execute(runner: Any, todo: list[Cell], finished: set[str], workers: int, threads: int,
            on_done: OnDone, bar: Any = None) -> None:
    """Run ``todo`` with ``runner.cfg.executor``; ``on_done(cell, rows, seconds, cpu)`` is
    called here as each cell finishes. Result files of jobs that finished after their
    parent died are merged first, without rerunning their cells."""
    done, rest = set(finished), []
    for cell in todo:
        path = job_file(runner.out, cell.key)
        if path.is_file():
            on_done(cell, *_read_job(path))
            done.add(cell.key)
            if bar is not None:
                bar.update(1)
        else:
            rest.append(cell)
    if runner.cfg.executor == "submitit":
        _run_submitit(runner, rest, done, workers, threads, on_done, bar)
    elif workers > 1:
        run_cells(runner, rest, done, workers, threads, on_done, bar)
    else:
        for cell in rest:
            if bar is not None:
                bar.set_postfix_str(cell.label)
            c0, p0 = time.time(), time.process_time()
            on_done(cell, runner.run_cell(cell), time.time() - c0, time.process_time() - p0)
            if bar is not None:
                bar.update(1)


def _done(job: Any) -> bool:
    """``job.done()``; ``True`` when asking raises (a debug job runs, and fails, in
    ``done()``: its ``result()`` raises the error again, with the cell's note)."""
    try:
        return bool(job.done())
    except Exception:  # noqa: BLE001
        return True


def _make_executor(runner: Any) -> Any:
    import submitit

    cfg, opts = runner.cfg, dict(runner.cfg.executor_options)
    ex = submitit.AutoExecutor(folder=runner.out / "submitit" / "%j", cluster=opts.get("cluster"))
    params: dict[str, Any] = {
        "name": f"reproduce-{runner.out.name}", "nodes": 1, "tasks_per_node": 1,
        "timeout_min": int(opts.get("time_min", 240)),
        "gpus_per_node": int(opts.get("gpus_per_job", 0 if cfg.device == "cpu" else 1)),
        "cpus_per_task": int(opts.get("cpus_per_job", max(1, int(cfg.threads or 1))))}
    if opts.get("mem_gb") is not None:
        params["mem_gb"] = int(opts["mem_gb"])
    if opts.get("partition"):
        params["slurm_partition"] = str(opts["partition"])
    params.update(opts.get("parameters") or {})
    ex.update_parameters(**params)
    return ex


def _run_submitit(runner: Any, todo: list[Cell], finished: set[str], workers: int,
                  threads: int, on_done: OnDone, bar: Any) -> None:
    deps = dependencies(runner.plan)
    ex = _make_executor(runner)
    poll = float(runner.cfg.executor_options.get("poll_s", 1.0))
    args = (type(runner), type(runner.cfg), str(runner.out))
    done, pending = set(finished), list(todo)
    running: dict[Any, Cell] = {}
    records: dict[str, dict[str, Any]] = {}
    error: BaseException | None = None
    clean = False

    def submit(cell: Cell) -> Any:
        job = ex.submit(run_job, *args, cell.key, int(runner.cfg.threads))
        records[cell.key] = {"job_id": str(job.job_id), "cluster": ex.cluster,
                             "folder": str(job.paths.folder),
                             "host": socket.gethostname(), "label": cell.label}
        _save_inflight(runner.out, records)
        return job

    try:
        while pending or running:
            if error is None:
                submit_ready(pending, running, deps, done, workers, submit)
            if not running:
                if error is not None:
                    break
                raise RuntimeError(f"{len(pending)} cells wait for cells that never ran: the "
                                   "plan is inconsistent")
            if bar is not None:
                bar.set_postfix_str(" | ".join(c.label for c in running.values()))
            finished_now = [j for j in running if _done(j)]
            if not finished_now:
                time.sleep(poll)
            for job in finished_now:
                cell = running.pop(job)
                records.pop(cell.key, None)
                try:
                    path = job.result()
                except BaseException as e:  # noqa: BLE001 -- re-raised below
                    if error is None:
                        error = e
                        e.add_note(f"in grid cell {cell.label} (key {cell.key}, job "
                                   f"{job.job_id}; logs in {job.paths.folder})")
                    continue
                on_done(cell, *_read_job(Path(path)))
                done.add(cell.key)
                if bar is not None:
                    bar.update(1)
            _save_inflight(runner.out, records)
        if error is not None:
            raise error
        clean = True
    finally:  # interrupted: cancel the jobs in flight, as the local pool's workers die
        if not clean:
            for job in running:
                try:
                    job.cancel(check=False)
                except Exception:  # noqa: BLE001 -- best effort; inflight.json remains
                    continue
        if clean or not running:
            _inflight(runner.out).unlink(missing_ok=True)
        try:  # submitit's submission folder (the literal template), once empty
            (runner.out / "submitit" / "%j").rmdir()
        except OSError:
            pass
