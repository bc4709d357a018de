"""Run grid cells in worker processes, dependencies first.

On a CPU the organism's cells are small (a 3 M-parameter model, LoRA at batch 1): a cell
on one thread takes only ~1.3× its time on two, so two single-threaded processes get more
done than one process with two threads (``benchmarks/reproduce_workers.py``: wall-time
ratio 0.70-0.81 on a Table 1 slice; the full 3-seed grid kept both cores busy, 93.6
cell-minutes in 47.1 minutes on the organism shipped 2026-11-30). :func:`run_cells` therefore hands cells to a pool of
``workers`` spawned processes, each with its own :class:`~.grid.GridRunner` and
``torch.set_num_threads(threads)``; the parent alone writes the results store, in the
order cells finish.

A cell starts only when the cells it reads have finished (:func:`dependencies`):

* ALMPU unlearning of seed ``s`` reads the localization of seed ``s`` (its heads);
* a method's logit lens reads that method's unlearned checkpoint;
* an attack reads the unlearned checkpoint and the twin/original attacked with the same
  ``N``, data and seed (the ``reference`` cell), which it finds in the floor cache instead
  of recomputing.

With ``device="cuda"`` and several GPUs visible, each worker sees one of them
(``CUDA_VISIBLE_DEVICES``, :func:`worker_gpus`; ``workers=0`` starts one per GPU).

Workers die with the parent (``PR_SET_PDEATHSIG`` on Linux), so a run killed with
SIGKILL leaves no process writing into its directory; the restart cleans what the
killed cells left (``checkpoints/.tmp-*``, a cut last line of the floor cache) as for a
sequential run. If a cell raises, no new cell starts, the cells in flight finish and are
written, then the error is raised.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

from interp_unlearn.pipeline.reproduce.plan import REFERENCE_METHOD, Cell, model_method

__all__ = ["auto_workers", "dependencies", "run_cells", "submit_ready", "visible_gpus",
           "worker_gpus"]

_RUNNER: Any = None  # the worker process's GridRunner


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use (``CUDA_VISIBLE_DEVICES``, else all)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def worker_gpus(device: str, workers: int) -> list[str] | None:
    """``CUDA_VISIBLE_DEVICES`` of each worker: with ``device="cuda"``, several workers and
    several visible GPUs, one GPU each (round robin when workers outnumber them);
    ``None`` otherwise (every worker sees what this process sees)."""
    if str(device) != "cuda" or int(workers) < 2:
        return None
    gpus = visible_gpus()
    return [gpus[j % len(gpus)] for j in range(int(workers))] if len(gpus) > 1 else None


def auto_workers(device: str) -> int:
    """Workers for ``workers=0``: one per available CPU core (at most 8) on the CPU, one
    per visible GPU with ``device="cuda"`` (each worker on its own GPU), one on any other
    accelerator (a second process would load a second copy of the model there)."""
    if str(device) == "cuda":
        return max(1, len(visible_gpus()))
    if str(device) != "cpu":
        return 1
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def dependencies(plan: list[Cell]) -> dict[str, set[str]]:
    """``{cell key: keys of the cells it reads}`` (see the module docstring). A dependency
    that is not in ``plan`` is left out (it cannot be waited for)."""
    localize = {c.seed: c.key for c in plan if c.kind == "localize"}
    unlearn = {(c.model, c.seed): c.key for c in plan if c.kind == "unlearn"}
    reference = {(c.data, c.N, c.seed): c.key for c in plan if c.kind == "reference"}
    deps: dict[str, set[str]] = {}
    for c in plan:
        need: set[str] = set()
        if c.kind == "unlearn" and model_method(c.model) == "almpu":
            need.add(localize.get(c.seed, ""))
        elif c.kind in ("lens", "depth") and c.model not in REFERENCE_METHOD:
            need.add(unlearn.get((c.model, c.seed), ""))
        elif c.kind == "attack":
            need.add(unlearn.get((c.model, c.seed), ""))
            need.add(reference.get((c.data, c.N, c.seed), ""))
        need.discard("")
        deps[c.key] = need
    return deps


def submit_ready(pending: list[Cell], running: dict[Any, Cell], deps: dict[str, set[str]],
                 done: set[str], workers: int, submit: Callable[[Cell], Any]) -> None:
    """Start the pending cells whose dependencies are ``done``, in plan order, while fewer
    than ``workers`` run: ``running[submit(cell)] = cell`` (one scheduler, every executor)."""
    for cell in list(pending):
        if len(running) >= workers:
            break
        if deps[cell.key] <= done:
            running[submit(cell)] = cell
            pending.remove(cell)


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux only)."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:  # no glibc: the worker then ends at its next read from the pool
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _init_worker(runner_cls: type, config_cls: type, config: dict[str, Any], out: str,
                 threads: int, parent: int, gpus: Any = None) -> None:
    """Build the worker's own runner: ``runner_cls(config_cls.from_dict(config), out)`` (the
    classes travel by reference, so this module needs no import of the grid); ``gpus``: a
    queue of ``CUDA_VISIBLE_DEVICES`` values, one taken per worker before CUDA starts."""
    global _RUNNER
    _die_with_parent(parent)
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus.get()
    import torch

    torch.set_num_threads(max(1, int(threads)))
    _RUNNER = runner_cls(config_cls.from_dict(config), out)


def _run_in_worker(key: str) -> tuple[str, list[dict[str, Any]], float, float]:
    cell = next(c for c in _RUNNER.plan if c.key == key)
    c0, p0 = time.time(), time.process_time()
    rows = _RUNNER.run_cell(cell)
    return key, rows, time.time() - c0, time.process_time() - p0


def run_cells(runner: Any, todo: list[Cell], finished: set[str], workers: int, threads: int,
              on_done: Callable[[Cell, list[dict[str, Any]], float, float], None],
              bar: Any = None) -> None:
    """Run ``todo`` (cells of ``runner.plan``) in ``workers`` processes; ``finished``: keys
    already done. ``on_done(cell, rows, seconds, cpu_seconds)`` is called in this process
    as each cell finishes (the caller writes the store there); ``bar``: a tqdm bar."""
    deps = dependencies(runner.plan)
    done = set(finished)
    pending = list(todo)
    running: dict[Future, Cell] = {}
    error: BaseException | None = None
    clean = False
    ctx = get_context("spawn")
    gpus = worker_gpus(runner.cfg.device, workers)
    queue = None
    if gpus is not None:
        queue = ctx.Queue()
        for g in gpus:
            queue.put(g)
    ex = ProcessPoolExecutor(max_workers=int(workers), mp_context=ctx,
                             initializer=_init_worker,
                             initargs=(type(runner), type(runner.cfg), runner.cfg.to_dict(),
                                       str(Path(runner.out)),
                                       int(threads), os.getpid(), queue))
    try:
        while pending or running:
            if error is None:
                submit_ready(pending, running, deps, done, workers,
                             lambda cell: ex.submit(_run_in_worker, cell.key))
            if not running:
                if error is not None:
                    break
                missing = {d for c in pending for d in deps[c.key]} - done
                raise RuntimeError(f"{len(pending)} cells wait for cells that never ran "
                                   f"(keys {sorted(missing)[:3]}...): the plan is inconsistent")
            if bar is not None:
                bar.set_postfix_str(" | ".join(c.label for c in running.values()))
            finished_now, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished_now:
                cell = running.pop(fut)
                try:
                    _, rows, secs, cpu = fut.result()
                except BaseException as e:  # noqa: BLE001 -- re-raised below
                    if error is None:
                        error = e
                        e.add_note(f"in grid cell {cell.label} (key {cell.key})")
                    continue
                on_done(cell, rows, secs, cpu)
                done.add(cell.key)
                if bar is not None:
                    bar.update(1)
        if error is not None:
            raise error
        clean = True
    finally:  # on an interrupt, do not wait for the cells in flight
        ex.shutdown(wait=clean, cancel_futures=True)
