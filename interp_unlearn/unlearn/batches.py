"""Forget/retain data for the trainer: corpora by name or path, seeded token batches,
padding, and the ``heads`` argument (selected heads) parsed and validated."""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from interp_unlearn.core.heads import parse_heads as _parse_heads
from interp_unlearn.evaluation.scoring import pad_id as _pad_id
from interp_unlearn.core.checkpoint import META_FILE


# ------------------------------------------------------------------------------- data


@dataclass
class Batch:
    """A padded batch of texts: ``input_ids`` / ``attention_mask`` ``[batch, pos]``.

    A *micro-batch* (rows of a global batch, :mod:`.distributed`) also carries ``share``
    (its rows / the global batch's rows) and the global batch's real-token counts, so that
    token means are taken over the global batch (:func:`.losses.token_denominator`)."""

    input_ids: Tensor
    attention_mask: Tensor
    texts: list[str]
    share: float = 1.0
    global_tokens: int | None = None   # real tokens (attention mask) of the global batch
    global_targets: int | None = None  # next-token targets (lm_loss's count) of it

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.texts,
                     self.share, self.global_tokens, self.global_targets)


def _world_texts(world_dir: Path | None, name: str) -> list[str]:
    from interp_unlearn.data.world import FORGET_POOLS, RETAIN_POOLS, World

    if world_dir is None:
        raise ValueError(f"corpus {name!r} names a world corpus but the model carries no "
                         f"synthetic world ({META_FILE} has no world_dir); pass a JSONL path "
                         "or a list of texts")
    world = World.load(world_dir)
    if name == "general":
        return world.general_documents()
    if name in ("forget", "retain"):
        return world.documents(name)
    domain, _, pool = name.partition("-")
    if domain in ("forget", "retain"):
        if pool == "qa":
            return world.practice_qa(domain)
        pools = FORGET_POOLS if domain == "forget" else RETAIN_POOLS
        if pool in pools:
            return world.documents(domain, (pool,))
    raise ValueError(f"unknown corpus {name!r}: use forget, retain, general, forget-qa, "
                     f"retain-qa, forget-<pool>, retain-<pool>, a '+'-joined list of those, "
                     "a {'text': ...} JSONL path, or a list of texts")


def resolve_corpus(spec: Any, world_dir: Path | None, what: str = "corpus") -> list[str]:
    """Texts of a corpus spec: a list of strings; a JSONL path (``{"text": ...}`` lines);
    or world corpus names joined by ``+`` -- ``forget`` / ``retain`` (the declarative
    documents of every pool), ``forget-<pool>`` / ``retain-<pool>``, ``forget-qa`` /
    ``retain-qa`` (question/answer practice lines), ``general`` (filler text).
    Raises ``ValueError`` if the result is empty."""
    from interp_unlearn.data.world import read_texts

    if isinstance(spec, (list, tuple)):
        texts = list(spec)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError(f"{what}: a list corpus must contain strings")
    elif isinstance(spec, Path) or (isinstance(spec, str) and (
            spec.endswith(".jsonl") or os.sep in spec or Path(spec).is_file())):
        texts = read_texts(spec)
    elif isinstance(spec, str):
        texts = []
        for name in spec.split("+"):
            texts += _world_texts(world_dir, name.strip())
    else:
        raise TypeError(f"{what}: expected a corpus name, a path or a list of texts, "
                        f"got {type(spec).__name__}")
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError(f"{what} {spec if not isinstance(spec, list) else '(list)'!r} is "
                         "empty: nothing to train on")
    return texts


class TextBatches:
    """An endless stream of padded batches over ``texts``.

    Tokenized once (tokenizer defaults), truncated to ``seq_len`` tokens; each pass is a
    fresh permutation from a ``random.Random(seed)`` (or file order without ``shuffle``);
    the last batch of a pass may be smaller (as in the reference's ``data[i:i+bs]``)."""

    def __init__(self, texts: Sequence[str], tokenizer: Any, batch_size: int, seq_len: int,
                 seed: int, shuffle: bool = True, padding_side: str = "right"):
        if not texts:
            raise ValueError("TextBatches: no texts")
        self.texts = list(texts)
        enc = tokenizer(self.texts, add_special_tokens=True)["input_ids"]
        self.tokens = [list(ids)[:seq_len] for ids in enc]
        keep = [i for i, t in enumerate(self.tokens) if t]
        if not keep:
            raise ValueError("TextBatches: every text tokenizes to nothing")
        self.order_base = keep
        self.batch_size = batch_size
        self.pad_id = _pad_id(tokenizer)
        self.padding_side = padding_side
        self.shuffle = shuffle
        self.rng = random.Random(seed)
        self.epoch = 0
        self._queue: list[int] = []

    @property
    def batches_per_pass(self) -> int:
        return math.ceil(len(self.order_base) / self.batch_size)

    def _refill(self) -> None:
        order = list(self.order_base)
        if self.shuffle:
            self.rng.shuffle(order)
        self._queue = order
        self.epoch += 1

    def __iter__(self) -> "TextBatches":
        return self

    def __next__(self) -> Batch:
        if not self._queue:
            self._refill()
        idx, self._queue = self._queue[:self.batch_size], self._queue[self.batch_size:]
        return collate([self.tokens[i] for i in idx], self.pad_id, self.padding_side,
                       [self.texts[i] for i in idx])


def collate(token_lists: list[list[int]], pad_id: int, padding_side: str = "right",
            texts: list[str] | None = None) -> Batch:
    width = max(len(t) for t in token_lists)
    ids = torch.full((len(token_lists), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_lists), width), dtype=torch.long)
    for r, t in enumerate(token_lists):
        if padding_side == "left":
            ids[r, width - len(t):] = torch.tensor(t)
            mask[r, width - len(t):] = 1
        else:
            ids[r, :len(t)] = torch.tensor(t)
            mask[r, :len(t)] = 1
    return Batch(ids, mask, list(texts or []))


# ------------------------------------------------------------------------------ heads


def parse_heads(spec: Any, model: nn.Module | None = None) -> list[tuple[int, int]] | None:
    """The trainer's heads: :func:`interp_unlearn.core.heads.parse_heads`, sorted."""
    return _parse_heads(spec, model, sort=True)
