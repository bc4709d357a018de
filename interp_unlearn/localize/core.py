"""One phase-1 run: train the head scales ``A`` and score every head (:func:`localize`)."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from interp_unlearn.core.bridge import TransformerBridge, hf_model_of, model_dims, to_bridge
from interp_unlearn.evaluation.scoring import pad_id as _pad_id
from interp_unlearn.evaluation.scoring import resolve_max_length
from interp_unlearn.interventions import HeadScale, attach
from interp_unlearn.interventions.attach import Head
from interp_unlearn.core.selection import select_heads, write_heads
from interp_unlearn.data.world import World
from interp_unlearn.localize.config import LocalizeConfig, resolve_objective
from interp_unlearn.localize.data import causal_lm_loss, collate_rows, training_rows

__all__ = ["CONFIG_FILE", "HEADS_FILE", "HISTORY_FILE", "SCORES_FILE", "LocalizationResult",
           "localize", "scores_frame"]

SCORES_FILE = "scores.csv"
HEADS_FILE = "selected_heads.json"
CONFIG_FILE = "localize_config.json"
HISTORY_FILE = "loss_history.csv"
HISTORY_COLUMNS = ["step", "epoch", "loss", "ce", "l1", "lr"]


def scores_frame(scores: Float[Tensor, "layer head"]) -> pd.DataFrame:
    """Tidy table ``layer, head, score, rank`` (rank 1 = highest score; ties by layer, head)."""
    scores = scores.detach().float().cpu()
    n_layers, n_heads = scores.shape
    df = pd.DataFrame({
        "layer": [l for l in range(n_layers) for _ in range(n_heads)],
        "head": [h for _ in range(n_layers) for h in range(n_heads)],
        "score": scores.reshape(-1).double().numpy(),
    })
    order = df.sort_values(["score", "layer", "head"], ascending=[False, True, True],
                           kind="mergesort").index
    df["rank"] = 0
    df.loc[order, "rank"] = range(1, len(df) + 1)
    return df


@dataclass
class LocalizationResult:
    """What :func:`localize` found.

    Attributes:
        scores: Tidy ``layer, head, score, rank`` (one row per head).
        config: The configuration used.
        history: Per step: ``step, epoch, loss, ce, l1, lr`` (``l1 = sum |A|`` before
            the step's update; ``loss = ce + l1_lambda * l1``).
        selected: Top-K heads, sorted by (layer, head).
        A: The trained scaling factors ``[n_layers, n_heads, d_head]`` (CPU).
        meta: Model name, corpus size, timings.
    """

    scores: pd.DataFrame
    config: LocalizeConfig
    history: pd.DataFrame
    selected: list[Head]
    A: Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return int(self.scores["layer"].max()) + 1

    @property
    def n_heads(self) -> int:
        return int(self.scores["head"].max()) + 1

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write ``scores.csv``, ``selected_heads.json``, ``localize_config.json`` and
        ``loss_history.csv`` into ``directory``; return their paths."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        paths = {"scores": d / SCORES_FILE, "heads": d / HEADS_FILE,
                 "config": d / CONFIG_FILE, "history": d / HISTORY_FILE}
        self.scores.to_csv(paths["scores"], index=False)
        score_of = {(int(l), int(h)): float(s) for l, h, s in
                    zip(self.scores["layer"], self.scores["head"], self.scores["score"])}
        write_heads(paths["heads"], self.selected, strategy="top-k", k=len(self.selected),
                    n_layers=self.n_layers, n_heads=self.n_heads,
                    scores=[score_of[h] for h in self.selected], **self.meta)
        self.config.save_json(paths["config"])
        self.history.to_csv(paths["history"], index=False)
        return paths

    @classmethod
    def load(cls, directory: str | Path) -> "LocalizationResult":
        """Read a directory written by :meth:`save` (``A`` is not saved)."""
        d = Path(directory)
        for name in (SCORES_FILE, HEADS_FILE, CONFIG_FILE):
            if not (d / name).is_file():
                raise FileNotFoundError(f"{d} has no {name}; not a localization output")
        scores = pd.read_csv(d / SCORES_FILE)
        heads_raw = json.loads((d / HEADS_FILE).read_text())
        history = (pd.read_csv(d / HISTORY_FILE) if (d / HISTORY_FILE).is_file()
                   else pd.DataFrame(columns=["step", "epoch", "loss", "ce", "l1", "lr"]))
        meta = {k: v for k, v in heads_raw.items()
                if k not in ("heads", "n_selected", "strategy", "k", "n_layers", "n_heads", "scores")}
        return cls(scores=scores, config=LocalizeConfig.load_json(d / CONFIG_FILE), history=history,
                   selected=[(int(l), int(h)) for l, h in heads_raw["heads"]], meta=meta)


def _batches(n: int, batch_size: int, steps: int, gen: torch.Generator):
    """``(epoch, indices)`` for ``steps`` steps: a fresh seeded permutation per epoch; the
    last batch of an epoch may be smaller (like a DataLoader without drop_last)."""
    step, epoch = 0, 0
    while True:
        perm = torch.randperm(n, generator=gen).tolist()
        for start in range(0, n, batch_size):
            if step == steps:
                return
            yield epoch, perm[start:start + batch_size]
            step += 1
        epoch += 1


def _check_corpus(corpus: Any) -> World | list[str]:
    """The corpus as a World or a list of texts (a TypeError for anything else)."""
    if isinstance(corpus, World):
        return corpus
    if isinstance(corpus, str):
        raise TypeError("corpus must be a World or a list of texts, not a single string")
    texts = list(corpus)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"corpus[{bad[0]}] is a {type(texts[bad[0]]).__name__}, expected str")
    return texts


def localize(model: PreTrainedModel | TransformerBridge, tokenizer: PreTrainedTokenizerBase,
             corpus: World | Sequence[str], config: LocalizeConfig | None = None, *,
             progress: bool = True, model_name: str | None = None,
             backend: str | None = None) -> LocalizationResult:
    """Train LoFiT scaling factors on ``corpus`` and score every head by ``||A[l, h]||_2``.

    One run with ``config.seed`` (``config.seeds`` is ignored here; see
    :func:`~interp_unlearn.localize.localize_seeds`).

    Args:
        model: An HF causal LM (wrapped with :func:`to_bridge`, weights shared) or a bridge.
        tokenizer: Its tokenizer.
        corpus: A :class:`World` (its forget documents or Q/A, by ``config.objective``) or
            a list of texts (documents, or Q/A lines for ``answer-ce``).
        config: :class:`LocalizeConfig` (LoFiT's defaults when ``None``).
        progress: Show a tqdm bar.
        model_name: Recorded in ``meta``.
        backend: Overrides ``config.backend`` (``tl`` | ``nnsight``); recorded in the config.

    The model's parameters are frozen (``requires_grad=False``) during training and their
    flags restored afterwards; no model gradient is ever stored and the weights are not
    changed. Deterministic: the same seed, model and corpus give identical scores (CPU).
    Every option (objective, ``top_k`` against the model's heads) is checked before the
    first step.

    Returns:
        :class:`LocalizationResult` with the top-K heads selected; its config records the
        resolved objective (never ``auto``).
    """
    config = LocalizeConfig() if config is None else config
    if not isinstance(config, LocalizeConfig):
        raise TypeError(f"config must be a LocalizeConfig, got {type(config).__name__}")
    if backend is not None:
        config = dataclasses.replace(config, backend=backend)
    corpus = _check_corpus(corpus)
    objective = resolve_objective(config.objective, isinstance(corpus, World))
    config = dataclasses.replace(config, objective=objective)
    if not isinstance(model, (TransformerBridge, PreTrainedModel)):
        raise TypeError(f"model must be a transformers PreTrainedModel or a TransformerBridge, "
                        f"got {type(model).__name__}")
    if config.backend == "nnsight":
        from interp_unlearn.interventions.nnsight_backend import NNsightHeads

        runner = NNsightHeads(hf_model_of(model) if isinstance(model, TransformerBridge)
                              else model)
        net, scaled, device = runner.module, runner.applied, runner.device
    else:
        net = model if isinstance(model, TransformerBridge) else to_bridge(model, tokenizer)
        scaled, device = _tl_scaled(net), next(net.parameters()).device
    dims = model_dims(net)
    k = config.resolved_top_k(dims["n_layers"] * dims["n_heads"])

    seq_len = min(config.seq_len, resolve_max_length(net, tokenizer))
    rows, source = training_rows(tokenizer, corpus, config, objective, seq_len)
    if not rows:
        raise ValueError(f"the corpus ({source}) has no text with a token to predict")
    steps = config.steps or config.epochs * math.ceil(len(rows) / config.batch_size)
    scale = HeadScale.for_model(dims, sigma=config.sigma_A, seed=config.seed).to(device)
    optimizer = torch.optim.AdamW([scale.A], lr=config.lr, betas=config.betas,
                                  eps=config.adam_eps, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: max(0.0, (steps - t) / steps))  # HF linear, no warm-up
    gen = torch.Generator().manual_seed(config.seed)
    pad_id = _pad_id(tokenizer)

    params = list(net.parameters())
    flags = [p.requires_grad for p in params]
    was_training = net.training
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    try:
        for p in params:
            p.requires_grad_(False)
        net.eval()
        bar = tqdm(_batches(len(rows), config.batch_size, steps, gen), total=steps,
                   disable=not progress, desc=f"Localizing heads (LoFiT, {objective})")
        with scaled(scale) as forward:
            ce_before = _mean_ce(forward, rows, pad_id, device)
            for step, (epoch, idx) in enumerate(bar):
                ids, mask, labels = (t.to(device) for t in collate_rows([rows[i] for i in idx],
                                                                         pad_id))
                logits = forward(ids, mask)
                ce = causal_lm_loss(logits, labels)
                l1 = scale.l1()
                loss = ce + config.l1_lambda * l1
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_([scale.A], config.max_grad_norm)
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                history.append({"step": step, "epoch": epoch, "loss": loss.item(), "ce": ce.item(),
                                "l1": l1.item(), "lr": lr})
                bar.set_postfix(ce=f"{history[-1]['ce']:.3f}", l1=f"{history[-1]['l1']:.3g}")
            ce_after = _mean_ce(forward, rows, pad_id, device)
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        net.train(was_training)

    scores = scores_frame(scale.scores())
    selected = select_heads(scores, "top-k", k=k)
    label = (getattr(getattr(net, "cfg", None), "model_name", None)
             or getattr(net, "name_or_path", ""))
    n_targets = int(sum(len(ids) - n for ids, n in rows))
    meta = {"model": model_name or str(label), "objective": objective,
            "corpus": source, "n_texts": len(rows), "n_tokens": int(sum(len(r) for r, _ in rows)),
            "n_targets": n_targets, "d_head": int(dims["d_head"]),
            "seq_len": seq_len, "steps": steps, "ce_before": ce_before, "ce_after": ce_after,
            "seconds": round(time.perf_counter() - start, 2)}
    return LocalizationResult(scores=scores, config=config,
                              history=pd.DataFrame(history, columns=HISTORY_COLUMNS),
                              selected=selected, A=scale.A.detach().cpu().clone(), meta=meta)


@torch.no_grad()
def _mean_ce(forward: Any, rows: list, pad_id: int, device: Any, batch_size: int = 32) -> float:
    """CE per target token over every row (the objective's tokens), one pass, no grad."""
    total, n = 0.0, 0
    for start in range(0, len(rows), batch_size):
        ids, mask, labels = (t.to(device) for t in collate_rows(rows[start:start + batch_size],
                                                                 pad_id))
        k = int((labels[:, 1:] != -100).sum())
        total += causal_lm_loss(forward(ids, mask), labels).item() * k
        n += k
    return total / max(n, 1)


def _tl_scaled(bridge: TransformerBridge):
    """``scaled(*interventions)``: attach them to ``bridge`` and yield its forward."""
    @contextmanager
    def scaled(*interventions: Any):
        with attach(bridge, *interventions):
            yield lambda ids, mask: bridge(ids, attention_mask=mask)
    return scaled
