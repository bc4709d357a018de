"""Causal check of a head selection: does ablating the selected heads hurt the forget set
more than ablating as many random heads?

:func:`ablation_table` scores forget and retain MCQs (``EvalConfig(scoring="cloze")`` by
default) three ways: no ablation; the selected heads ablated; ``K = len(heads)`` random
heads ablated, ``n_random`` draws, reported as mean and sample standard deviation. If the
localization found heads that matter for the forget knowledge, the ``selected`` row's
forget accuracy should drop below the ``random`` row's, with a smaller retain drop.

Ablation (:class:`HeadAblation`):

* ``mode="mean"`` (default): each ablated head's output is replaced by its mean over the
  real tokens of all evaluated prompts (forget + retain, context + choice, un-ablated
  model; :func:`mean_head_outputs`), so the head stops carrying input-specific
  information without shifting the scale of the residual stream.
* ``mode="zero"``: replaced by zeros.

Random heads are drawn uniformly from the heads *not* in the selection (so the control
never re-ablates a selected head), draw ``i`` with ``random.Random(seed + i)``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel

from interp_unlearn.core.bridge import TransformerBridge, model_dims, to_bridge
from interp_unlearn.evaluation.scoring import (BridgeLM, EvalConfig, build_requests, evaluate_mcq,
                                               make_batches, resolve_config, resolve_max_length,
                                               tokenize_requests)
from interp_unlearn.evaluation.scoring import pad_id as _pad_id
from interp_unlearn.interventions import (HeadAblation, attach, mean_head_outputs,
                                          validate_heads)
from interp_unlearn.interventions.attach import Head
from interp_unlearn.core.mcq import MCQ, load_mcq

__all__ = ["ABLATION_COLUMNS", "BridgeLM", "ablation_table", "prompt_head_means"]

ABLATION_COLUMNS = ["condition", "k", "n_draws", "forget_acc", "forget_acc_sd", "retain_acc",
                    "retain_acc_sd", "forget_drop", "retain_drop", "heads"]



def _items(mcq: Sequence[MCQ] | str | Path, name: str) -> list[MCQ]:
    items = load_mcq(mcq) if isinstance(mcq, (str, Path)) else list(mcq)
    if not items:
        raise ValueError(f"{name} has no questions")
    return items


def prompt_head_means(bridge: TransformerBridge, tokenizer: Any, item_sets: Iterable[Sequence[MCQ]],
                      config: EvalConfig, batch_size: int = 32) -> torch.Tensor:
    """``[n_layers, n_heads, d_head]`` mean ``hook_z`` over the real tokens of every
    distinct request (context + continuation, as scored) of ``item_sets``."""
    config = resolve_config(config, bridge)
    pairs = [p for items in item_sets for p in build_requests(items, config.scoring, config.description)]
    max_length = config.max_length or resolve_max_length(bridge, tokenizer)
    requests = list(dict.fromkeys(tokenize_requests(tokenizer, pairs, max_length, config.add_bos_token)))
    batches = ((b.input_ids, b.attention_mask)
               for b in make_batches(requests, batch_size, _pad_id(tokenizer)))
    was_training = bridge.training
    bridge.eval()
    try:
        return mean_head_outputs(bridge, batches)
    finally:
        bridge.train(was_training)


def ablation_table(model_or_bridge: PreTrainedModel | TransformerBridge, tokenizer: Any,
                   forget_mcq: Sequence[MCQ] | str | Path, retain_mcq: Sequence[MCQ] | str | Path,
                   heads: Iterable[Sequence[int]], n_random: int = 5, seed: int = 0,
                   mode: str = "mean", config: EvalConfig | None = None,
                   progress: bool = False) -> pd.DataFrame:
    """Forget/retain MCQ accuracy with no ablation, the selected heads, and K random heads.

    Args:
        model_or_bridge: HF causal LM (bridged with :func:`to_bridge`) or a bridge.
        tokenizer: Its tokenizer.
        forget_mcq, retain_mcq: MCQ lists or JSONL paths.
        heads: The selected ``(layer, head)`` pairs (K of them).
        n_random: Draws of K random heads (0: no ``random`` row).
        seed: Seed of the random draws.
        mode: ``"mean"`` or ``"zero"`` ablation.
        config: Scoring (default ``EvalConfig(scoring="cloze")``).

    Returns:
        One row per condition (``none``, ``selected``, ``random``) with columns
        :data:`ABLATION_COLUMNS`: accuracies (``*_acc``; for ``random`` the mean over
        draws, ``*_acc_sd`` the sample sd, NaN elsewhere), ``*_drop`` = accuracy without
        ablation minus with, and the ablated ``heads`` (for ``random``, every draw).
    """
    config = EvalConfig(scoring="cloze") if config is None else config
    if mode not in ("mean", "zero"):
        raise ValueError(f"mode must be 'mean' or 'zero', got {mode!r}")
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 0:
        raise ValueError(f"n_random must be an int >= 0, got {n_random!r}")
    if isinstance(model_or_bridge, TransformerBridge):
        bridge = model_or_bridge
    elif isinstance(model_or_bridge, PreTrainedModel):
        bridge = to_bridge(model_or_bridge, tokenizer)
    else:
        raise TypeError("model_or_bridge must be a transformers PreTrainedModel or a "
                        f"TransformerBridge, got {type(model_or_bridge).__name__}")
    selected = sorted(validate_heads(heads, bridge))
    forget, retain = _items(forget_mcq, "forget_mcq"), _items(retain_mcq, "retain_mcq")
    dims = model_dims(bridge)
    all_heads = [(l, h) for l in range(dims["n_layers"]) for h in range(dims["n_heads"])]
    pool = [h for h in all_heads if h not in set(selected)]
    k = len(selected)
    if n_random and len(pool) < k:
        raise ValueError(f"cannot draw {k} random heads outside the selection: only {len(pool)} "
                         f"of {len(all_heads)} heads are not selected")
    means = prompt_head_means(bridge, tokenizer, (forget, retain), config) if mode == "mean" else None

    def accuracies(ablated: list[Head] | None) -> tuple[float, float]:
        ivs = [] if ablated is None else [HeadAblation(ablated, mode, means)]
        with attach(bridge, *ivs):
            f = evaluate_mcq(lm, tokenizer, forget, config, progress=progress).accuracy
            r = evaluate_mcq(lm, tokenizer, retain, config, progress=progress).accuracy
        return f, r

    lm = BridgeLM(bridge)
    was_training = bridge.training
    bridge.eval()
    draws: list[list[list[int]]] = []
    fs: list[float] = []
    rs: list[float] = []
    try:
        base_f, base_r = accuracies(None)
        sel_f, sel_r = accuracies(selected)
        for i in range(n_random):
            drawn = sorted(random.Random(seed + i).sample(pool, k))
            f, r = accuracies(drawn)
            draws.append([list(h) for h in drawn])
            fs.append(f)
            rs.append(r)
    finally:
        bridge.train(was_training)
    rows: list[dict[str, Any]] = [
        {"condition": "none", "k": 0, "n_draws": 1, "forget_acc": base_f, "forget_acc_sd": np.nan,
         "retain_acc": base_r, "retain_acc_sd": np.nan, "heads": []},
        {"condition": "selected", "k": k, "n_draws": 1, "forget_acc": sel_f,
         "forget_acc_sd": np.nan, "retain_acc": sel_r, "retain_acc_sd": np.nan,
         "heads": [list(h) for h in selected]},
    ]
    if n_random:
        sd = (lambda xs: float(np.std(xs, ddof=1)) if len(xs) > 1 else np.nan)
        rows.append({"condition": "random", "k": k, "n_draws": n_random,
                     "forget_acc": float(np.mean(fs)), "forget_acc_sd": sd(fs),
                     "retain_acc": float(np.mean(rs)), "retain_acc_sd": sd(rs), "heads": draws})
    df = pd.DataFrame(rows)
    df["forget_drop"] = base_f - df["forget_acc"]
    df["retain_drop"] = base_r - df["retain_acc"]
    return df[ABLATION_COLUMNS]
