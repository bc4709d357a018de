"""E3 part 2: the calibrated LoRA comparison of two unlearning methods, paired by seed.

For every seed ``s``: unlearn with method A and method B at seed ``s`` (or reuse
checkpoints that exist), attack both -- and the never-learned twin and the original --
with the LoRA attack at the model's calibrated lr (the ``lora`` preset: ATTACK_LR of its
family; ``--lr`` overrides) on the **disjoint attack pool**, attack seed ``s`` (the same
samples for A, B, twin and original), and report per N:

* forget accuracy, UE and recovery of A and B (mean ± 95 % t-interval over seeds);
* the paired differences A − B by seed (mean of per-seed differences, 95 % t-interval);
* for accuracy and UE also the bootstrap over seeds × questions clustered by entity
  (the same resample for A and B; 95 % percentile interval, RNG seed 0).

    python notes/scripts/e3_paired.py --model organism --out /tmp/e3-paired \
        --methods almpu,rmu --heads L.H,L.H --seeds 0,1,2,3,4 --samples 0,10,20,50

Checkpoints go to ``OUT/ckpt/{method}-seed{s}`` (an existing complete one is reused; or
point ``--checkpoint METHOD=PATTERN`` at existing ones, ``{seed}`` in the pattern);
attacks to ``OUT/floor`` (run_floor's resumable cache, shared by both methods so the twin
and the original are attacked once per N and seed). Writes ``OUT/per_seed.csv``,
``OUT/paired.csv`` and ``OUT/paired.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _checkpoint(model: str, method: str, seed: int, out: Path, heads: Any,
                patterns: dict[str, str], overrides: dict[str, Any]) -> Path:
    from interp_unlearn.unlearn import unlearn
    from interp_unlearn.unlearn.config import RESULT_FILE

    if method in patterns:
        path = Path(patterns[method].format(seed=seed))
        if not (path / RESULT_FILE).is_file():
            raise FileNotFoundError(f"--checkpoint {method}: {path} is not an unlearned checkpoint")
        return path
    path = out / "ckpt" / f"{method}-seed{seed}"
    if not (path / RESULT_FILE).is_file():
        cfg = {**overrides.get("*", {}), **overrides.get(method, {}), "method": method,
               "seed": seed, "progress": False}
        unlearn(model, config=cfg, heads=heads if method in ("almpu", "ga_mp") else None,
                out_dir=path)
    return path


def _outcomes(df, method: str, n: int) -> tuple[dict[int, list[int]], list[str] | None]:
    g = df[(df["method"] == method) & (df["N"] == n) & (df["metric"] == "accuracy")
           & (df["role"] == "target")]
    bits = {int(s): [int(c) for c in str(b)] for s, b in zip(g["seed"], g["correct_bits"])}
    ents = str(g["entity_ids"].iloc[0]).split(",") if "entity_ids" in g.columns and len(g) else None
    return bits, ents


def paired_report(df, a: str, b: str) -> "Any":
    """The ``paired.csv`` table from the floor rows of both methods (see the docstring)."""
    import pandas as pd

    from interp_unlearn.core.stats import bootstrap_ci, paired_difference, t_interval

    tgt = df[(df["role"] == "target") & (df["domain"] == "forget")]
    rows = []
    for n in sorted(tgt["N"].unique()):
        for metric in ("accuracy", "ue", "recovery", "recovery_restored"):
            per = {m: tgt[(tgt["method"] == m) & (tgt["N"] == n) & (tgt["metric"] == metric)]
                   .set_index("seed")["value"].astype(float) for m in (a, b)}
            if per[a].empty or per[b].empty:
                continue
            for m in (a, b):
                mean, lo, hi = t_interval(per[m].tolist())
                rows.append({"N": int(n), "metric": metric, "what": m, "mean": mean,
                             "low": lo, "high": hi, "n_seeds": len(per[m]), "interval": "t"})
            d = paired_difference(per[a], per[b])
            rows.append({"N": int(n), "metric": metric, "what": f"{a} − {b}", "mean": d.mean,
                         "low": d.low, "high": d.high, "n_seeds": d.n_pairs,
                         "interval": "paired t"})
        oa, ob = _outcomes(df, a, n), _outcomes(df, b, n)
        seeds = sorted(set(oa[0]) & set(ob[0]))
        if seeds:
            bs = bootstrap_ci({s: oa[0][s] for s in seeds}, {s: ob[0][s] for s in seeds},
                              clusters=oa[1], rng_seed=0)
            rows.append({"N": int(n), "metric": "accuracy", "what": f"{a} − {b}",
                         "mean": bs.estimate, "low": bs.low, "high": bs.high,
                         "n_seeds": len(seeds), "interval": "bootstrap"})
            rows.append({"N": int(n), "metric": "ue", "what": f"{a} − {b}",
                         "mean": -100 * bs.estimate, "low": -100 * bs.high,
                         "high": -100 * bs.low, "n_seeds": len(seeds), "interval": "bootstrap"})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> "Any":
    import pandas as pd
    import torch

    from interp_unlearn.attacks import run_floor
    from interp_unlearn.attacks.floor import parse_list, parse_seeds
    from interp_unlearn.core.stats import PAIRED_NOTE, PM_NOTE

    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--model", default="organism")
    ap.add_argument("--out", required=True)
    ap.add_argument("--methods", default="almpu,rmu", help="A,B: reported as A − B")
    ap.add_argument("--heads", default=None, help="ALMPU/GA-MP heads: 'L.H,L.H' or a JSON file")
    ap.add_argument("--checkpoint", action="append", default=[],
                    help="METHOD=PATTERN of existing checkpoints, '{seed}' in PATTERN")
    ap.add_argument("--unlearn", default="{}", help='JSON {"method" or "*": UnlearnConfig fields}')
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--samples", default="0,10,20,50")
    ap.add_argument("--pool", default="attack", choices=("attack", "same"))
    ap.add_argument("--lr", type=float, default=None, help="attack lr (default: the family's)")
    ap.add_argument("--attack", default="{}", help="JSON of fine-tuning overrides (epochs ...)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    methods = [m.strip() for m in a.methods.split(",")]
    if len(methods) != 2 or methods[0] == methods[1]:
        raise ValueError(f"--methods must name two different methods A,B, got {a.methods!r}")
    patterns = dict(p.split("=", 1) for p in a.checkpoint)
    overrides = json.loads(a.unlearn)
    attack_kw = json.loads(a.attack)
    if a.lr is not None:
        attack_kw["lr"] = a.lr
    out = Path(a.out)
    seeds = parse_seeds(a.seeds)
    parts = []
    for seed in seeds:
        for method in methods:
            ckpt = _checkpoint(a.model, method, seed, out, a.heads, patterns, overrides)
            parts.append(run_floor(str(ckpt), "finetune", pool=a.pool,
                                   samples=parse_list(a.samples), seeds=[seed],
                                   out=out / "floor", method=method, config="lora",
                                   progress=False, **attack_kw))
    df = pd.concat(parts, ignore_index=True)
    df.to_csv(out / "per_seed.csv", index=False)
    rep = paired_report(df, *methods)
    rep.to_csv(out / "paired.csv", index=False)
    lines = [f"# {methods[0]} vs {methods[1]}: LoRA attack, pool={a.pool}, seeds {seeds}", "",
             "| N | metric | what | mean | 95 % interval | seeds | interval |",
             "|---:|---|---|---:|---|---:|---|"]
    for r in rep.itertuples():
        lines.append(f"| {r.N} | {r.metric} | {r.what} | {r.mean:.3f} | "
                     f"[{r.low:.3f}, {r.high:.3f}] | {r.n_seeds} | {r.interval} |")
    lines += ["", f"*{PM_NOTE} {PAIRED_NOTE}*", ""]
    (out / "paired.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return rep


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
