"""E3 part 1: calibrate the LoRA attack's learning rate on the organism (disjoint pool).

Attacks an RMU checkpoint, the never-learned twin and the original alike
(:func:`interp_unlearn.attacks.run_floor`: identical samples per seed) with the LoRA
recipe (rank 128, alpha 16, 3 epochs, batch 1) at several learning rates, on the world's
*attack* pool (entities that are never scored), and prints forget accuracy and recovery
per lr and N (mean and 95 % t-interval over attack seeds).

    python notes/scripts/e3_sweep.py --target /tmp/D-rmu0 --out /tmp/D-e3 \
        --lrs 2e-4,1e-3,2e-3,3e-3,1e-2 --samples 0,5,10,20,50 --seeds 0,1,2

Results per lr go to ``OUT/lr{lr}/`` (run_floor's resumable ``results.jsonl``,
``results.csv``, ``summary.csv``); ``OUT/sweep.csv`` gathers the summaries.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def main(argv: list[str] | None = None) -> None:
    import pandas as pd
    import torch

    from interp_unlearn.attacks import run_floor
    from interp_unlearn.attacks.floor import parse_list

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True, help="unlearned checkpoint (e.g. an RMU run)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--lrs", default="2e-4,1e-3,2e-3,3e-3,1e-2")
    ap.add_argument("--samples", default="0,5,10,20,50")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--pool", default="attack", choices=("attack", "same"))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    parts = []
    for lr in parse_list(a.lrs, float):
        df = run_floor(a.target, "finetune", pool=a.pool, samples=a.samples, seeds=a.seeds,
                       out=Path(a.out) / f"lr{lr:g}", config="lora", lr=lr, epochs=a.epochs,
                       progress=False)
        df = df[(df["domain"] == "forget") & df["metric"].isin(["accuracy", "recovery"])]
        g = df.groupby(["role", "metric", "N"])["value"]
        s = g.agg(["mean", "std", "count"]).reset_index()
        s.insert(0, "lr", lr)
        parts.append(s)
        print(s.to_string(index=False), flush=True)
    out = pd.concat(parts, ignore_index=True)
    out.to_csv(Path(a.out) / "sweep.csv", index=False)
    piv = out[(out["metric"] == "recovery")].pivot_table(index="lr", columns="N", values="mean")
    print("\nRMU recovery (mean over seeds):\n" + piv.round(3).to_string(), flush=True)


if __name__ == "__main__":
    main()
