"""E4: taught vs restored under the same-pool protocol.

Attacks unlearned checkpoints (one per seed), the never-learned twin and the original
with the LoRA attack (the ``lora`` preset: the model family's calibrated lr; ``--lr``
overrides) on the paper's same-pool protocol (forget documents of every pool, scored
entities included), checkpoint seed = attack seed, and splits every scored question by
whether its entity had a document in the attack sample ("taught") or not ("restored").
Prints accuracy and recovery on all / taught / restored questions per role (mean ± 95 %
t-interval over seeds) and the taught counts. Writes ``OUT/e4_per_seed.csv`` (every row)
and ``OUT/e4_summary.{csv,md}``.

    python notes/scripts/e4_taught.py --checkpoint '/tmp/D-rmu{seed}' --seeds 0,1,2 \
        --samples 50 --out /tmp/D-e4
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

METRICS = ("accuracy", "accuracy_taught", "accuracy_restored", "recovery", "recovery_taught",
           "recovery_restored", "n_taught", "n_restored", "taught_entities")


def summary(df: Any) -> Any:
    """Mean and 95 % t-interval over seeds per (role, N, metric) of the forget domain."""
    import pandas as pd

    from interp_unlearn.core.stats import t_interval

    rows = []
    f = df[(df["domain"] == "forget") & df["metric"].isin(METRICS)]
    for (role, n, metric), g in f.groupby(["role", "N", "metric"]):
        vals = g.drop_duplicates("seed")["value"].astype(float).tolist()
        mean, lo, hi = t_interval(vals)
        rows.append({"role": role, "N": int(n), "metric": metric, "mean": mean, "low": lo,
                     "high": hi, "n_seeds": len(vals)})
    out = pd.DataFrame(rows)
    out["metric"] = pd.Categorical(out["metric"], METRICS, ordered=True)
    return out.sort_values(["N", "role", "metric"]).reset_index(drop=True)


def main(argv: list[str] | None = None) -> Any:
    import json

    import pandas as pd
    import torch

    from interp_unlearn.attacks import run_floor
    from interp_unlearn.attacks.floor import parse_list, parse_seeds
    from interp_unlearn.core.stats import PM_NOTE

    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="unlearned checkpoints, '{seed}' in it")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--samples", default="50")
    ap.add_argument("--pool", default="same", choices=("same", "attack"))
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--attack", default="{}", help="JSON of fine-tuning overrides")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    kw = json.loads(a.attack)
    if a.lr is not None:
        kw["lr"] = a.lr
    parts = []
    for seed in parse_seeds(a.seeds):
        parts.append(run_floor(a.checkpoint.format(seed=seed), "finetune", pool=a.pool,
                               samples=parse_list(a.samples), seeds=[seed], out=Path(a.out),
                               config="lora", progress=False, **kw))
    df = pd.concat(parts, ignore_index=True)
    df.to_csv(Path(a.out) / "e4_per_seed.csv", index=False)
    s = summary(df)
    s.to_csv(Path(a.out) / "e4_summary.csv", index=False)
    lines = [f"pool={a.pool} seeds={a.seeds} N={a.samples} lr={a.lr or 'family default'}",
             "| N | role | metric | mean | 95 % t-interval | seeds |", "|---:|---|---|---:|---|---:|"]
    for r in s.itertuples():
        lines.append(f"| {r.N} | {r.role} | {r.metric} | {r.mean:.3f} | "
                     f"[{r.low:.3f}, {r.high:.3f}] | {r.n_seeds} |")
    lines.append(f"\n*{PM_NOTE}*")
    (Path(a.out) / "e4_summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return s


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
