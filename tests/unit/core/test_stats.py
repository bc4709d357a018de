"""interp_unlearn.stats (oracles on hand-made numbers) and the paired table of a run."""

import math

import numpy as np
import pandas as pd
import pytest

from interp_unlearn.core.stats import (PAIRED_NOTE, PM_NOTE, bootstrap_ci, paired_difference,
                                       t_interval, t_quantile)

# t_{0.975, df} from printed tables
T975 = {1: 12.706205, 2: 4.302653, 4: 2.776445, 9: 2.262157, 29: 2.045230}


def test_t_quantile_matches_tables():
    for df, q in T975.items():
        assert t_quantile(0.975, df) == pytest.approx(q, abs=2e-6)
        assert t_quantile(0.025, df) == pytest.approx(-q, abs=2e-6)
    assert t_quantile(0.5, 3) == 0.0
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="q must be in"):
            t_quantile(bad, 3)
    with pytest.raises(ValueError, match="df must be"):
        t_quantile(0.9, 0)


def test_t_interval_drops_nan_and_needs_two_values():
    mean, lo, hi = t_interval([0.2, float("nan"), 0.4, None])
    assert mean == pytest.approx(0.3)
    assert hi - mean == pytest.approx(T975[1] * math.sqrt(0.02) / math.sqrt(2), rel=1e-6)
    assert math.isnan(t_interval([1.0])[1]) and math.isnan(t_interval([])[0])
    with pytest.raises(ValueError, match="confidence"):
        t_interval([1, 2], confidence=1.5)


def test_paired_difference_on_hand_made_numbers():
    a = {0: 0.50, 1: 0.60, 2: 0.70, 7: 0.9}  # seed 7 has no partner: not used
    b = pd.Series({0: 0.40, 1: 0.40, 2: 0.60})
    d = paired_difference(a, b)
    # differences 0.1, 0.2, 0.1: mean 0.1333, sd 0.057735
    assert d.n_pairs == 3 and d.seeds == (0, 1, 2)
    assert d.mean == pytest.approx(0.4 / 3)
    assert d.sd == pytest.approx(math.sqrt(1 / 300))
    half = T975[2] * math.sqrt(1 / 300) / math.sqrt(3)
    assert (d.low, d.high) == pytest.approx((0.4 / 3 - half, 0.4 / 3 + half))
    # pairing removes the shared seed effect: the unpaired interval of the same data is wider
    _, lo_a, hi_a = t_interval([0.5, 0.6, 0.7])
    assert d.high - d.low < hi_a - lo_a
    with pytest.raises(ValueError, match="no seed in common"):
        paired_difference({0: 1.0}, {1: 1.0})
    with pytest.raises(TypeError, match="paired by seed"):
        paired_difference([0.1, 0.2], [0.1, 0.2])


def _synthetic(rng_seed: int = 1, n_seeds: int = 5, n_ent: int = 30, per: int = 5,
               delta: float = 0.1):
    """Paired 0/1 outcomes: entity difficulty shared by A and B and across seeds, a seed
    effect, and A answering right with probability p + delta."""
    rng = np.random.default_rng(rng_seed)
    ease = np.repeat(rng.uniform(0.2, 0.6, n_ent), per)
    a, b = {}, {}
    true = []
    for s in range(n_seeds):
        p = np.clip(ease + rng.normal(0, 0.03), 0, 1)
        u = rng.uniform(size=p.shape)
        b[s] = (u < p).astype(float)
        a[s] = (u < np.clip(p + delta, 0, 1)).astype(float)
        true.append(float(np.mean(np.clip(p + delta, 0, 1) - p)))
    clusters = [f"e{i}" for i in range(n_ent) for _ in range(per)]
    return a, b, clusters, float(np.mean(true))


def test_bootstrap_contains_the_true_difference_and_is_deterministic():
    a, b, clusters, true = _synthetic()
    r = bootstrap_ci(a, b, clusters=clusters, rng_seed=0)
    assert r.low < true < r.high and r.low < r.estimate < r.high
    assert r.estimate == pytest.approx(np.mean([a[s].mean() - b[s].mean() for s in a]))
    assert (r.n_seeds, r.n_clusters, r.n_questions) == (5, 30, 150)
    assert bootstrap_ci(a, b, clusters=clusters, rng_seed=0) == r  # fixed RNG seed
    assert bootstrap_ci(a, b, clusters=clusters, rng_seed=1) != r
    # coverage over independent synthetic samples: the 95 % interval misses rarely
    hits = 0
    for k in range(20):
        a, b, clusters, true = _synthetic(rng_seed=100 + k)
        r = bootstrap_ci(a, b, clusters=clusters, n_boot=500, rng_seed=k)
        hits += r.low <= true <= r.high
    assert hits >= 16, hits


def test_bootstrap_resamples_whole_clusters():
    # one seed, cluster x = [0] and cluster y = [1, 1, 1]: resampling whole clusters
    # gives 0 (x, x), 3/4 (x, y) or 1 (y, y), each (x, x) with probability 1/4
    a = {0: [0.0, 1.0, 1.0, 1.0]}
    clustered = bootstrap_ci(a, clusters=["x", "y", "y", "y"], rng_seed=3)
    assert clustered.estimate == pytest.approx(0.75)
    assert (clustered.low, clustered.high) == (0.0, 1.0)
    # per question, a mean of 0 needs four draws of the single 0: probability 1/256
    free = bootstrap_ci(a, rng_seed=3)
    assert free.low > 0.0
    assert bootstrap_ci(a, clusters=[0, 1, 2, 3], rng_seed=3) == free  # singletons = None
    # the five questions of an entity answered alike: clustered, the interval is about
    # sqrt(5) times wider (30 independent units, not 150)
    a, b, clusters, _ = _synthetic(n_seeds=1, delta=0.0)
    ent = {0: np.repeat(a[0][::5], 5)}
    wide = bootstrap_ci(ent, clusters=clusters, rng_seed=0)
    narrow = bootstrap_ci(ent, rng_seed=0)
    assert 1.8 < (wide.high - wide.low) / (narrow.high - narrow.low) < 2.8


def test_bootstrap_bad_inputs():
    a = {0: [1.0, 0.0], 1: [1.0, 1.0]}
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(a, n_boot=10)
    with pytest.raises(ValueError, match="same seeds"):
        bootstrap_ci(a, {0: [1.0, 0.0]})
    with pytest.raises(ValueError, match="clusters has 3 labels for 2 questions"):
        bootstrap_ci(a, clusters=[0, 1, 2])
    with pytest.raises(ValueError, match="same non-zero number of questions"):
        bootstrap_ci({0: [1.0], 1: [1.0, 0.0]})
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(a, confidence=0.0)


# ------------------------------------------------------------- the reproduce tables


def _store(seeds=(0, 1, 2, 3, 4), n_q=10):
    """Store-shaped Table 1 rows of two methods; ALMPU answers two more questions right
    than RMU in every seed (ΔUE = -20 points exactly)."""
    rows = []
    for s in seeds:
        base = [int(i < 3 + s % 2) for i in range(n_q)]
        for method, extra in (("rmu", 0), ("almpu", 2)):
            bits = [1 if i < 3 + s % 2 + extra else 0 for i in range(n_q)]
            acc = sum(bits) / n_q
            common = {"kind": "attack", "table": "table1", "variant": method, "N": 5,
                      "seed": s, "domain": "forget", "role": "target"}
            rows.append({**common, "metric": "accuracy", "value": acc,
                         "correct_bits": "".join(map(str, bits)),
                         "entity_ids": ",".join(str(i // 2) for i in range(n_q))})
            rows.append({**common, "metric": "ue", "value": 100 * (1 - acc)})
        assert sum(base) >= 3
    return pd.DataFrame(rows)


def test_paired_table_and_notes():
    from interp_unlearn.pipeline.reproduce.paired import paired_table
    from interp_unlearn.pipeline.reproduce.tables import (_best, _wide, note, to_latex,
                                                          to_markdown)

    t = paired_table(_store(), ["rmu", "almpu"], [5])
    by = t.set_index("row")
    ue_t = by.loc["almpu − rmu: ΔUE (t)"]
    assert ue_t["mean"] == pytest.approx(-20.0) and ue_t["n_seeds"] == 5
    assert ue_t["ci95_low"] == pytest.approx(-20.0) and ue_t["interval"] == "t"  # sd 0
    acc_b = by.loc["almpu − rmu: Δforget acc (bootstrap)"]
    assert acc_b["mean"] == pytest.approx(0.2) and acc_b["interval"] == "bootstrap"
    ue_b = by.loc["almpu − rmu: ΔUE (bootstrap)"]
    assert (ue_b["ci95_low"], ue_b["ci95_high"]) == pytest.approx(
        (-100 * acc_b["ci95_high"], -100 * acc_b["ci95_low"]))
    md = to_markdown(t, "table1_paired")
    assert "-20.0" in md and "[" in md and md.rstrip().endswith(f"*{PAIRED_NOTE}*")
    assert PAIRED_NOTE.split(":")[0] in to_latex(t, "table1_paired")
    # every other table states the ± convention in the line under it
    one = pd.DataFrame({"row": ["rmu", "almpu"], "column": [5, 5], "mean": [60.0, 70.0],
                        "ci95_low": [55.0, 66.0], "ci95_high": [65.0, 74.0], "n_seeds": 3})
    assert note(one, "table1_finetune_forget") == PM_NOTE
    assert to_markdown(one, "table1_finetune_forget").rstrip().endswith(f"*{PM_NOTE}*")
    header, _, rows = _wide(one, "table1_finetune_forget")
    assert _best(one, header, rows) == {(1, 0)}  # 66 > 65: intervals apart -> bold
    overlap = one.assign(ci95_low=[55.0, 64.0])
    assert _best(overlap, header, rows) == set()  # overlapping intervals: no bold
    assert "**" not in to_markdown(overlap, "table1_finetune_forget").split("|---")[1]
    single = one.assign(ci95_low=np.nan, ci95_high=np.nan, n_seeds=1)
    assert _best(single, header, rows) == set()  # one seed: no interval, no bold
