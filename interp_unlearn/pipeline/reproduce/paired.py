"""Paired method comparisons of a reproduce run (Table 1): ``A - B`` by seed, per N.

Seed ``s`` gives every method the same unlearning data order and the same attack samples
and LoRA initialisation, so methods are compared **paired by seed**:

* ``t`` rows -- the mean of the per-seed differences ``A - B`` with its 95 % Student-t
  interval (:func:`interp_unlearn.core.stats.paired_difference`);
* ``bootstrap`` rows -- the 95 % percentile interval of a bootstrap over seeds x
  questions, questions clustered by entity, the same resample for A and B
  (:func:`interp_unlearn.core.stats.bootstrap_ci`). It needs the per-question outcomes the
  floor stores on each ``accuracy`` row (``correct_bits``, ``entity_ids``); rows written
  before they existed give no bootstrap row.

Both are reported for UE (percentage points; ``UE = 100 (1 - accuracy)``, so
``ΔUE = -100 Δaccuracy``) and for forget accuracy (fraction).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from interp_unlearn.core.stats import bootstrap_ci, paired_difference

__all__ = ["PAIRS", "paired_table"]

#: (A, B) method pairs reported as A - B when both are in the run: the headline ALMPU vs
#: RMU, and GA-MP vs GA (the memory perturbation on top of the same objective).
PAIRS = (("almpu", "rmu"), ("ga_mp", "ga"))
N_BOOT = 2000
RNG_SEED = 0


def _per_seed(att: pd.DataFrame, method: str, n: int, metric: str) -> pd.Series:
    g = att[(att["variant"] == method) & (att["N"] == n) & (att["metric"] == metric)]
    g = g.drop_duplicates("seed", keep="last")
    return pd.Series(g["value"].astype(float).values, index=g["seed"].astype(int).values)


def _outcomes(att: pd.DataFrame, method: str, n: int) -> tuple[dict[int, list[int]], list[str]] | None:
    """``({seed: 0/1 per question}, entity ids)`` or None when not stored."""
    if "correct_bits" not in att.columns:
        return None
    g = att[(att["variant"] == method) & (att["N"] == n) & (att["metric"] == "accuracy")]
    g = g.drop_duplicates("seed", keep="last")
    if g.empty or g["correct_bits"].isna().any():
        return None
    bits = {int(s): [int(c) for c in str(b)] for s, b in zip(g["seed"], g["correct_bits"])}
    ents = None
    if "entity_ids" in g.columns and g["entity_ids"].notna().all():
        ents = str(g["entity_ids"].iloc[0]).split(",")
    return bits, ents


def _row(label: str, n: int, mean: float, lo: float, hi: float, k: int, interval: str) -> dict:
    return {"row": label, "column": int(n), "mean": mean, "ci95_low": lo, "ci95_high": hi,
            "n_seeds": k, "interval": interval}


def paired_table(df: pd.DataFrame, methods: Sequence[str], sizes: Sequence[int],
                 table: str = "table1") -> pd.DataFrame:
    """Long table (``row, column, mean, ci95_low, ci95_high, n_seeds, interval``) of every
    pair of :data:`PAIRS` present in ``methods``: rows ``"A − B: ΔUE (t)"``, ``"... ΔUE
    (bootstrap)"``, ``"... Δforget acc (t)"``, ``"... Δforget acc (bootstrap)"``."""
    att = df[(df["kind"] == "attack") & (df["table"] == table) & (df["domain"] == "forget")]
    out = []
    if att.empty:
        return pd.DataFrame(out)
    att = att.assign(N=att["N"].astype(int), seed=att["seed"].astype(int))
    for a, b in PAIRS:
        if a not in methods or b not in methods:
            continue
        name = f"{a} − {b}"
        rows: dict[str, list[dict]] = {k: [] for k in ("ue_t", "ue_b", "acc_t", "acc_b")}
        for n in sizes:
            for metric, key in (("ue", "ue_t"), ("accuracy", "acc_t")):
                sa, sb = _per_seed(att, a, n, metric), _per_seed(att, b, n, metric)
                if sa.empty or sb.empty or not set(sa.index) & set(sb.index):
                    continue
                d = paired_difference(sa, sb)
                label = "ΔUE (t)" if metric == "ue" else "Δforget acc (t)"
                rows[key].append(_row(f"{name}: {label}", n, d.mean, d.low, d.high, d.n_pairs,
                                      "t"))
            oa, ob = _outcomes(att, a, n), _outcomes(att, b, n)
            if oa is None or ob is None:
                continue
            seeds = sorted(set(oa[0]) & set(ob[0]))
            if not seeds or len({len(v) for v in (*oa[0].values(), *ob[0].values())}) != 1:
                continue
            bs = bootstrap_ci({s: oa[0][s] for s in seeds}, {s: ob[0][s] for s in seeds},
                              clusters=oa[1], n_boot=N_BOOT, rng_seed=RNG_SEED)
            rows["acc_b"].append(_row(f"{name}: Δforget acc (bootstrap)", n, bs.estimate,
                                      bs.low, bs.high, len(seeds), "bootstrap"))
            rows["ue_b"].append(_row(f"{name}: ΔUE (bootstrap)", n, -100 * bs.estimate,
                                     -100 * bs.high, -100 * bs.low, len(seeds), "bootstrap"))
        for key in ("ue_t", "ue_b", "acc_t", "acc_b"):
            out += rows[key]
    return pd.DataFrame(out)
