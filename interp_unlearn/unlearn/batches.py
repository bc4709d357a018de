"""Forget/retain data for the trainer: corpora by name or path, seeded token batches,
padding, and the ``heads`` argument (selected heads) parsed and validated."""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from interp_unlearn.evaluation.scoring import pad_id as _pad_id
from interp_unlearn.data.organism import META_FILE


# ------------------------------------------------------------------------------- data


@dataclass
class Batch:
    """A padded batch of texts: ``input_ids`` / ``attention_mask`` ``[batch, pos]``."""

    input_ids: Tensor
    attention_mask: Tensor
    texts: list[str]

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.texts)


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
    """Normalise a heads spec to a sorted list of unique ``(layer, head)``.

    Accepts ``None``; a list of ``(layer, head)`` pairs or of ``{"layer", "head"}`` dicts;
    a string ``"2.1,3.0"`` (``l.h`` or ``l:h``, comma/space separated); a JSON file
    holding such a list or an object with one under ``heads`` (ALMPU phase 1's
    ``selected_heads.json``, :func:`interp_unlearn.selection.write_heads`) /
    ``selected_heads`` / ``selected`` / ``top_heads``; or a phase-1 output directory
    containing ``selected_heads.json``. With ``model`` given every head is checked against
    the model's layers and heads; a head it does not have raises ``ValueError``."""
    if spec is None:
        return None
    raw: Any = spec
    if isinstance(spec, (str, Path)) and Path(spec).is_dir():
        spec = Path(spec) / "selected_heads.json"
    if isinstance(spec, (str, Path)) and (isinstance(spec, Path) or spec.endswith(".json")
                                           or Path(spec).is_file()):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"heads file not found: {path}")
        raw = json.loads(path.read_text())
        if isinstance(raw, dict):
            for key in ("heads", "selected_heads", "selected", "top_heads"):
                if key in raw:
                    raw = raw[key]
                    break
            else:
                raise ValueError(f"{path}: expected a list of heads or an object with a "
                                 "'heads' / 'selected_heads' list")
    elif isinstance(spec, str):
        raw = [p for p in spec.replace(",", " ").split() if p]
    out = []
    for item in raw:
        if isinstance(item, str):
            sep = "." if "." in item else ":"
            try:
                l, h = (int(x) for x in item.split(sep))
            except ValueError:
                raise ValueError(f"cannot parse head {item!r}; write LAYER.HEAD, e.g. 2.1") from None
        elif isinstance(item, dict):
            l, h = item.get("layer"), item.get("head")
        else:
            try:
                l, h = item
            except (TypeError, ValueError):
                raise ValueError(f"cannot parse head {item!r}; expected (layer, head)") from None
        if isinstance(l, bool) or isinstance(h, bool) or not isinstance(l, int) \
                or not isinstance(h, int):
            raise ValueError(f"head {item!r}: layer and head must be ints")
        out.append((l, h))
    if not out:
        raise ValueError("the heads list is empty")
    if model is not None:
        cfg = model.config
        n_layers, n_heads = int(cfg.num_hidden_layers), int(cfg.num_attention_heads)
        bad = [(l, h) for l, h in out if not (0 <= l < n_layers and 0 <= h < n_heads)]
        if bad:
            raise ValueError(f"head(s) {bad} do not exist in this model: it has {n_layers} "
                             f"layers x {n_heads} heads (layers 0..{n_layers - 1}, heads "
                             f"0..{n_heads - 1})")
    return sorted(set(out))
