"""The worst-case attacker's budget: a 20-trial study on one RMU checkpoint <= 15 min.

Unlearns the organism with RMU (its preset, seed 0) unless ``--checkpoint`` is given,
then runs ``WorstCaseConfig(trials=20)`` (lora / full; ``--heads`` adds head-delta) in a
fresh directory with one torch thread, and prints the study's wall time, the time of the
chosen configurations' scoring, and the ratio study / 900 s (target <= 1).

    python benchmarks/worst_case_budget.py [--checkpoint runs/rmu] [--trials 20]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

BUDGET_S = 15 * 60


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--heads", default=None, help="also search head-delta at these heads")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import interp_unlearn as iu
    from interp_unlearn.attacks.worst_case import WorstCaseConfig
    from interp_unlearn.attacks.worst_case_study import worst_case_attack

    tmp = Path(tempfile.mkdtemp(prefix="wc-budget-"))
    ckpt = args.checkpoint
    if ckpt is None:
        ckpt = tmp / "rmu"
        iu.unlearn("organism", "rmu", out_dir=ckpt, seed=0, progress=False)
    fams = ("lora", "full", "head-delta") if args.heads else ("lora", "full")
    t0 = time.perf_counter()
    res = worst_case_attack(ckpt, WorstCaseConfig(trials=args.trials, families=fams,
                                                  heads=args.heads),
                            out=tmp / "study", progress=True)
    total = time.perf_counter() - t0
    study = float(res.trials["seconds"].sum())
    print(json.dumps({"checkpoint": str(ckpt), "trials": args.trials,
                      "trial_seconds_sum": round(study, 1), "total_seconds": round(total, 1),
                      "ratio_total_over_budget": round(total / BUDGET_S, 3),
                      "worst_case_forget": res.summary.get("worst_case_forget"),
                      "within_budget": total <= BUDGET_S}, indent=1))
    return 0 if total <= BUDGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
