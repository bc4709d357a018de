"""Head localization by ablation attribution: a forget-specific alternative to phase 1.

The paper's phase 1 (:mod:`interp_unlearn.localize`, LoFiT's recipe) scores a head by how
much a learned scale ``A[l, h]`` on its output helps *lower* the forget-corpus loss. On the
organism, which has memorised its corpus, that recipe ranks the generally important heads
first (all of layer 0): ablating them hurts the retain domain as much as the forget
domain (``notes/localization_finding.md``). This module measures the causal quantity
directly instead:

for every head ``(l, h)``, replace its ``hook_z`` output by its mean (mean ablation,
:class:`~interp_unlearn.interventions.HeadAblation`) and record how much worse the model
gets on the forget domain, ``d_forget``, and on the retain domain, ``d_retain``, measured
by one of two signals:

``mcq`` (default)  the drop of the mean log-probability of the correct choice among the four
                   (cloze or letter scoring, the model's default) on *held-out* MCQs: for an
                   organism the questions of a pool other than its evaluation pool (forget:
                   ``practice``, or ``attack`` when ``practice`` is the evaluation pool;
                   retain: ``practice``, or ``eval``), so the heads are never chosen on
                   the questions they are later judged on. For a real model pass a dev
                   split of the MCQs.
``text``           the rise of the next-token cross-entropy on forget / retain corpus
                   documents (the data the paper's phase 1 uses). On the organism this is
                   dominated by template tokens, not facts, and ranks layer 0 first again.

The score is

``contrast`` (default)  ``d_forget - d_retain``: how much more the head matters for the
                        forget domain than for the retain domain;
``forget``              ``d_forget`` alone (heads that matter for the forget texts, with
                        no regard to the retain domain).

Cost: ``1 + n_layers * n_heads`` passes over the two question (or text) sets, no backward
(Zephyr-7B: 1,025 passes; use a GPU and a few hundred questions). Single-head ablations are not
additive; the causal check of the selected *set* is :func:`interp_unlearn.evaluation.causal.ablation_table`.

This is not the paper's method: it is offered beside it (``interp-unlearn localize
--score ablation``), measured side by side in ``notes/localization_finding.md``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from interp_unlearn.core.bridge import TransformerBridge, model_dims, to_bridge
from interp_unlearn.evaluation.causal import BridgeLM, prompt_head_means
from interp_unlearn.evaluation.scoring import EvalConfig, evaluate_mcq
from interp_unlearn.evaluation.scoring import pad_id as _pad_id
from interp_unlearn.interventions import HeadAblation, attach, mean_head_outputs
from interp_unlearn.interventions.attach import Head
from interp_unlearn.interventions.hf_hooks import head_hooks, o_proj
from interp_unlearn.localize import _collate, _tokenize, causal_lm_loss
from interp_unlearn.core.config import ConfigBase
from interp_unlearn.core.mcq import MCQ, N_CHOICES
from interp_unlearn.core.selection import write_heads
from interp_unlearn._compat import moved_getattr

__all__ = ["ATTRIBUTION_SCORES", "ATTRIBUTION_SIGNALS", "attribution_pools", "AttributionConfig", "AttributionResult", "head_attribution",
]

ATTRIBUTION_SCORES = ("contrast", "forget")
ATTRIBUTION_SIGNALS = ("mcq", "text")
CONFIG_FILE = "attribution_config.json"
TABLE_FILE = "attribution.csv"


@dataclass
class AttributionConfig(ConfigBase):
    """How heads are scored by ablation. Saved as ``attribution_config.json``.

    Attributes:
        signal: ``mcq`` (held-out questions) or ``text`` (corpus cross-entropy).
        score: ``contrast`` (``d_forget - d_retain``) or ``forget`` (``d_forget``).
        mode: ``mean`` (replace by the mean over all scored tokens) or ``zero``.
        scoring: MCQ scoring (``cloze``/``letter``); ``None``: the model's default.
        max_texts: Questions (``mcq``) or texts (``text``) per domain, a seeded sample;
            ``None``: all.
        batch_size: Texts or requests per forward pass.
        seq_len: Tokens kept per text (``text``).
        seed: Seeds the sample.
        top_k: Heads to select (default: 10 % of all heads, LoFiT's default).
    """

    signal: str = "mcq"
    score: str = "contrast"
    mode: str = "mean"
    scoring: str | None = None
    max_texts: int | None = 150
    batch_size: int = 16
    seq_len: int = 256
    seed: int = 0
    top_k: int | None = None

    def __post_init__(self) -> None:
        if self.signal not in ATTRIBUTION_SIGNALS:
            raise ValueError(f"signal must be one of {ATTRIBUTION_SIGNALS}, got {self.signal!r}")
        if self.score not in ATTRIBUTION_SCORES:
            raise ValueError(f"score must be one of {ATTRIBUTION_SCORES}, got {self.score!r}")
        if self.mode not in ("mean", "zero"):
            raise ValueError(f"mode must be 'mean' or 'zero', got {self.mode!r}")
        for name in ("batch_size", "seq_len"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name in ("max_texts", "top_k"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive int or None, got {v!r}")


@dataclass
class AttributionResult:
    """Per-head ablation effects (``table``: ``layer, head, d_forget, d_retain, score,
    rank``), the selected top-K and the config; ``scores`` is the ``layer, head, score,
    rank`` view the heatmap and :func:`~interp_unlearn.core.selection.select_heads` take."""

    table: pd.DataFrame
    selected: list[Head]
    config: AttributionConfig
    meta: dict[str, Any]

    @property
    def scores(self) -> pd.DataFrame:
        return self.table[["layer", "head", "score", "rank"]].copy()

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write ``attribution.csv``, ``scores.csv``, ``selected_heads.json`` and
        ``attribution_config.json``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        paths = {"table": d / TABLE_FILE, "scores": d / "scores.csv",
                 "heads": d / "selected_heads.json", "config": d / CONFIG_FILE}
        self.table.to_csv(paths["table"], index=False)
        self.scores.to_csv(paths["scores"], index=False)
        score_of = {(int(l), int(h)): float(s) for l, h, s in
                    zip(self.table["layer"], self.table["head"], self.table["score"])}
        dims = {"n_layers": int(self.table["layer"].max()) + 1,
                "n_heads": int(self.table["head"].max()) + 1}
        write_heads(paths["heads"], self.selected, strategy=f"ablation-{self.config.score}",
                    k=len(self.selected), scores=[score_of[h] for h in self.selected],
                    **dims, **self.meta)
        paths["config"].write_text(json.dumps(self.config.to_dict(), indent=1) + "\n")
        return paths


def _sample(items: Sequence[Any], n: int | None, seed: int, what: str) -> list[Any]:
    items = [t for t in items if not isinstance(t, str) or t.strip()]
    if not items:
        raise ValueError(f"{what} set is empty")
    if n is None or n >= len(items):
        return list(items)
    g = torch.Generator().manual_seed(seed)
    return [items[i] for i in sorted(torch.randperm(len(items), generator=g)[:n].tolist())]


def _text_batches(rows: list[list[int]], batch_size: int, pad: int
                  ) -> list[tuple[Int[Tensor, "b p"], Int[Tensor, "b p"], Int[Tensor, "b p"]]]:
    return [_collate(rows[i:i + batch_size], pad) for i in range(0, len(rows), batch_size)]


@torch.no_grad()
def _neg_ce(bridge: TransformerBridge, batches: list, device: torch.device) -> float:
    """Minus the token-weighted mean next-token CE over ``batches`` (higher = better)."""
    total, count = 0.0, 0
    for ids, mask, labels in batches:
        logits = bridge(ids.to(device), attention_mask=mask.to(device))
        n = int((labels[:, 1:] != -100).sum())
        total += float(causal_lm_loss(logits, labels.to(device))) * n
        count += n
    return -total / max(count, 1)


def _has_o_proj(model: Any) -> bool:
    """Whether ``model`` is a Llama-style decoder whose heads the HF hooks can reach."""
    try:
        o_proj(model, 0)
    except (TypeError, AttributeError, IndexError):
        return False
    return True


def _mcq_logp(lm: Any, tokenizer: Any, items: list[MCQ], cfg: EvalConfig) -> float:
    """Mean log-probability of the correct choice among the four (higher = better)."""
    df = evaluate_mcq(lm, tokenizer, items, cfg).per_question
    lp = torch.tensor(df[[f"logprob_{i}" for i in range(N_CHOICES)]].to_numpy(), dtype=torch.float64)
    answer = torch.tensor(df["answer"].to_numpy(), dtype=torch.long)
    return float(torch.log_softmax(lp, dim=1).gather(1, answer[:, None]).mean())


def attribution_pools(eval_pool: str) -> dict[str, str]:
    """Held-out MCQ pools for the ``mcq`` signal, given the model's evaluation pool."""
    return {"forget": "attack" if eval_pool == "practice" else "practice",
            "retain": "eval" if eval_pool == "practice" else "practice"}


def head_attribution(model: PreTrainedModel | TransformerBridge, tokenizer: Any,
                     forget: Sequence[str] | Sequence[MCQ], retain: Sequence[str] | Sequence[MCQ],
                     config: AttributionConfig | None = None, *, progress: bool = True,
                     model_name: str | None = None) -> AttributionResult:
    """Score every head by how much its ablation hurts the forget vs the retain domain.

    Args:
        model: HF causal LM (bridged) or a ``TransformerBridge``.
        tokenizer: Its tokenizer.
        forget, retain: MCQ items (``signal="mcq"``) or corpus texts (``signal="text"``).
        config: :class:`AttributionConfig` (defaults when ``None``; ``mcq`` needs
            ``config.scoring`` or takes ``cloze``).

    Returns:
        :class:`AttributionResult` (one table row per head; ``rank`` 1 = highest score).
    """
    config = AttributionConfig() if config is None else config
    bridge = model if isinstance(model, TransformerBridge) else to_bridge(model, tokenizer)
    dims = model_dims(bridge)
    n_total = dims["n_layers"] * dims["n_heads"]
    k = config.top_k if config.top_k is not None else max(1, int(0.1 * n_total))
    if k > n_total:
        raise ValueError(f"top_k={k} but the model has only {n_total} heads")
    device = next(bridge.parameters()).device
    sets = {"forget": _sample(forget, config.max_texts, config.seed, "forget"),
            "retain": _sample(retain, config.max_texts, config.seed, "retain")}
    hf = None  # the HF fast path (MCQ signal only)
    if config.signal == "mcq":
        for name, items in sets.items():
            if not all(isinstance(i, MCQ) for i in items):
                raise TypeError(f"signal='mcq' needs MCQ items for {name}; got "
                                f"{type(items[0]).__name__}")
        cfg = EvalConfig(scoring=config.scoring or "cloze", batch_size=config.batch_size)
        # an HF Llama-style model is scored (and ablated, at its o_proj input) directly:
        # the evaluator's KV-cache prefix sharing applies there, not through the bridge
        hf = model if isinstance(model, PreTrainedModel) and _has_o_proj(model) else None
        lm = hf if hf is not None else BridgeLM(bridge)
        measure = lambda name: _mcq_logp(lm, tokenizer, sets[name], cfg)  # noqa: E731
    else:
        pad = _pad_id(tokenizer)
        seq_len = min(config.seq_len, int(getattr(bridge.cfg, "n_ctx", 0) or config.seq_len))
        batches = {}
        for name, texts in sets.items():
            if not all(isinstance(t, str) for t in texts):
                raise TypeError(f"signal='text' needs strings for {name}")
            rows = _tokenize(tokenizer, texts, seq_len)
            if not rows:
                raise ValueError(f"no {name} text has two or more tokens")
            batches[name] = _text_batches(rows, config.batch_size, pad)
        measure = lambda name: _neg_ce(bridge, batches[name], device)  # noqa: E731
    t0 = time.time()
    was_training = bridge.training
    bridge.eval()
    try:
        means = None
        if config.mode == "mean":
            if config.signal == "mcq":
                means = prompt_head_means(bridge, tokenizer, tuple(sets.values()), cfg)
            else:
                means = mean_head_outputs(bridge, ((ids, mask) for b in batches.values()
                                                   for ids, mask, _ in b))
        base = {name: measure(name) for name in sets}
        rows_out = []
        heads = [(l, h) for l in range(dims["n_layers"]) for h in range(dims["n_heads"])]
        for layer, head in tqdm(heads, desc="ablation attribution", disable=not progress):
            ablation = HeadAblation([(layer, head)], config.mode, means)
            if config.signal == "mcq" and hf is not None:
                with head_hooks(hf, ablation.forward, layers=[layer]):
                    value = {name: measure(name) for name in sets}
            else:
                with attach(bridge, ablation):
                    value = {name: measure(name) for name in sets}
            rows_out.append({"layer": layer, "head": head,
                             "d_forget": base["forget"] - value["forget"],
                             "d_retain": base["retain"] - value["retain"]})
    finally:
        bridge.train(was_training)
    table = pd.DataFrame(rows_out)
    table["score"] = (table["d_forget"] - table["d_retain"] if config.score == "contrast"
                      else table["d_forget"])
    table["rank"] = table["score"].rank(ascending=False, method="first").astype(int)
    top = table.sort_values("rank").head(k)
    selected = sorted((int(l), int(h)) for l, h in zip(top["layer"], top["head"]))
    meta = {"model": model_name, "signal": config.signal, "score": config.score,
            "base_forget": base["forget"], "base_retain": base["retain"],
            "seconds": round(time.time() - t0, 2),
            "n_forget": len(sets["forget"]), "n_retain": len(sets["retain"])}
    return AttributionResult(table=table, selected=selected, config=config, meta=meta)




__getattr__ = moved_getattr(__name__)  # names that moved to the pipeline (issue 17)
