"""Choose attention heads from localization scores: ALMPU's top-K and the paper's ablations.

:func:`select_heads` takes the tidy scores table of :func:`interp_unlearn.localize.localize`
(columns ``layer, head, score``; one row for every head of the model) and returns a
sorted list of ``(layer, head)``. Strategies:

``top-k``
    ALMPU / LoFiT (adaptive): the ``k`` heads with the highest ``||A[l, h]||_2``. Without
    ``k``, ``fraction`` of the candidate heads; with neither, LoFiT's default of 10 % of
    the candidate heads (``int(0.1 * n)``, at least one). Ties are broken by (layer, head), ascending.
``random``
    Table 3's "Random p %": ``fraction`` (p / 100) of the candidate heads -- or exactly
    ``k`` heads -- drawn uniformly without replacement with ``random.Random(seed)``.
    ``round(fraction * n)`` heads, at least one.
``all``
    Table 3's "Full": every candidate head.
``early`` / ``middle`` / ``late`` / ``all-layers``
    Table 4's perturbation locations. The layers are cut into thirds at
    ``round(n_layers / 3)`` and ``round(2 * n_layers / 3)`` (half rounds up): early =
    ``[0, b1)``, middle = ``[b1, b2)``, late = ``[b2, n_layers)``; ``all-layers`` is every
    layer (Llama-2/Zephyr 32 layers: 0-10 / 11-20 / 21-31; 4 layers: 0 / 1-2 / 3). The
    paper does not say how many heads a location gets; here: at most ``k`` heads of the
    band, highest score first (``k`` or ``fraction`` as for ``top-k``), or **every head
    of the band** when neither is given. So ``all-layers`` equals ``all`` without ``k``
    and ``top-k`` with it.

``layers`` restricts the candidates of every strategy to those layers (Table 3 uses only
heads "from the same layer as RMU chooses"); a band is intersected with it.

:func:`load_heads` reads a ``selected_heads.json`` (written by :func:`write_heads`)
and validates every head against a model.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from interp_unlearn.core.heads import (Head, ModelLike, normalize_heads, parse_heads)

__all__ = [
    "BAND_STRATEGIES",
    "LOFIT_DEFAULT_FRACTION",
    "STRATEGIES",
    "layer_bands",
    "load_heads",
    "select_heads",
    "write_heads",
]

BAND_STRATEGIES = ("early", "middle", "late", "all-layers")
STRATEGIES = ("top-k", "random", "all") + BAND_STRATEGIES
#: LoFiT's default K: 10 % of all heads (``int(0.1 * n_heads * n_layers)``).
LOFIT_DEFAULT_FRACTION = 0.1


def layer_bands(n_layers: int) -> dict[str, list[int]]:
    """The layers of each Table 4 location (see the module docstring)."""
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
    b1 = math.floor(n_layers / 3 + 0.5)
    b2 = math.floor(2 * n_layers / 3 + 0.5)
    return {
        "early": list(range(0, b1)),
        "middle": list(range(b1, b2)),
        "late": list(range(b2, n_layers)),
        "all-layers": list(range(n_layers)),
    }


def _grid_of(scores_df: pd.DataFrame) -> tuple[int, int, pd.DataFrame]:
    """Validate the scores table; return ``(n_layers, n_heads, table)``."""
    if not isinstance(scores_df, pd.DataFrame):
        raise TypeError(f"scores_df must be a pandas DataFrame, got {type(scores_df).__name__}")
    missing = {"layer", "head", "score"} - set(scores_df.columns)
    if missing:
        raise ValueError(f"scores_df needs the columns layer, head, score; missing {sorted(missing)}")
    if scores_df.empty:
        raise ValueError("scores_df is empty")
    df = scores_df[["layer", "head", "score"]].copy()
    df["layer"] = df["layer"].astype(int)
    df["head"] = df["head"].astype(int)
    df["score"] = df["score"].astype(float)
    if df["score"].isna().any():
        raise ValueError("scores_df has NaN scores")
    n_layers, n_heads = int(df["layer"].max()) + 1, int(df["head"].max()) + 1
    if (df["layer"].min() < 0 or df["head"].min() < 0 or len(df) != n_layers * n_heads
            or df.duplicated(["layer", "head"]).any()):
        raise ValueError(
            f"scores_df must hold exactly one row per head of a full {n_layers} x {n_heads} "
            f"grid (layers 0..{n_layers - 1}, heads 0..{n_heads - 1}); got {len(df)} rows")
    return n_layers, n_heads, df


def _count(n: int, k: int | None, fraction: float | None,
           default_fraction: float | None) -> int | None:
    """How many heads: ``k``, else ``round(fraction * n)`` (>= 1), else the default."""
    if k is not None and fraction is not None:
        raise ValueError("give k or fraction, not both")
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        return k
    if fraction is None:
        if default_fraction is None:
            return None
        return max(1, int(default_fraction * n))
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r} (for p %, pass p / 100)")
    return max(1, math.floor(fraction * n + 0.5))


def select_heads(scores_df: pd.DataFrame, strategy: str, k: int | None = None,
                 fraction: float | None = None, layers: Iterable[int] | None = None,
                 seed: int = 0) -> list[Head]:
    """Select heads by ``strategy`` (see the module docstring); a sorted ``(layer, head)`` list.

    Args:
        scores_df: One row per head of the model, columns ``layer, head, score`` (extra
            columns are ignored).
        strategy: One of :data:`STRATEGIES`.
        k: Number of heads (``top-k``, ``random``) or the most per band (bands).
        fraction: Share of the candidate heads in ``(0, 1]`` instead of ``k``.
        layers: Only heads of these layers are candidates.
        seed: Seed of ``random``.

    Raises:
        ValueError: unknown strategy, bad ``k``/``fraction``/``layers``, ``k`` larger
            than the number of candidates (``top-k``, ``random``), or no candidates.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    n_layers, n_heads, df = _grid_of(scores_df)
    if layers is not None:
        wanted = sorted({int(l) for l in layers})
        bad = [l for l in wanted if not 0 <= l < n_layers]
        if bad:
            raise ValueError(f"layer {bad[0]} out of range: valid layers are 0..{n_layers - 1}")
        if not wanted:
            raise ValueError("layers is empty")
        df = df[df["layer"].isin(wanted)]
    if strategy in BAND_STRATEGIES:
        band = layer_bands(n_layers)[strategy]
        if not band:
            raise ValueError(f"the {strategy!r} band is empty for a {n_layers}-layer model "
                             f"(bands: {layer_bands(n_layers)})")
        df = df[df["layer"].isin(band)]
        if df.empty:
            raise ValueError(f"no heads left: the {strategy!r} band (layers {band}) and "
                             f"layers={sorted(set(layers or []))} do not overlap")
    # Highest score first; ties by (layer, head) ascending -- deterministic.
    ranked = df.sort_values(["score", "layer", "head"], ascending=[False, True, True],
                            kind="mergesort")
    candidates: list[Head] = [(int(l), int(h)) for l, h in zip(ranked["layer"], ranked["head"])]
    n = len(candidates)

    if strategy == "all":
        if k is not None or fraction is not None:
            raise ValueError("strategy 'all' takes no k or fraction")
        chosen = candidates
    elif strategy == "top-k":
        count = _count(n, k, fraction, LOFIT_DEFAULT_FRACTION)
        if count > n:
            raise ValueError(f"k={count} but only {n} candidate heads")
        chosen = candidates[:count]
    elif strategy == "random":
        count = _count(n, k, fraction, None)
        if count is None:
            raise ValueError("strategy 'random' needs k or fraction (e.g. fraction=0.25 for 25 %)")
        if count > n:
            raise ValueError(f"k={count} but only {n} candidate heads")
        pool = sorted(candidates)
        chosen = random.Random(seed).sample(pool, count)
    else:  # bands
        count = _count(n, k, fraction, None)
        chosen = candidates if count is None else candidates[:count]
    return sorted(chosen)


# ----------------------------------------------------------------------------- files


def write_heads(path: str | Path, heads: Iterable[Sequence[int]], **meta: Any) -> Path:
    """Write ``{"heads": [[layer, head], ...], **meta}`` as JSON (``selected_heads.json``)."""
    heads = normalize_heads(heads, allow_empty=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"heads": [[l, h] for l, h in heads], "n_selected": len(heads), **meta}
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def load_heads(path: str | Path, model: ModelLike) -> list[Head]:
    """Read heads from ``selected_heads.json`` (``{"heads": [[l, h], ...], ...}`` or a bare
    list) and validate them against ``model`` (an HF causal LM, a ``TransformerBridge`` or
    a dims dict): :func:`interp_unlearn.core.heads.parse_heads` on a file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, no ``heads`` list, or a head outside the model (the message
            names the file, the head and the valid range).
    """
    return parse_heads(Path(path), model)
