"""Reproduce-grid throughput: one process with every core vs one single-threaded worker per core.

Runs the same slice of the organism's full protocol twice, side by side in one
invocation, in two fresh run directories:

* ``sequential``: ``workers=1``, torch's default threads (all cores);
* ``workers``: ``workers=0`` (one process per core, 1 thread each).

Prints the wall time of each, the cell time summed over cells (how much slower one cell
is on 1 thread than on all cores), the ratio of wall times workers/sequential (target
< 1; the full 3-seed protocol must fit in 60 min on 2 cores) and, with ``--check``,
whether the stored values equal a 1-thread sequential run's (they must: a cell's numbers
depend on the thread count, not on the process that ran it). A small slice has a long
serial start (spawning workers, localization) and tail, so the ratio of the full grid
is better than the slice's.

    python benchmarks/reproduce_workers.py                 # RMU, GA, DPO: a Table 1 slice
    python benchmarks/reproduce_workers.py --model organism-micro --sizes 0,5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

from interp_unlearn.pipeline.reproduce import (ReproduceConfig, ResultsStore, load_results,
                                               run_reproduce)
from interp_unlearn.pipeline.reproduce.parallel import auto_workers  # noqa: E402


def _values(run: Path):
    df = load_results(run)
    df = df[df["metric"] != "seconds"]
    keys = [c for c in ("cell_label", "role", "stage", "domain", "block", "layer", "head",
                        "metric") if c in df.columns]
    return df.sort_values(keys, kind="mergesort")[keys + ["value"]].reset_index(drop=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="organism")
    ap.add_argument("--methods", default="rmu,ga,dpo")
    ap.add_argument("--sizes", default="0,10,20,30,50")
    ap.add_argument("--check", action="store_true",
                    help="also run sequentially with 1 thread and compare the stored values")
    args = ap.parse_args()
    base = dict(seeds=[0], methods=args.methods.split(","),
                table1_sizes=[int(n) for n in args.sizes.split(",")], table2_sizes=[0],
                head_variants=[], location_variants=[], localize={"epochs": 1},
                lens_domains=["forget"], figures=False, progress=False)
    cores = auto_workers("cpu")
    runs = {"sequential": dict(workers=1, threads=0), "workers": dict(workers=0, threads=0)}
    if args.check:
        runs["sequential-1-thread"] = dict(workers=1, threads=1)
    tmp = Path(tempfile.mkdtemp(prefix="reproduce-workers-"))
    times, cell_s = {}, {}
    default_threads = torch.get_num_threads()
    try:
        for name, ex in runs.items():
            torch.set_num_threads(default_threads)
            cfg = ReproduceConfig.preset(args.model, **base, **ex)
            t0 = time.perf_counter()
            summary = run_reproduce(cfg, tmp / name)
            times[name] = time.perf_counter() - t0
            cell_s[name] = sum(float(m["value"]) for _, m in ResultsStore(tmp / name).finished().values())
            print(f"{name:>20}: {times[name]:7.1f} s wall, {cell_s[name]:7.1f} s summed over "
                  f"{summary['cells']} cells", flush=True)
        out = {"model": args.model, "cores": cores, "torch_default_threads": default_threads,
               "seconds": {k: round(v, 1) for k, v in times.items()},
               "cell_seconds": {k: round(v, 1) for k, v in cell_s.items()},
               "ratio_workers_over_sequential": round(times["workers"] / times["sequential"], 3)}
        if args.check:
            out["values_equal_1_thread"] = bool(
                _values(tmp / "workers").equals(_values(tmp / "sequential-1-thread")))
        print(json.dumps(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
