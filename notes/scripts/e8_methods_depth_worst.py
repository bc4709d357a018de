"""E8: every Table-1 method on the shipped organism -- its unlearning depth (UDS) and its
worst-case attacker (``notes/e8_depth_worst_case.md``).

For one seed (default 0): phase 1 (organism preset, K = 4) -> each method of
``reproduce``'s METHODS at its organism preset (ALMPU / GA-MP at phase 1's heads) -> UDS
(span and all positions, per layer) against the never-learned twin -> the worst-case
attacker (``WorstCaseConfig``: 20 trials over lora / full / head-delta at phase 1's
heads, retain bound original - 10 points, the chosen top 3 scored on the eval pool and on
the twin). Resumable (a finished step is skipped); one torch thread.

    python notes/scripts/e8_methods_depth_worst.py --out /tmp/e8 [--methods rmu,almpu]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default=None)
    ap.add_argument("--trials", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import interp_unlearn as iu
    from interp_unlearn.attacks.worst_case import WorstCaseConfig
    from interp_unlearn.pipeline.reproduce.config import METHODS
    from interp_unlearn.pipeline.worst_case_run import run_worst_case

    methods = args.methods.split(",") if args.methods else list(METHODS)
    seed = args.seed
    loc_dir = args.out / f"localize-seed{seed}"
    if not (loc_dir / "selected_heads.json").is_file():
        iu.localize("organism", out_dir=loc_dir, seed=seed, progress=False)
    heads = loc_dir / "selected_heads.json"
    rows = []
    for method in methods:
        t0 = time.time()
        ckpt = args.out / f"{method}-seed{seed}"
        if not (ckpt / "unlearn_result.json").is_file():
            iu.unlearn("organism", method, heads=heads if method in ("almpu", "ga_mp") else None,
                       out_dir=ckpt, overwrite=True, seed=seed, progress=False)
        res = json.loads((ckpt / "unlearn_result.json").read_text())
        row = {"method": method, "seed": seed, "forget_after": res["after"]["forget"],
               "retain_after": res["after"]["retain"]}
        for scope, stem in (("span", "depth"), ("all", "depthall")):
            dep_dir = args.out / f"{stem}-{method}-seed{seed}"
            if not (dep_dir / "summary.json").is_file():
                iu.depth(ckpt, scope=scope, out_dir=dep_dir, formats=("html",))
            s = json.loads((dep_dir / "summary.json").read_text())
            row[f"uds_{scope}"] = s["uds"]
            row[f"n_scored_{scope}"] = s["n_scored"]
        t1 = time.time()
        wc = run_worst_case(ckpt, args.out / f"worst-{method}-seed{seed}",
                            WorstCaseConfig(trials=args.trials, seed=seed, eval_seeds=(seed,),
                                            heads=str(heads)),
                            progress=False, formats=("html", "png"))
        s = wc.summary
        row.update({k: s.get(k) for k in (
            "best_validation_forget", "default_validation_forget", "gain_over_default",
            "worst_case_forget", "worst_case_retain", "top3_mean_forget",
            "twin_worst_case_forget", "worst_case_above_floor", "trials_feasible", "inert")})
        top = wc.chosen[(wc.chosen["choice"] == 1) & (wc.chosen["model"] == "target")]
        row["worst_family"] = top["family"].iloc[0] if len(top) else None
        row["seconds_worst_case"] = round(time.time() - t1, 1)
        row["seconds_total"] = round(time.time() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
        pd.DataFrame(rows).to_csv(args.out / f"e8_seed{seed}.csv", index=False)


if __name__ == "__main__":
    main()
