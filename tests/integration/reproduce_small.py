"""A six-cell-plus-localization reproduce plan on the micro organism, shared by the
executor and shard tests: one seed, RMU, Table 1 at N = 3, the logit lens on the forget
questions. :func:`local_run` runs it once per test session with the local executor (in
this process) into the session's temp directory; a second caller resumes it (nothing
reruns), so both test modules compare against the same stored values.
:func:`submitit_shard` runs shard ``i`` of 2 of the same plan through submitit's local
executor into one run directory (once per session): the executor test checks shard 1's
values, the shard test runs shard 2 the same way and merges the two.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from interp_unlearn.pipeline.reproduce import ReproduceConfig, load_results, run_reproduce

SMALL = dict(model="organism-micro", seeds=[0], methods=["rmu"], table1_sizes=[3],
             table2_sizes=[0], table2_methods=[], head_variants=[], location_variants=[],
             depth=False, lens_domains=["forget"], unlearn={"*": {"max_num_batches": 2}},
             attack_overrides={"epochs": 1, "lora_rank": 8}, threads=1, workers=1,
             progress=False, figures=False)
#: the same plan through submitit's local executor (each cell a separate process)
SUBMITIT_OPTIONS = {"cluster": "local", "max_jobs": 2, "poll_s": 0.2, "time_min": 10}
TABLES = ("table1_finetune_forget", "table1_recovery", "unlearning")


def local_run(tmp_path_factory) -> Path:
    """The SMALL plan run (or resumed) with the local executor; its run directory."""
    out = tmp_path_factory.getbasetemp() / "reproduce-small-local"
    run_reproduce(ReproduceConfig.from_dict(SMALL), out)
    return out


_SUBMITIT_RUNS: dict[int, dict] = {}


def submitit_shard(tmp_path_factory, i: int) -> dict:
    """Shard ``i``/2 of the SMALL plan run as submitit jobs (each cell its own process)
    into ``BASETEMP/reproduce-small-submitit``, once per session; the first run's summary
    (``summary["out"]`` is the shard's directory)."""
    if i not in _SUBMITIT_RUNS:
        out = tmp_path_factory.getbasetemp() / "reproduce-small-submitit"
        cfg = ReproduceConfig.from_dict({**SMALL, "executor": "submitit",
                                         "executor_options": SUBMITIT_OPTIONS})
        _SUBMITIT_RUNS[i] = run_reproduce(cfg, out, shard=f"{i}/2")
    return _SUBMITIT_RUNS[i]


def values(run: Path) -> pd.DataFrame:
    """Stored values without timings, in a canonical order."""
    df = load_results(run)
    df = df[df["metric"] != "seconds"]
    keys = [c for c in ("cell_label", "role", "stage", "domain", "block", "layer", "head",
                        "metric") if c in df.columns]
    return df.sort_values(keys, kind="mergesort")[keys + ["value"]].reset_index(drop=True)
