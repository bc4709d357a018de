"""ALMPU phase 1: find the attention heads most sensitive to the forget corpus (LoFiT's step 1).

Every head ``(l, h)`` gets a learnable vector ``A[l, h]`` in ``R^{d_head}`` that scales its
output, ``z <- (1 + A) * z`` at ``blocks.{l}.attn.hook_z`` (:class:`HeadScale`). With all
model weights frozen, ``A`` is trained on the forget corpus with

    loss = CE(next token | forget text) + lambda * sum_{l,h,i} |A[l, h, i]|

(paper eq. 3; the L1 term is LoFiT's un-normalised sum over every element of every head).
A head's score is ``S(l, h) = ||A[l, h]||_2`` and the top-K heads are selected
(:func:`interp_unlearn.selection.select_heads`).

Defaults (:class:`LocalizeConfig`) are LoFiT's, from ``protocols.md`` section 2 and its
trainer (``fc2869/lo-fit``: ``lofit_trainer.py`` + ``utils/trainers.py``, which run the
Hugging Face ``Trainer`` with its defaults):

* ``A ~ N(0, sigma_A = 1e-3)``; ``lambda = 1e-3``; ``lr = 5e-3`` (its scripts use
  lambda in {5e-4, 1e-3, 5e-3} and lr in {5e-4, 5e-3}); 5 epochs; batch 8.
* AdamW (betas 0.9/0.999, eps 1e-8, weight decay 0), linear decay of the learning rate to
  0 over the run without warm-up, gradient-norm clipping at 1.0 -- the HF ``Trainer``
  defaults LoFiT inherits.
* K: LoFiT's default is 10 % of all heads (``int(0.1 * n_layers * n_heads)``).

Deviations, all deliberate:

* LoFiT computes the CE only on the answer tokens of prompt/answer pairs; ALMPU's forget
  corpus is plain text (WMDP's bio forget corpus, here the world's forget documents),
  so the CE is the ordinary causal-LM loss over every non-padding token, mean over the
  tokens of the batch.
* ``seq_len`` (default 512, RMU's truncation of forget texts) truncates each text; it
  is lowered to the model's context length when that is shorter.
* ``seed`` defaults to 0 (LoFiT's scripts use 42).
* The forward pass runs through a TransformerLens ``TransformerBridge`` (eager attention;
  its logits equal HF eager exactly), not LoFiT's patched HF modules. ``backend="nnsight"``
  runs it through nnsight instead (:mod:`interp_unlearn.nnsight_backend`: the same scaling
  at the input of the attention output projection, for architectures TransformerLens
  does not cover); init, batches, optimiser and loss are shared, only the forward differs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .bridge import TransformerBridge, hf_model_of, model_dims, to_bridge
from .evaluate import pad_id as _pad_id
from .evaluate import resolve_max_length
from .interventions import HeadScale, attach
from .interventions.attach import Head
from .selection import LOFIT_DEFAULT_FRACTION, select_heads, write_heads
from .world import FORGET_POOLS, World

__all__ = [
    "CONFIG_FILE",
    "HEADS_FILE",
    "HISTORY_FILE",
    "SCORES_FILE",
    "LocalizationResult",
    "LocalizeConfig",
    "localize",
    "run_localize",
    "scores_frame",
]

BACKENDS = ("tl", "nnsight")
SCORES_FILE = "scores.csv"
HEADS_FILE = "selected_heads.json"
CONFIG_FILE = "localize_config.json"
HISTORY_FILE = "loss_history.csv"
FIGURE_STEM = "head_sensitivity"


@dataclass
class LocalizeConfig:
    """How phase 1 trains the scaling factors. Saved as ``localize_config.json``.

    Attributes:
        epochs: Passes over the corpus (LoFiT: 5). Ignored when ``steps`` is set.
        steps: Optimiser steps; ``None``: ``epochs * ceil(n_texts / batch_size)``.
        batch_size: Texts per step (LoFiT: 8).
        lr: Peak learning rate, decayed linearly to 0 (LoFiT: 5e-3).
        l1_lambda: Coefficient of ``sum |A|`` (LoFiT: 1e-3).
        sigma_A: Standard deviation of ``A``'s initialisation (LoFiT: 1e-3).
        seq_len: Tokens kept per text (truncation); lowered to the model's context.
        seed: Seeds ``A``'s initialisation and the order of the texts.
        weight_decay, betas, adam_eps: AdamW settings (HF Trainer defaults).
        max_grad_norm: Gradient-norm clipping (HF Trainer default 1.0); ``None``: off.
        top_k: Heads to select; ``None``: LoFiT's default 10 % of all heads (>= 1).
        forget_pools: Pools of the world's forget documents to train on when a
            :class:`World` is given; ``None``: all pools (eval, practice, attack).
        backend: ``tl`` (TransformerLens bridge, ``hook_z``) or ``nnsight`` (nnsight on
            the HF model, input of the attention output projection).
    """

    epochs: int = 5
    steps: int | None = None
    batch_size: int = 8
    lr: float = 5e-3
    l1_lambda: float = 1e-3
    sigma_A: float = 1e-3
    seq_len: int = 512
    seed: int = 0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    top_k: int | None = None
    forget_pools: tuple[str, ...] | None = None
    backend: str = "tl"

    def __post_init__(self) -> None:
        def positive_int(name: str, value: Any, allow_none: bool = False) -> None:
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, "
                                 f"got {value!r}")

        positive_int("epochs", self.epochs)
        positive_int("steps", self.steps, allow_none=True)
        positive_int("batch_size", self.batch_size)
        positive_int("seq_len", self.seq_len)
        positive_int("top_k", self.top_k, allow_none=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        for name in ("lr", "adam_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("l1_lambda", "sigma_A", "weight_decay"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}")
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.forget_pools is not None:
            pools = tuple(self.forget_pools)
            bad = [p for p in pools if p not in FORGET_POOLS]
            if bad or not pools:
                raise ValueError(f"forget_pools must be a non-empty subset of {FORGET_POOLS}, "
                                 f"got {self.forget_pools!r}")
            self.forget_pools = pools
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")

    # SAELens-style persistence
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        d["forget_pools"] = None if self.forget_pools is None else list(self.forget_pools)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LocalizeConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown LocalizeConfig fields {unknown}; valid: {sorted(names)}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        if d.get("forget_pools") is not None:
            d["forget_pools"] = tuple(d["forget_pools"])
        return cls(**d)

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load_json(cls, path: str | Path) -> "LocalizeConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def resolved_top_k(self, n_heads_total: int) -> int:
        """``top_k``, or LoFiT's default ``max(1, int(0.1 * n_heads_total))``."""
        k = self.top_k if self.top_k is not None else max(1, int(LOFIT_DEFAULT_FRACTION * n_heads_total))
        if k > n_heads_total:
            raise ValueError(f"top_k={k} but the model has only {n_heads_total} heads")
        return k


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


# --------------------------------------------------------------------------- data



def _tokenize(tokenizer: Any, texts: Sequence[str], seq_len: int) -> list[list[int]]:
    out = []
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=seq_len)["input_ids"]
        if len(ids) >= 2:  # one token predicts nothing
            out.append(list(ids))
    return out


def _collate(rows: list[list[int]], pad_id: int) -> tuple[Int[Tensor, "b p"], Int[Tensor, "b p"],
                                                          Int[Tensor, "b p"]]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


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


def causal_lm_loss(logits: Float[Tensor, "b p v"], labels: Int[Tensor, "b p"]) -> Float[Tensor, ""]:
    """Mean next-token cross-entropy over the labelled (non ``-100``) targets, in float32."""
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                           labels[:, 1:].reshape(-1), ignore_index=-100)


# ----------------------------------------------------------------------- training


def localize(model: PreTrainedModel | TransformerBridge, tokenizer: PreTrainedTokenizerBase,
             corpus: World | Sequence[str], config: LocalizeConfig | None = None, *,
             progress: bool = True, model_name: str | None = None,
             backend: str | None = None) -> LocalizationResult:
    """Train LoFiT scaling factors on ``corpus`` and score every head by ``||A[l, h]||_2``.

    Args:
        model: An HF causal LM (wrapped with :func:`to_bridge`, weights shared) or a bridge.
        tokenizer: Its tokenizer.
        corpus: A :class:`World` (its forget documents, ``config.forget_pools``; by
            default all of them) or a list of texts.
        config: :class:`LocalizeConfig` (LoFiT's defaults when ``None``).
        progress: Show a tqdm bar.
        model_name: Recorded in ``meta``.
        backend: Overrides ``config.backend`` (``tl`` | ``nnsight``); recorded in the config.

    The model's parameters are frozen (``requires_grad=False``) during training and their
    flags restored afterwards; no model gradient is ever stored and the weights are not
    changed. Deterministic: the same seed, model and corpus give identical scores (CPU).

    Returns:
        :class:`LocalizationResult` with the top-K heads (``config.top_k``) selected.
    """
    config = LocalizeConfig() if config is None else config
    if not isinstance(config, LocalizeConfig):
        raise TypeError(f"config must be a LocalizeConfig, got {type(config).__name__}")
    if backend is not None:
        config = dataclasses.replace(config, backend=backend)
    if isinstance(corpus, World):
        texts = corpus.documents("forget", config.forget_pools)
        source = f"world forget documents ({'all pools' if config.forget_pools is None else ', '.join(config.forget_pools)})"
    elif isinstance(corpus, str):
        raise TypeError("corpus must be a World or a list of texts, not a single string")
    else:
        texts = list(corpus)
        source = "texts"
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"corpus[{bad[0]}] is a {type(texts[bad[0]]).__name__}, expected str")
    if not isinstance(model, (TransformerBridge, PreTrainedModel)):
        raise TypeError(f"model must be a transformers PreTrainedModel or a TransformerBridge, "
                        f"got {type(model).__name__}")
    if config.backend == "nnsight":
        from .nnsight_backend import NNsightHeads

        runner = NNsightHeads(hf_model_of(model) if isinstance(model, TransformerBridge)
                              else model)
        net, scaled, device = runner.module, runner.applied, runner.device
    else:
        net = model if isinstance(model, TransformerBridge) else to_bridge(model, tokenizer)
        scaled, device = _tl_scaled(net), next(net.parameters()).device

    seq_len = min(config.seq_len, resolve_max_length(net, tokenizer))
    rows = _tokenize(tokenizer, texts, seq_len)
    if not rows:
        raise ValueError(f"the corpus ({len(texts)} texts) has no text of 2 or more tokens")
    steps = config.steps or config.epochs * math.ceil(len(rows) / config.batch_size)
    dims = model_dims(net)
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
                   disable=not progress, desc="Localizing heads (LoFiT)")
        with scaled(scale) as forward:
            for step, (epoch, idx) in enumerate(bar):
                ids, mask, labels = (t.to(device) for t in _collate([rows[i] for i in idx], pad_id))
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
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        net.train(was_training)

    scores = scores_frame(scale.scores())
    k = config.resolved_top_k(dims["n_layers"] * dims["n_heads"])
    selected = select_heads(scores, "top-k", k=k)
    label = (getattr(getattr(net, "cfg", None), "model_name", None)
             or getattr(net, "name_or_path", ""))
    meta = {"model": model_name or str(label),
            "corpus": source, "n_texts": len(rows), "n_tokens": int(sum(len(r) for r in rows)),
            "seq_len": seq_len, "steps": steps, "seconds": round(time.perf_counter() - start, 2)}
    return LocalizationResult(scores=scores, config=config, history=pd.DataFrame(history),
                              selected=selected, A=scale.A.detach().cpu().clone(), meta=meta)


def _tl_scaled(bridge: TransformerBridge):
    """``scaled(*interventions)``: attach them to ``bridge`` and yield its forward."""
    @contextmanager
    def scaled(*interventions: Any):
        with attach(bridge, *interventions):
            yield lambda ids, mask: bridge(ids, attention_mask=mask)
    return scaled


# ------------------------------------------------------------------------ pipeline


def run_localize(model_name: str, top_k: int | None, out_dir: str | Path,
                 config: LocalizeConfig | None = None, *, texts: Sequence[str] | None = None,
                 formats: Sequence[str] = ("html", "png", "svg"), device: str = "cpu",
                 progress: bool = True, backend: str | None = None,
                 dtype: str | None = None) -> LocalizationResult:
    """Load -> localize -> select top-K -> save -> heatmap export (what the CLI calls).

    Args:
        model_name: Built-in organism, local checkpoint directory or hub name
            (:func:`interp_unlearn.loading.load_model`).
        top_k: Heads to select; ``None``: ``config.top_k``, else LoFiT's 10 %.
        out_dir: Receives ``scores.csv``, ``selected_heads.json``,
            ``localize_config.json``, ``loss_history.csv`` and
            ``head_sensitivity.{html,png,svg}``.
        config: :class:`LocalizeConfig` (defaults when ``None``).
        texts: Forget texts; ``None``: the model's world's forget documents (organisms).
        formats: Heatmap formats for :func:`interp_unlearn.plotting.save_figure`. PNG/SVG
            need Chromium; the results are saved before the figure, so a failed static
            export (``StaticExportError``) loses nothing else.
        device: Where to run.
        backend: ``tl`` | ``nnsight``; overrides ``config.backend``.

    Returns:
        The :class:`LocalizationResult`; ``meta["figures"]`` lists the figure files.
    """
    from .loading import load_model
    from .plotting import save_figure, sensitivity_heatmap

    config = LocalizeConfig() if config is None else config
    if top_k is not None:
        config = dataclasses.replace(config, top_k=top_k)
    if backend is not None:
        config = dataclasses.replace(config, backend=backend)
    loaded = load_model(model_name, device=device, dtype=dtype)
    if texts is None:
        if loaded.world_dir is None:
            raise ValueError(f"{model_name} carries no synthetic world; pass the forget texts "
                             "(texts=...)")
        corpus: World | Sequence[str] = World.load(loaded.world_dir)
    else:
        corpus = list(texts)
    net = (loaded.model if config.backend == "nnsight"
           else to_bridge(loaded.model, loaded.tokenizer))
    result = localize(net, loaded.tokenizer, corpus, config, progress=progress,
                      model_name=model_name)
    out = Path(out_dir)
    result.save(out)
    fig = sensitivity_heatmap(
        result.scores, result.selected,
        title=f"{model_name}: head sensitivity ‖A[l,h]‖₂ / max (top-{len(result.selected)} starred)")
    paths = save_figure(fig, out / FIGURE_STEM, formats)
    result.meta["figures"] = {k: str(v) for k, v in paths.items()}
    return result
