"""E2: does ALMPU resist the perturbation family it trains against? (issue 13, E2)

For every seed s: the RMU and ALMPU checkpoints of seed s (same u, batches and data order)
are attacked with a head δ at ALMPU's heads -- ``head_restore_attack(mode="delta")``, the
shared :class:`~interp_unlearn.interventions.adversary.HeadAdversary` with objective ``ce``
(minimise the CE of N attack-pool documents, i.e. restore the knowledge; the attacker has
no p_ref) -- at radius ε (absolute, every head) or κ·E‖z‖ (the radius ALMPU trained
against), attack seed s. Forget accuracy (eval pool, cloze) and retain accuracy are scored;
the ALMPU − RMU difference is paired by seed (95 % t-interval).

    python notes/scripts/e2_own_threat_model.py --rmu '/tmp/rmu-s{seed}' \
        --almpu '/tmp/almpu-s{seed}' --heads 0.0,0.1,0.3,0.5 --seeds 0,1,2,3,4 \
        --radii eps1,eps4,kappa1 --n 50 --out /tmp/e2
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rmu", required=True, help="checkpoint pattern with {seed}")
    ap.add_argument("--almpu", required=True, help="checkpoint pattern with {seed}")
    ap.add_argument("--heads", required=True, help="L.H,L.H,... (ALMPU's heads)")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--radii", default="eps1,eps4,kappa1",
                    help="epsN (absolute radius N) | kappaK (K·E‖z‖) | none (unbounded)")
    ap.add_argument("--n", type=int, default=50, help="attack documents (attack pool)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    import pandas as pd
    import torch

    from interp_unlearn.attacks.head_restore import head_restore_attack
    from interp_unlearn.core.stats import paired_difference, t_interval

    torch.set_num_threads(1)
    heads = [tuple(int(x) for x in h.split(".")) for h in args.heads.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    rows_path = args.out / "rows.jsonl"
    done = set()
    if rows_path.is_file():
        for line in rows_path.read_text().splitlines():
            r = json.loads(line)
            done.add((r["method"], r["seed"], r["radius"]))
    for seed in seeds:
        for method, pattern in (("rmu", args.rmu), ("almpu", args.almpu)):
            ckpt = pattern.format(seed=seed)
            for radius in ["none-attack0"] + args.radii.split(","):
                if (method, seed, radius) in done:
                    continue
                kw: dict = {}
                n = args.n
                if radius == "none-attack0":
                    n = 0
                elif radius.startswith("eps"):
                    kw["epsilon"] = float(radius[3:])
                elif radius.startswith("kappa"):
                    kw["kappa"] = float(radius[5:])
                elif radius != "none":
                    raise SystemExit(f"--radii: unknown {radius!r}")
                res = head_restore_attack(ckpt, n, seed, heads=heads, mode="delta",
                                          pool="attack", domains=("forget", "retain"), **kw)
                row = {"method": method, "seed": seed, "radius": radius, "n": n,
                       "forget": res.evals["forget"].accuracy,
                       "retain": res.evals["retain"].accuracy,
                       "delta_norms": res.info.get("delta_norms"),
                       "delta_over_eps": res.info.get("delta_over_eps")}
                print(json.dumps(row), flush=True)
                with rows_path.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
    df = pd.DataFrame([json.loads(x) for x in rows_path.read_text().splitlines()])
    df.to_csv(args.out / "rows.csv", index=False)
    lines = ["| radius | RMU forget | ALMPU forget | ALMPU − RMU (paired, 95 % t) | RMU retain | ALMPU retain |",
             "| --- | --- | --- | --- | --- | --- |"]
    for radius, g in df.groupby("radius", sort=False):
        a = g[g.method == "almpu"].set_index("seed")
        b = g[g.method == "rmu"].set_index("seed")
        fa, fb = t_interval(a["forget"].tolist()), t_interval(b["forget"].tolist())
        d = paired_difference(a["forget"].to_dict(), b["forget"].to_dict())
        ra, rb = a["retain"].mean(), b["retain"].mean()
        lines.append(f"| {radius} | {fb[0]:.3f} ± {fb[0]-fb[1]:.3f} | {fa[0]:.3f} ± {fa[0]-fa[1]:.3f} "
                     f"| {_fmt(d)} | {rb:.3f} | {ra:.3f} |")
    lines.append("")
    lines.append("± = half-width of the 95 % Student-t interval over seeds; the difference is "
                 "the mean of per-seed differences with its 95 % t-interval.")
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _fmt(d) -> str:
    return f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}] (n={d.n_pairs})"


if __name__ == "__main__":
    raise SystemExit(main())
