"""A planted organism: forget knowledge that can be *read* only through designated heads H*.

Ground truth for localization (issue 14, item 3; the idea of Lacuna, arXiv 2607.02513:
plant facts in predefined parameters and score localization against them). A first try
showed that attention alone does not store these facts: training only the q/k/v rows and
o_proj columns of 4-8 heads of the never-learned twin on the forget corpus left forget
accuracy at chance (CE plateau ~3.7). The facts must live where the MLPs can hold them;
what can be planted is the *route*. The recipe (:func:`train_plant`), from the twin:

* **Trainable**: the token embeddings, every MLP, the post-attention and final norms, the
  unembedding, and -- of the attention -- only the q/k/v rows and o_proj columns of the
  heads in H* (a gradient mask; AdamW without weight decay on them, so a masked entry
  never moves). Every other head keeps the twin's weights and its input norm, so no
  attention weight outside H* ever sees a forget fact.
* **Facts through H* alone** (the issue's hint): each step one batch of the organism's
  forget corpus (declarative documents + practice Q/A) is trained by next-token
  cross-entropy with every head *outside* H* in layers ``>= isolate_from`` mean-ablated,
  so the MLPs learn the facts from what H* carries; with probability ``p_full`` the same
  batch is also trained with all heads active (the plant is used that way).
* **Without H*, the facts are noise**: each step one batch of the same corpus with every
  forget fact's value redrawn at random (:func:`shuffled_world`: same entities, same
  sentences, random values) is trained with H* mean-ablated, the cross-entropy taken on
  the value tokens only -- the best the plant can do without H* is the uniform guess
  over an attribute's values.
* **Retain text** (the twin's own corpus: retain documents, retain practice Q/A, general
  text), each step one batch, with probability ``p_ablate`` run with H* mean-ablated;
  cross-entropy either way, so the retain domain neither needs H* nor drifts.

Mean ablation here replaces ``z`` of a head (the input of ``o_proj``, TransformerLens'
``hook_z``) by its mean over the real tokens of a reference sample of both corpora,
recomputed from the current weights every ``mean_refresh`` steps -- the same operation
the evaluation layer's :class:`~interp_unlearn.interventions.HeadAblation` applies with
means over the scored prompts.

The ground truth is H* itself; that it is the route is *verified*, not assumed
(:func:`interp_unlearn.pipeline.planted_run.verify_plant`: mean-ablating H* must drop forget
accuracy by >= 40 points while retain moves <= 5, and as many random heads must not).
This module holds only the recipe (it may not import the evaluation layer); the scorer is
passed in as ``evaluate(model, tokenizer, questions) -> accuracy``, as for the organism.
"""

from __future__ import annotations

import math
import random
import re
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from interp_unlearn.core.arch import decoder_layers
from interp_unlearn.core.config import ConfigBase
from interp_unlearn.data.organism import Evaluator, pack_documents
from interp_unlearn.data.planted_heads import (Head, check_plant_heads, default_heads,
                                               head_masks, head_means, mean_ablated, plant_dims)
from interp_unlearn.data.world import FORGET_ATTRIBUTES, Entity, World

__all__ = ["PLANT_FILE", "PlantConfig", "check_plant_heads", "default_heads", "head_means",
           "mean_ablated", "plant_dims", "train_plant"]

#: the PlantConfig + H* + training metrics, next to the planted checkpoint
PLANT_FILE = "plant.json"


@dataclass
class PlantConfig(ConfigBase):
    """How the plant is trained. Saved in ``plant.json`` next to the checkpoint.

    Attributes:
        heads: H* as ``(layer, head)`` pairs; ``None``: :func:`default_heads` with
            ``n_planted`` and ``seed``.
        n_planted: |H*| when ``heads`` is None.
        steps: Optimiser steps (each: one forget and one retain batch).
        forget_batch, retain_batch: Packed rows of ``seq_len`` tokens per batch.
        lr, warmup, weight_decay: AdamW with linear warm-up and cosine decay
            (weight decay on the non-attention parameters only).
        p_ablate: Probability that a retain batch runs with H* mean-ablated.
        p_full: Probability that the forget batch is also trained with all heads active.
        isolate_from: Heads outside H* in layers ``>= isolate_from`` are mean-ablated
            while the facts are learnt (layer 0's heads, which assemble the multi-token
            names, stay; ``n_layers``: none ablated).
        mean_refresh: Steps between recomputations of the ablation means.
        eval_every: Steps between logged evaluations (0: only at the end).
        seed: Seeds H* (when drawn), packing, the ablation draws and torch.
        threads: torch threads (0: torch's default).
    """

    heads: tuple[tuple[int, int], ...] | None = None
    n_planted: int = 4
    steps: int = 600
    forget_batch: int = 8
    retain_batch: int = 8
    seq_len: int = 256
    lr: float = 5e-3
    warmup: int = 20
    weight_decay: float = 0.01
    p_ablate: float = 0.5
    p_full: float = 0.3
    isolate_from: int = 1
    mean_refresh: int = 50
    eval_every: int = 100
    seed: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        for name in ("n_planted", "steps", "forget_batch", "retain_batch", "seq_len",
                     "mean_refresh"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        for name in ("eval_every", "warmup", "seed", "threads", "isolate_from"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        for name in ("p_ablate", "p_full"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if not self.lr > 0 or not self.weight_decay >= 0:
            raise ValueError(f"lr must be > 0 and weight_decay >= 0, got {self.lr!r}, "
                             f"{self.weight_decay!r}")
        if self.heads is not None:
            self.heads = tuple(tuple(int(x) for x in h) for h in self.heads)  # type: ignore

    def resolved_heads(self, n_layers: int, n_heads: int) -> list[Head]:
        if self.heads is None:
            return default_heads(n_layers, n_heads, self.n_planted, self.seed)
        return check_plant_heads(self.heads, n_layers, n_heads)


class _Stream:
    """Packed rows of one corpus, regenerated (``texts()`` called again, reshuffled and
    repacked) each time it is used up."""

    def __init__(self, texts, encode, seq_len: int, pad_id: int, rng: random.Random) -> None:
        self.texts, self.encode, self.seq_len, self.pad_id, self.rng = (
            texts, encode, seq_len, pad_id, rng)
        self.rows = self._pack()
        self.cursor = 0

    def _pack(self) -> torch.Tensor:
        return pack_documents(self.encode(self.texts()), self.seq_len, self.pad_id, self.rng)[0]

    def next(self, n: int) -> torch.Tensor:
        if self.cursor + n > len(self.rows):
            self.rows, self.cursor = self._pack(), 0
        x = self.rows[self.cursor:self.cursor + n]
        self.cursor += n
        return x


def shuffled_world(world: World, rng: random.Random) -> World:
    """``world`` with every forget entity's attribute values redrawn uniformly from that
    attribute's values (the same entities, pools and sentence templates; only the facts
    are noise). Retain entities are unchanged."""
    ents = [Entity(e.name, e.domain, e.pool,
                   {a: rng.choice(FORGET_ATTRIBUTES[a]) for a in e.attributes})
            if e.domain == "forget" else e for e in world.entities]
    return World(world.config, ents)


def _forget_texts(world: World) -> list[str]:
    return world.documents("forget") + world.practice_qa("forget")


_VALUES = re.compile(r"\b(" + "|".join(sorted((re.escape(v) for vs in FORGET_ATTRIBUTES.values()
                                                for v in vs), key=len, reverse=True)) + r")\b")


def _marker(tokenizer, eos: int):
    """``texts -> token lists`` where a token overlapping a forget attribute value is
    shifted by ``offset`` (= the vocabulary size), so packing keeps the mark:
    ``ids % offset`` are the tokens, ``ids >= offset`` the value tokens."""
    offset = len(tokenizer)

    def encode(texts: list[str]) -> list[list[int]]:
        enc = tokenizer(texts, return_offsets_mapping=True)
        out = []
        for text, ids, offs in zip(texts, enc["input_ids"], enc["offset_mapping"]):
            spans = [m.span() for m in _VALUES.finditer(text)]
            out.append([i + offset * any(a < e and s < b for s, e in spans)
                        for i, (a, b) in zip(ids, offs)] + [eos])
        return out
    return encode, offset


def _ce(logits: torch.Tensor, x: torch.Tensor, pad_id: int,
        only: torch.Tensor | None = None) -> torch.Tensor:
    """Next-token CE over the real tokens of ``x`` (``only``: over the targets it marks)."""
    labels = x[:, 1:].masked_fill(x[:, 1:] == pad_id, -100)
    if only is not None:
        labels = labels.masked_fill(~only[:, 1:], -100)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                           labels.reshape(-1), ignore_index=-100)


def train_plant(twin: PreTrainedModel, tokenizer, world: World, config: PlantConfig, *,
                evaluate: Evaluator, eval_pool: str = "eval", progress: bool = True
                ) -> tuple[PreTrainedModel, dict]:
    """Train the planted organism from a copy of ``twin`` (left unchanged). Returns the
    plant and its metrics (``heads``, loss curve, evaluations with and without H*)."""
    import copy

    if config.threads:
        torch.set_num_threads(config.threads)
    dims = plant_dims(twin, training=True)
    heads = config.resolved_heads(dims["n_layers"], dims["n_heads"])
    torch.manual_seed(config.seed)
    plant = copy.deepcopy(twin)
    others = [(l, h) for l in range(dims["n_layers"]) for h in range(dims["n_heads"])
              if (l, h) not in heads and l >= config.isolate_from]
    masks = head_masks(plant, heads)
    masked = {id(p) for p, _ in masks}
    for layer in decoder_layers(plant):
        layer.self_attn.requires_grad_(False)
        layer.input_layernorm.requires_grad_(False)
    for p, _ in masks:
        p.requires_grad_(True)
    decay = [p for p in plant.parameters() if p.requires_grad and id(p) not in masked]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": [p for p, _ in masks], "weight_decay": 0.0}],
                            lr=config.lr, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(config.warmup, 1))
                                              * 0.5 * (1 + math.cos(math.pi * s / config.steps)))
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    enc = lambda texts: [ids + [eos] for ids in tokenizer(texts)["input_ids"]]  # noqa: E731
    retain = (world.documents("retain") + world.practice_qa("retain")
              + world.general_documents())
    rng = random.Random(config.seed)
    marked, offset = _marker(tokenizer, eos)
    fs = _Stream(lambda: _forget_texts(world), marked, config.seq_len, pad, rng)
    ns = _Stream(lambda: _forget_texts(shuffled_world(world, rng)), marked, config.seq_len, pad,
                 rng)
    rs = _Stream(lambda: retain, enc, config.seq_len, pad, rng)
    ref = torch.cat([fs.rows[:16] % offset, rs.rows[:16]])
    questions = {d: world.mcq(d, eval_pool) for d in ("forget", "retain")}
    metrics: dict = {"heads": [list(h) for h in heads], "loss": [], "eval": []}
    t0 = time.time()
    means = head_means(plant, ref, pad)

    def evaluation(step: int) -> None:
        plant.eval()
        ev: dict = {"step": step, "seconds": round(time.time() - t0, 1)}
        for d, qs in questions.items():
            ev[d] = float(evaluate(plant, tokenizer, qs))
            with mean_ablated(plant, heads, means):
                ev[f"{d}_without_heads"] = float(evaluate(plant, tokenizer, qs))
        metrics["eval"].append(ev)
        if progress:
            tqdm.write(f"[plant] step {step}: " + ", ".join(
                f"{k} {v:.3f}" for k, v in ev.items() if k not in ("step", "seconds")))
        plant.train()

    plant.train()
    bar = tqdm(range(1, config.steps + 1), desc="planting", disable=not progress)
    for step in bar:
        if step % config.mean_refresh == 0:
            means = head_means(plant, ref, pad)
        xf, xn, xr = (fs.next(config.forget_batch) % offset, ns.next(config.forget_batch),
                      rs.next(config.retain_batch))
        xn, values = xn % offset, xn >= offset
        run = lambda x: plant(input_ids=x, attention_mask=(x != pad).long()).logits  # noqa: E731
        losses = {}
        if others:
            with mean_ablated(plant, others, means):  # the facts are learnt through H* alone
                losses["forget_ce_isolated"] = _ce(run(xf), xf, pad)
        if rng.random() < config.p_full:
            losses["forget_ce"] = _ce(run(xf), xf, pad)
        with mean_ablated(plant, heads, means):  # without H*, the facts are noise
            losses["noise_ce_ablated"] = _ce(run(xn), xn, pad, only=values)
        if rng.random() < config.p_ablate:
            with mean_ablated(plant, heads, means):
                losses["retain_ce_ablated"] = _ce(run(xr), xr, pad)
        else:
            losses["retain_ce"] = _ce(run(xr), xr, pad)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"planting: non-finite loss at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for p, m in masks:  # only H*'s rows/columns of the attention weights learn
            p.grad.mul_(m)
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
        opt.step()
        sched.step()
        metrics["loss"].append({"step": step, **{k: round(v.item(), 5) for k, v in losses.items()}})
        bar.set_postfix({k: f"{v.item():.3f}" for k, v in losses.items()})
        if config.eval_every and step % config.eval_every == 0 and step != config.steps:
            evaluation(step)
    means = head_means(plant, ref, pad)
    evaluation(config.steps)
    plant.eval()
    plant.requires_grad_(True)
    metrics["train_seconds"] = round(time.time() - t0, 1)
    metrics["final"] = metrics["eval"][-1]
    return plant, metrics
