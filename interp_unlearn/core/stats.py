"""Statistics for comparisons over seeds: t-intervals, paired differences, a clustered bootstrap.

The ground floor of the toolkit's reporting: it imports only numpy, pandas and the
standard library, so tables, notes and tests share one implementation.

One convention everywhere: **"±" is the half-width of the 95 % Student-t interval over
seeds** (:func:`t_interval`, ``mean ± t_{0.975, n-1} · sd / sqrt(n)``). Where a column
says *bootstrap*, the interval is the percentile interval of :func:`bootstrap_ci`.

* :func:`t_interval` -- mean and t-interval of values over seeds;
* :func:`paired_difference` -- the mean of per-seed differences ``A - B`` and its
  t-interval: seed ``s`` gives two methods the same unlearning data order, the same
  attack samples and the same LoRA initialisation, so per-seed differences remove that
  shared variation (Student's paired t);
* :func:`bootstrap_ci` -- a two-stage bootstrap over **seeds x questions**: resample
  seeds with replacement, and within each drawn seed resample questions *clustered by
  entity* (the organism asks five questions per pathogen; they are not independent),
  with a fixed RNG seed. Paired (``b`` given): A and B share every resample, so the
  interval is for the difference. The across-seed t-interval holds the question set
  fixed; the bootstrap also carries the item uncertainty of a 150-question pool.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["BootstrapResult", "PAIRED_NOTE", "PairedDifference", "PM_NOTE", "bootstrap_ci",
           "paired_difference", "ROLES", "summarize", "t_interval", "t_quantile"]

#: The one-line "±" convention printed under every table.
PM_NOTE = "± = half-width of the 95 % Student-t interval over seeds."
#: The line under a paired-difference table.
PAIRED_NOTE = ("Paired by seed: mean of per-seed differences A − B ± 95 % t-interval; "
               "bootstrap: 95 % percentile interval, seeds × questions clustered by entity, "
               "same resample for A and B.")


# ------------------------------------------------------------------ Student t


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
          + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln) * _betacf(b, a, 1.0 - x) / b


def _t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom (bisection on the
    CDF; |error| < 1e-10)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q!r}")
    if not df > 0:
        raise ValueError(f"df must be > 0, got {df!r}")
    if q == 0.5:
        return 0.0
    if q < 0.5:
        return -t_quantile(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < q:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def _finite(values: Any) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: Student-t interval ``mean ± t_{(1+c)/2, n-1} s / sqrt(n)``
    over the finite values (NaN / None dropped; NaN bounds with fewer than two)."""
    _check_confidence(confidence)
    vals = _finite(values)
    if not vals:
        return float("nan"), float("nan"), float("nan")
    n = len(vals)
    mean = sum(vals) / n
    if n < 2:
        return mean, float("nan"), float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = t_quantile((1 + confidence) / 2, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


# ----------------------------------------------------------- paired over seeds


@dataclass(frozen=True)
class PairedDifference:
    """Mean of per-seed differences ``A - B``, its sd and t-interval, and the seeds used."""

    mean: float
    low: float
    high: float
    sd: float
    n_pairs: int
    seeds: tuple

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seeds": list(self.seeds)}


def _by_seed(x: Any, name: str) -> pd.Series:
    if isinstance(x, pd.Series):
        s = x.astype(float)
    elif isinstance(x, Mapping):
        s = pd.Series({k: float(v) for k, v in x.items()}, dtype=float)
    else:
        raise TypeError(f"{name} must be a pandas Series or a mapping seed -> value (paired by "
                        f"seed), got {type(x).__name__}")
    if s.index.has_duplicates:
        raise ValueError(f"{name} has repeated seeds: {sorted(s.index[s.index.duplicated()])}")
    return s


def paired_difference(a: Mapping | pd.Series, b: Mapping | pd.Series,
                      confidence: float = 0.95) -> PairedDifference:
    """Paired comparison by seed: ``d_s = a[s] - b[s]`` over the seeds both have (a
    non-finite value drops its seed), then ``mean(d) ± t_{(1+c)/2, n-1} sd(d) / sqrt(n)``.

    ``a``, ``b``: per-seed values (``{seed: value}`` or a Series indexed by seed). Seeds in
    only one of them are not used (no pair); none in common is an error."""
    _check_confidence(confidence)
    sa, sb = _by_seed(a, "a"), _by_seed(b, "b")
    common = [s for s in sa.index if s in sb.index]
    if not common:
        raise ValueError(f"no seed in common: a has {sorted(sa.index)}, b has {sorted(sb.index)}")
    d = (sa[common] - sb[common]).dropna()
    seeds = tuple(d.index)
    mean, lo, hi = t_interval(d.tolist(), confidence)
    sd = float(d.std(ddof=1)) if len(d) > 1 else float("nan")
    return PairedDifference(mean, lo, hi, sd, len(d), seeds)


# ------------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class BootstrapResult:
    """Point estimate, percentile interval and what was resampled."""

    estimate: float
    low: float
    high: float
    n_seeds: int
    n_clusters: int
    n_questions: int
    n_boot: int
    rng_seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _matrix(x: Any, name: str) -> tuple[list, np.ndarray]:
    """``(seeds, values [seeds, questions])`` from ``{seed: per-question values}``."""
    if not isinstance(x, Mapping) or not x:
        raise ValueError(f"{name} must be a non-empty mapping seed -> per-question values")
    seeds = list(x)
    rows = [np.asarray(x[s], dtype=float).ravel() for s in seeds]
    widths = {len(r) for r in rows}
    if len(widths) != 1 or 0 in widths:
        raise ValueError(f"{name}: every seed must score the same non-zero number of "
                         f"questions, got {sorted(widths)}")
    m = np.vstack(rows)
    if not np.isfinite(m).all():
        raise ValueError(f"{name} has non-finite per-question values")
    return seeds, m


def bootstrap_ci(a: Mapping[Any, Sequence[float]], b: Mapping[Any, Sequence[float]] | None = None,
                 *, clusters: Sequence[Any] | None = None, n_boot: int = 2000,
                 confidence: float = 0.95, rng_seed: int = 0) -> BootstrapResult:
    """Two-stage (seeds x questions) percentile bootstrap of a mean, or of a paired mean
    difference.

    Args:
        a: ``{seed: per-question values}`` (e.g. 0/1 correctness), every seed scoring the
            same questions in the same order.
        b: the same for a second method (same seeds, same questions): the statistic is then
            the difference ``A - B`` and both share every resample (paired).
        clusters: one label per question (e.g. its entity); questions are resampled as
            whole clusters. ``None``: every question is its own cluster.
        n_boot: resamples (>= 100). confidence: interval level. rng_seed: fixes the
            resamples (``numpy.random.default_rng``), so the interval is reproducible.

    Statistic: the mean over seeds of the per-seed question mean. One resample draws
    ``n_seeds`` seeds with replacement and, for each drawn seed independently,
    ``n_clusters`` clusters with replacement; a seed's mean is the sum of its drawn
    clusters' values over their question count. The estimate is the statistic on the
    data as they are; the interval is the ``(1 ± c)/2`` percentiles of the resamples.
    """
    _check_confidence(confidence)
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 100:
        raise ValueError(f"n_boot must be an int >= 100, got {n_boot!r}")
    seeds, ma = _matrix(a, "a")
    if b is not None:
        seeds_b, mb = _matrix(b, "b")
        if set(seeds_b) != set(seeds):
            raise ValueError(f"a and b must have the same seeds (paired), got {sorted(seeds)} "
                             f"and {sorted(seeds_b)}")
        mb = mb[[seeds_b.index(s) for s in seeds]]
        if mb.shape != ma.shape:
            raise ValueError(f"a and b score different numbers of questions: {ma.shape[1]} vs "
                             f"{mb.shape[1]}")
        d = ma - mb
    else:
        d = ma
    n_s, n_q = d.shape
    if clusters is None:
        codes = np.arange(n_q)
    else:
        labels = list(clusters)
        if len(labels) != n_q:
            raise ValueError(f"clusters has {len(labels)} labels for {n_q} questions")
        codes = pd.factorize(pd.Series(labels, dtype=object))[0]
    n_c = int(codes.max()) + 1
    sums = np.zeros((n_s, n_c))
    for j in range(n_c):
        sums[:, j] = d[:, codes == j].sum(axis=1)
    counts = np.bincount(codes, minlength=n_c).astype(float)
    estimate = float(np.mean(d.mean(axis=1)))
    rng = np.random.default_rng(rng_seed)
    seed_idx = rng.integers(0, n_s, size=(n_boot, n_s))
    clus_idx = rng.integers(0, n_c, size=(n_boot, n_s, n_c))
    num = sums[seed_idx[:, :, None], clus_idx].sum(axis=2)
    den = counts[clus_idx].sum(axis=2)
    stats = (num / den).mean(axis=1)
    lo, hi = np.quantile(stats, [(1 - confidence) / 2, (1 + confidence) / 2])
    return BootstrapResult(estimate, float(lo), float(hi), n_s, n_c, n_q, n_boot, int(rng_seed))


ROLES = ("target", "twin", "original")


def summarize(df: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Mean and ``confidence`` t-interval over seeds for every (method, role, attack,
    data, pool, N, domain, metric): columns ``mean, sd, ci95_low, ci95_high, n_seeds``."""
    keys = [k for k in ("method", "role", "attack", "data", "pool", "N", "domain", "metric")
            if k in df.columns]
    rows = []
    for key, g in df.groupby(keys, sort=True, dropna=False):
        vals = g["value"].astype(float).tolist()
        mean, lo, hi = t_interval(vals, confidence)
        finite = [v for v in vals if not math.isnan(v)]
        sd = float(pd.Series(finite).std(ddof=1)) if len(finite) > 1 else float("nan")
        rows.append({**dict(zip(keys, key)), "mean": mean, "sd": sd, "ci95_low": lo,
                     "ci95_high": hi, "n_seeds": len(finite)})
    return pd.DataFrame(rows)
