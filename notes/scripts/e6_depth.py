"""E6: how deep do RMU and ALMPU unlearn on the shipped organism? (``notes/e6_depth.md``)

For seeds 0, 1, 2: phase 1 (the organism preset, K = 4) -> RMU and ALMPU at their
organism presets (the same seed) -> the unlearning depth (UDS per layer and per head,
:mod:`interp_unlearn.evaluation.depth`) against the never-learned twin on the forget eval
questions, with the retain eval questions as the twin's control -- patching the
reference's span (``depth-*``) and every position (``depthall-*``). Resumable (a finished
step is skipped); one torch thread.

    python notes/scripts/e6_depth.py --out /tmp/e6
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import interp_unlearn as iu

    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        loc_dir = args.out / f"localize-seed{seed}"
        if not (loc_dir / "selected_heads.json").is_file():
            iu.localize("organism", out_dir=loc_dir, seed=seed, progress=False)
        heads = loc_dir / "selected_heads.json"
        for method in ("rmu", "almpu"):
            ckpt = args.out / f"{method}-seed{seed}"
            if not (ckpt / "unlearn_result.json").is_file():
                iu.unlearn("organism", method, heads=heads if method == "almpu" else None,
                           out_dir=ckpt, overwrite=True, seed=seed, progress=False)
            res = json.loads((ckpt / "unlearn_result.json").read_text())
            for scope, stem in (("span", "depth"), ("all", "depthall")):
                dep_dir = args.out / f"{stem}-{method}-seed{seed}"
                if not (dep_dir / "summary.json").is_file():
                    iu.depth(ckpt, heads=True, scope=scope, out_dir=dep_dir, formats=("html",))
                s = json.loads((dep_dir / "summary.json").read_text())
                rows.append({"method": method, "seed": seed, "scope": scope, "uds": s["uds"],
                             "uds_heads": s.get("uds_heads"), "n_scored": s["n_scored"],
                             "control_ratio": s["control_ratio"],
                             "forget_after": res["after"]["forget"],
                             "retain_after": res["after"]["retain"]})
                print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(args.out / "e6_depth.csv", index=False)
    print(df.groupby(["scope", "method"])[["uds", "uds_heads", "forget_after", "retain_after"]]
          .agg(["mean", "std"]).round(3).to_string())


if __name__ == "__main__":
    main()
