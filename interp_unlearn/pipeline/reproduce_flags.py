"""The ``reproduce`` command's executor and shard flags (``--executor``, ``--shard``,
``--partition``, ``--gpus-per-job``, ``--job-time``): added to its parser by
:func:`add_cluster_arguments`, read back into :class:`~.config.ReproduceConfig`
overrides by :func:`cluster_overrides`. Outside the ``reproduce`` package, whose import
loads torch: nothing here does at import time (``--help`` stays fast).
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["EXECUTOR_CHOICES", "add_cluster_arguments", "cluster_overrides"]

#: ``reproduce.config.EXECUTORS`` (repeated here so that ``--help`` imports no torch)
EXECUTOR_CHOICES = ("local", "submitit")

_OPTION_FLAGS = (("partition", "partition"), ("gpus_per_job", "gpus_per_job"),
                 ("job_time", "time_min"))


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the executor and shard flags to the ``reproduce`` parser."""
    g = parser.add_argument_group("executors and shards (docs/multi_gpu.md)")
    g.add_argument("--executor", choices=EXECUTOR_CHOICES, default=None,
                   help="local (default): this machine's worker processes, one GPU each "
                        "when several are visible; submitit: every grid cell is its own "
                        "cluster job (SLURM; --set 'executor_options={\"cluster\": "
                        "\"local\"}' runs the jobs as local processes); needs "
                        "pip install 'interp-unlearn[cluster]'")
    g.add_argument("--shard", default=None, metavar="I/N",
                   help="run only shard I of N (1 <= I <= N) in OUT/shards/I-of-N: the "
                        "grid split by seed into self-contained parts; a later run "
                        "without --shard merges the shards and writes the tables")
    g.add_argument("--partition", default=None, help="submitit: the SLURM partition")
    g.add_argument("--gpus-per-job", type=int, default=None,
                   help="submitit: GPUs per cell job (default 1 off the CPU, else 0)")
    g.add_argument("--job-time", type=int, default=None, metavar="MINUTES",
                   help="submitit: each cell job's time limit (default 240)")


def cluster_overrides(args: argparse.Namespace, over: dict[str, Any]
                      ) -> tuple[int, int] | None:
    """Write the flags into ``over`` (config overrides, e.g. from ``--set``); return the
    parsed ``--shard`` (``None`` without it). Raises on a bad spec, before any work."""
    from interp_unlearn.pipeline.reproduce.shard import parse_shard

    shard = parse_shard(args.shard)
    if args.executor is not None:
        over["executor"] = args.executor
    opts = {key: getattr(args, flag) for flag, key in _OPTION_FLAGS
            if getattr(args, flag) is not None}
    for key in ("gpus_per_job", "time_min"):
        if key in opts and opts[key] < (0 if key == "gpus_per_job" else 1):
            raise ValueError(f"--{'gpus-per-job' if key == 'gpus_per_job' else 'job-time'} "
                             f"must be >= {0 if key == 'gpus_per_job' else 1}, got {opts[key]}")
    if opts:
        over["executor_options"] = {**over.get("executor_options", {}), **opts}
    return shard
