"""One trainer shared by every unlearning method (RMU, ALMPU, GA, GA-MP, NPO, DPO).

The trainer owns everything that is not the method's loss:

* **config** -- :class:`UnlearnConfig`. Generic fields left ``None`` are filled, in this
  order, from the trainer's base defaults, the method's ``defaults``, the chosen preset
  (``"zephyr"``, ``"organism"``, ...; organisms get their method's ``organism`` preset
  automatically) and finally the caller's explicit values. The resolved config is saved as
  ``unlearn_config.json``.
* **data** -- forget / retain corpora: a world corpus name (``forget``, ``retain``,
  ``general``, ``forget-qa``, ``forget-eval``, ``retain+general`` ...), a ``{"text": ...}``
  JSONL path, or a list of strings. Texts are tokenized once (tokenizer defaults, no
  extra special tokens), truncated to ``seq_len`` tokens, shuffled by a seeded generator
  (one per stream) and padded per batch (left padding for RMU/ALMPU, as the reference;
  right for the likelihood methods). When ``max_num_batches`` exceeds one pass the stream
  reshuffles and cycles (the reference makes one pass over ``min(max_num_batches, corpus
  batches)``; on WMDP's corpus that is the same thing).
* **optimisation** -- AdamW over the method's :meth:`~.registry.UnlearnMethod.trainable`
  parameters (all others get ``requires_grad=False`` for the run and are restored
  afterwards), no schedule, optional clipping (off by default).
* **safety** -- every loss term is checked before the backward pass, the gradients after
  it; a NaN/inf stops the run with :class:`NonFiniteLossError` naming the step and the
  term, after saving the weights from *before* that step (the last good ones).
* **evaluation** -- forget/retain MCQ accuracy (:func:`~interp_unlearn.evaluate.evaluate_mcq`,
  the model's default scoring and pool) before, every ``eval_every`` steps, and after;
  everything goes to ``metrics.jsonl`` (one JSON object per line).
* **checkpoint** -- ``out_dir`` becomes an HF checkpoint directory (``save_pretrained``
  safetensors + tokenizer + ``interp_unlearn.json`` copied from the input model with
  ``world_dir`` made absolute and an ``unlearn`` record added), so
  ``load_model(out_dir)`` and ``interp-unlearn evaluate --model out_dir`` work on it.

Entry points: :func:`unlearn` (Python) and :func:`run_unlearn` / :func:`add_unlearn_arguments`
(command line).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..evaluate import EvalConfig, evaluate_mcq
from ..loading import LoadedModel, load_model
from ..organism import META_FILE
from .registry import UnlearnMethod, available_methods, get_method

__all__ = [
    "Batch",
    "MethodContext",
    "NonFiniteLossError",
    "TextBatches",
    "Trainer",
    "UnlearnConfig",
    "UnlearnResult",
    "add_unlearn_arguments",
    "decoder_layers",
    "lm_loss",
    "masked_mse",
    "parse_heads",
    "resolve_corpus",
    "run_unlearn",
    "sequence_logprob",
    "token_logprobs",
    "unlearn",
]

CONFIG_FILE = "unlearn_config.json"
METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "unlearn_result.json"

#: Generic defaults under every method's own ``defaults``.
BASE_DEFAULTS: dict[str, Any] = {
    "max_num_batches": 100,
    "batch_size": 4,
    "lr": 1e-5,
    "seq_len": 512,
    "seed": 42,
    "forget_corpus": "forget",
    "retain_corpus": "retain",
    "shuffle": True,
    "padding_side": "right",
    "adam_eps": 1e-8,
    "weight_decay": 0.0,
    "betas": (0.9, 0.999),
    "grad_clip": None,
}


# ----------------------------------------------------------------------------- config


@dataclass
class UnlearnConfig:
    """Everything a run needs. ``None`` means "the method's / preset's default"; the
    resolved config (no ``None`` left where a default exists) is what gets saved.

    Attributes:
        method: registry name (``rmu``, ``almpu``, ``ga``, ``ga_mp``, ``npo``, ``dpo``).
        preset: a preset of the method (``zephyr``, ``organism``, ...). ``None``: the
            ``organism`` preset for organism checkpoints, the method defaults otherwise.
        max_num_batches: training steps (one forget batch + one retain batch each).
        batch_size, lr, seq_len (max tokens per text), seed.
        eval_every: evaluate every this many steps (0: only before and after).
        forget_corpus, retain_corpus: corpus spec (see :func:`resolve_corpus`).
        shuffle: seeded shuffle of the corpora (False: file order, like the reference).
        padding_side: ``left`` (RMU reference) or ``right``.
        adam_eps, weight_decay, betas, grad_clip: AdamW settings; ``grad_clip`` None = off.
        forget_mcq, retain_mcq: MCQ JSONL files to score (default: the model's own pools).
        eval_scoring: ``cloze`` / ``letter`` (default: the model's own).
        eval_batch_size: questions per forward pass in evaluation.
        params: method-specific parameters (see the method's ``Params`` dataclass).
        threads: ``torch.set_num_threads`` for the run (0: leave as is).
        progress: tqdm progress bar.
        check_grads: check gradients for NaN/inf before every optimiser step.
        evaluate: score the MCQs before/after (False: accuracies are None; for speed).
    """

    method: str = "rmu"
    preset: str | None = None
    max_num_batches: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seq_len: int | None = None
    seed: int | None = None
    eval_every: int = 0
    forget_corpus: Any = None
    retain_corpus: Any = None
    shuffle: bool | None = None
    padding_side: str | None = None
    adam_eps: float | None = None
    weight_decay: float | None = None
    betas: tuple[float, float] | None = None
    grad_clip: float | None = None
    forget_mcq: str | None = None
    retain_mcq: str | None = None
    eval_scoring: str | None = None
    eval_batch_size: int = 32
    params: dict[str, Any] = field(default_factory=dict)
    threads: int = 0
    progress: bool = True
    check_grads: bool = True
    evaluate: bool = True

    @property
    def steps(self) -> int | None:
        return self.max_num_batches

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("forget_corpus", "retain_corpus"):
            v = d[k]
            if isinstance(v, (list, tuple)):
                d[k] = f"<{len(v)} texts given in memory>"
            elif isinstance(v, Path):
                d[k] = str(v)
        if d["betas"] is not None:
            d["betas"] = list(d["betas"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UnlearnConfig":
        valid = {f.name for f in fields(cls)}
        bad = sorted(set(d) - valid)
        if bad:
            raise ValueError(f"unknown UnlearnConfig field(s) {bad}; valid: {sorted(valid)}")
        d = dict(d)
        if d.get("betas") is not None:
            d["betas"] = tuple(d["betas"])
        return cls(**d)


_GENERIC_KEYS = tuple(BASE_DEFAULTS)


def _default_preset(cls: type[UnlearnMethod], lm: LoadedModel) -> tuple[str | None, dict[str, Any]]:
    """The model family's preset and parameter overrides (:mod:`interp_unlearn.presets`)."""
    from ..presets import method_preset
    return method_preset(cls.name, lm)


def resolve_config(config: UnlearnConfig, lm: LoadedModel) -> tuple[UnlearnConfig, Any]:
    """Fill the ``None`` fields (base < method defaults < preset < explicit) and build the
    method's ``Params``. Returns ``(resolved config, params)``."""
    cls = get_method(config.method)
    preset, family_params = ((config.preset, {}) if config.preset is not None
                             else _default_preset(cls, lm))
    if preset is not None and preset not in cls.presets:
        raise ValueError(f"unknown preset {preset!r} for method {cls.name!r}; "
                         f"valid: {sorted(cls.presets)}")
    pre = cls.presets.get(preset, {}) if preset else {}
    bad = sorted(set(pre.get("config", {})) - set(_GENERIC_KEYS))
    if bad:  # a bug in a preset table, not a user error
        raise AssertionError(f"preset {preset!r} of {cls.name!r} sets unknown fields {bad}")
    values = {**BASE_DEFAULTS, **cls.defaults, **pre.get("config", {})}
    for k in _GENERIC_KEYS:
        v = getattr(config, k)
        if v is not None:
            values[k] = v
    params_dict = {**pre.get("params", {}), **family_params, **(config.params or {})}
    params = cls.make_params(params_dict)
    resolved = copy.copy(config)
    for k, v in values.items():
        setattr(resolved, k, v)
    resolved.method = cls.name
    resolved.preset = preset
    resolved.betas = tuple(resolved.betas)
    resolved.params = asdict(params)
    _validate(resolved)
    return resolved, params


def _validate(c: UnlearnConfig) -> None:
    for k in ("max_num_batches", "batch_size", "seq_len"):
        v = getattr(c, k)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{k} must be a positive int, got {v!r}")
    if not isinstance(c.eval_every, int) or c.eval_every < 0:
        raise ValueError(f"eval_every must be an int >= 0, got {c.eval_every!r}")
    if not (isinstance(c.lr, (int, float)) and c.lr > 0 and math.isfinite(c.lr)):
        raise ValueError(f"lr must be a positive number, got {c.lr!r}")
    if c.padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {c.padding_side!r}")
    if c.grad_clip is not None and not c.grad_clip > 0:
        raise ValueError(f"grad_clip must be None or > 0, got {c.grad_clip!r}")


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
    from ..world import FORGET_POOLS, RETAIN_POOLS, World

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
    from ..world import read_texts

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


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        v = getattr(tokenizer, attr, None)
        if v is not None:
            return int(v)
    return 0


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


# ---------------------------------------------------------------------- loss helpers


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """``model.model.layers`` of an HF decoder-only LM (Llama, Mistral/Zephyr, Qwen ...)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{type(model).__name__} has no model.layers; unlearning methods "
                        "expect an HF decoder-only LM (LlamaForCausalLM and relatives)")
    return layers


def masked_mse(a: Tensor, b: Tensor, mask: Tensor | None = None) -> Tensor:
    """``F.mse_loss`` (mean over batch x pos x features); with ``mask`` [batch, pos] the
    mean runs over the unmasked positions only."""
    if mask is None:
        return F.mse_loss(a, b.expand_as(a))
    m = mask.to(a.dtype)[..., None]
    return ((a - b) ** 2 * m).sum() / (m.sum() * a.shape[-1]).clamp_min(1)


def token_logprobs(logits: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
    """``(log p(token_{t+1} | ..t), valid)`` both ``[batch, pos-1]`` (fp32)."""
    ids = batch.input_ids
    lp = -F.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
    valid = (batch.attention_mask[:, 1:] * batch.attention_mask[:, :-1]).bool()
    return lp, valid


def lm_loss(model: nn.Module, batch: Batch) -> Tensor:
    """Mean next-token cross-entropy over the real tokens of ``batch``."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                   use_cache=False).logits
    lp, valid = token_logprobs(logits, batch)
    return -(lp * valid).sum() / valid.sum().clamp_min(1)


def sequence_logprob(logits: Tensor, batch: Batch, weights: Tensor | None = None) -> Tensor:
    """Summed log-likelihood of each row's tokens (after the first), ``[batch]``;
    ``weights`` [batch, pos-1] restricts the sum (e.g. to a response)."""
    lp, valid = token_logprobs(logits, batch)
    w = valid.float() if weights is None else valid.float() * weights
    return (lp * w).sum(-1)


# --------------------------------------------------------------------------- context


@dataclass
class MethodContext:
    """What a method gets from the trainer."""

    model: nn.Module
    tokenizer: Any
    config: UnlearnConfig
    params: Any
    heads: list[tuple[int, int]] | None
    reference: nn.Module | None
    device: torch.device
    world_dir: Path | None


class NonFiniteLossError(FloatingPointError):
    """A loss term (or the gradient) became NaN/inf. ``step`` and ``term`` name it;
    ``checkpoint`` is where the last good weights (from before that step) were saved."""

    def __init__(self, method: str, step: int, term: str, value: float,
                 checkpoint: Path | None):
        self.method, self.step, self.term, self.value = method, step, term, value
        self.checkpoint = checkpoint
        where = (f"; the last good weights (before step {step}) are saved at {checkpoint}"
                 if checkpoint else "")
        super().__init__(f"unlearning ({method}) stopped at step {step}: loss term "
                         f"{term!r} is {value}{where}")


@dataclass
class UnlearnResult:
    """What :func:`unlearn` returns (also written as ``unlearn_result.json``)."""

    method: str
    out_dir: Path
    checkpoint: Path
    config_path: Path
    metrics_path: Path
    before: dict[str, float | None]
    after: dict[str, float | None]
    steps: int
    seconds: float
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "out_dir": str(self.out_dir),
                "checkpoint": str(self.checkpoint), "config_path": str(self.config_path),
                "metrics_path": str(self.metrics_path), "before": self.before,
                "after": self.after, "steps": self.steps, "seconds": self.seconds,
                "config": self.config}


# ---------------------------------------------------------------------------- trainer


class Trainer:
    """One unlearning run. ``Trainer(lm, config, heads, out_dir).run()``; or drive it
    step by step with :meth:`train_step` (benchmarks do).

    The model in ``lm`` is trained **in place**."""

    def __init__(self, lm: LoadedModel, config: UnlearnConfig | None = None,
                 heads: Any = None, out_dir: str | Path | None = None):
        config = config or UnlearnConfig()
        if not isinstance(config, UnlearnConfig):
            raise TypeError(f"config must be an UnlearnConfig, got {type(config).__name__}")
        self.lm = lm
        self.model = lm.model
        self.tokenizer = lm.tokenizer
        self.config, params = resolve_config(config, lm)
        self.method_cls = get_method(self.config.method)
        c = self.config
        if c.threads:
            torch.set_num_threads(c.threads)
        decoder_layers(self.model)  # fail early on unsupported models
        self.heads = parse_heads(heads, self.model)
        if self.heads is not None and self.method_cls.uses_heads == "no":
            raise ValueError(f"method {c.method!r} does not use attention heads; "
                             "drop --heads")
        if self.heads is None and self.method_cls.uses_heads == "required":
            raise ValueError(f"method {c.method!r} needs selected heads (ALMPU phase 1: "
                             "interp_unlearn.localize); pass heads=[(layer, head), ...] or a "
                             "selected-heads JSON file")
        self.out_dir = Path(out_dir) if out_dir is not None else Path("runs") / "unlearn" / (
            f"{Path(str(lm.name)).name}-{c.method}-seed{c.seed}")
        self.device = next(self.model.parameters()).device
        world_dir = lm.world_dir

        # data: the method may define its own default forget corpus (DPO: forget-qa)
        self.forget_texts = resolve_corpus(c.forget_corpus, world_dir, "forget corpus")
        self.retain_texts = (resolve_corpus(c.retain_corpus, world_dir, "retain corpus")
                             if c.retain_corpus not in (None, "", "none") else None)
        self.forget_stream = TextBatches(self.forget_texts, self.tokenizer, c.batch_size,
                                         c.seq_len, c.seed, c.shuffle, c.padding_side)
        self.retain_stream = (TextBatches(self.retain_texts, self.tokenizer, c.batch_size,
                                          c.seq_len, c.seed + 1, c.shuffle, c.padding_side)
                              if self.retain_texts else None)

        # evaluation sets
        self.mcq: dict[str, Any] = {}
        for domain, given in (("forget", c.forget_mcq), ("retain", c.retain_mcq)):
            if given is not None:
                self.mcq[domain] = Path(given)
            elif world_dir is not None:
                self.mcq[domain] = lm.mcq_path(domain)
        self.eval_config = EvalConfig(scoring=c.eval_scoring or lm.default_scoring,
                                      batch_size=c.eval_batch_size)

        # seeded, then the method (draws its random vectors / δ here)
        torch.manual_seed(c.seed)
        self._requires_grad = {n: p.requires_grad for n, p in self.model.named_parameters()}
        for p in self.model.parameters():
            p.requires_grad_(False)
        try:
            self._build_method(c, params, world_dir)
        except BaseException:
            self._restore_requires_grad()
            raise
        self.step = 0
        self._metrics_fh = None

    def _build_method(self, c: UnlearnConfig, params: Any, world_dir: Path | None) -> None:
        reference = None
        if self.method_cls.reference == "full":
            reference = copy.deepcopy(self.model).eval()
            for p in reference.parameters():
                p.requires_grad_(False)
        self.ctx = MethodContext(self.model, self.tokenizer, c, params, self.heads, reference,
                                 self.device, world_dir)
        self.method = self.method_cls(self.ctx)
        self.trainable = self.method.trainable()
        if not self.trainable:
            raise ValueError(f"method {c.method!r} selected no parameters to train")
        named = dict(self.model.named_parameters())
        for n, p in self.trainable.items():
            if named.get(n) is not p:
                raise AssertionError(f"{c.method}: trainable {n!r} is not the model's parameter")
            p.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(list(self.trainable.values()), lr=c.lr,
                                           betas=tuple(c.betas), eps=c.adam_eps,
                                           weight_decay=c.weight_decay)

    # -- pieces ------------------------------------------------------------------
    def evaluate(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {"forget": None, "retain": None}
        if not self.config.evaluate:
            return out
        for domain, path in self.mcq.items():
            out[domain] = evaluate_mcq(self.model, self.tokenizer, path,
                                       self.eval_config).accuracy
        return out

    def _log(self, record: dict[str, Any]) -> None:
        if self._metrics_fh is not None:
            self._metrics_fh.write(json.dumps(record) + "\n")
            self._metrics_fh.flush()

    def _check(self, terms: dict[str, Tensor], prefix: str = "") -> dict[str, float]:
        values = {}
        for name, t in terms.items():
            v = float(t.detach().float().sum()) if isinstance(t, Tensor) else float(t)
            if not math.isfinite(v):
                raise _NonFinite(prefix + name, v)
            values[prefix + name] = v
        return values

    def train_step(self) -> dict[str, float]:
        """One step: loss terms -> checks -> backward -> gradient check -> AdamW step ->
        the method's post-step (adversary). Returns the logged loss values. Raises
        ``_NonFinite`` (internal) before touching the weights if a term is NaN/inf."""
        self.step += 1
        forget = next(self.forget_stream).to(self.device)
        retain = next(self.retain_stream).to(self.device) if self.retain_stream else None
        self.optimizer.zero_grad(set_to_none=True)
        terms = self.method.loss_terms(self.step, forget, retain)
        values = self._check(terms)
        total = sum(terms.values())
        total.backward()
        if self.config.check_grads:
            for n, p in self.trainable.items():
                if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                    raise _NonFinite(f"gradient of the total loss ({n})", float("nan"))
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(list(self.trainable.values()), self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        post = self.method.post_step(self.step, forget, retain)
        try:
            values.update(self._check(post))
        except _NonFinite as err:
            err.after_update = True  # the θ update of this step had finite loss and grads
            raise
        values["total"] = float(sum(v for k, v in values.items() if k in terms))
        return values

    def save(self, status: str = "completed", extra: dict[str, Any] | None = None,
             steps_completed: int | None = None) -> Path:
        """Write the HF checkpoint (current weights) + meta + resolved config to out_dir."""
        out = self.out_dir
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        meta = dict(self.lm.meta)
        if self.lm.world_dir is not None:
            meta["world_dir"] = str(self.lm.world_dir)
        meta["unlearn"] = {"method": self.config.method, "preset": self.config.preset,
                           "source_model": str(self.lm.path or self.lm.name),
                           "steps_completed": self.step if steps_completed is None
                           else steps_completed,
                           "status": status, "heads": self.heads, **(extra or {})}
        (out / META_FILE).write_text(json.dumps(meta, indent=1))
        self._write_config()
        return out

    def _write_config(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        d = {**self.config.to_dict(), "model": str(self.lm.path or self.lm.name),
             "heads": self.heads}
        (self.out_dir / CONFIG_FILE).write_text(json.dumps(d, indent=1))

    # -- the run -------------------------------------------------------------------
    def run(self) -> UnlearnResult:
        c = self.config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        t0 = time.time()
        try:
            with (self.out_dir / METRICS_FILE).open("w") as fh:
                self._metrics_fh = fh
                before = self.evaluate()
                self._log({"step": 0, "eval": before, **self.method.state_summary()})
                bar = tqdm(range(1, c.max_num_batches + 1), desc=f"unlearn[{c.method}]",
                           disable=not c.progress)
                for _ in bar:
                    try:
                        values = self.train_step()
                    except _NonFinite as err:
                        ckpt = self.save(status="stopped_non_finite",
                                         extra={"stopped_at_step": self.step,
                                                "term": err.term,
                                                "weights": "after the θ update of this step"
                                                if err.after_update else
                                                "before this step"},
                                         steps_completed=self.step if err.after_update
                                         else self.step - 1)
                        self._log({"step": self.step, "error": "non-finite", "term": err.term,
                                   "value": str(err.value)})
                        raise NonFiniteLossError(c.method, self.step, err.term, err.value,
                                                 ckpt) from None
                    self._log({"step": self.step, "loss": values,
                               "seconds": round(time.time() - t0, 2)})
                    bar.set_postfix({k: f"{v:.3g}" for k, v in values.items()})
                    if c.eval_every and self.step % c.eval_every == 0 \
                            and self.step != c.max_num_batches:
                        ev = self.evaluate()
                        self._log({"step": self.step, "eval": ev, **self.method.state_summary()})
                        bar.write(f"[{c.method}] step {self.step}: "
                                  + " ".join(f"{k} {v:.3f}" for k, v in ev.items()
                                             if v is not None))
                after = self.evaluate()
                seconds = round(time.time() - t0, 1)
                self._log({"step": self.step, "eval": after, "final": True, "seconds": seconds,
                           **self.method.state_summary()})
        finally:
            self._metrics_fh = None
            self.method.close()
            self._restore_requires_grad()
        ckpt = self.save()
        result = UnlearnResult(c.method, self.out_dir, ckpt, self.out_dir / CONFIG_FILE,
                               self.out_dir / METRICS_FILE, before, after, self.step, seconds,
                               json.loads((self.out_dir / CONFIG_FILE).read_text()))
        (self.out_dir / RESULT_FILE).write_text(json.dumps(result.to_dict(), indent=1))
        return result

    def _restore_requires_grad(self) -> None:
        for n, p in self.model.named_parameters():
            p.requires_grad_(self._requires_grad.get(n, True))


class _NonFinite(Exception):
    def __init__(self, term: str, value: float):
        super().__init__(term)
        self.term, self.value = term, value
        self.after_update = False


# -------------------------------------------------------------------------------- API


def unlearn(model: str | os.PathLike | LoadedModel, method: str | None = None,
            config: UnlearnConfig | dict | None = None, heads: Any = None,
            out_dir: str | Path | None = None, **overrides: Any) -> UnlearnResult:
    """Unlearn with one method and save the result as an HF checkpoint in ``out_dir``.

    Args:
        model: built-in name (``organism``, ``organism-micro``), checkpoint directory, hub
            name, or a :class:`~interp_unlearn.loading.LoadedModel` (trained in place).
        method: registry name; overrides ``config.method``.
        config: an :class:`UnlearnConfig` or a dict of its fields.
        heads: ``[(layer, head), ...]``, ``"2.1,3.0"`` or a selected-heads JSON file
            (ALMPU: required; GA-MP: default all heads; others: not used).
        out_dir: output directory (default ``runs/unlearn/<model>-<method>-seed<seed>``).
        **overrides: UnlearnConfig fields (``steps`` means ``max_num_batches``).

    Returns:
        :class:`UnlearnResult`: paths and forget/retain accuracy before and after.
    """
    if isinstance(config, dict):
        config = UnlearnConfig.from_dict(config)
    config = copy.deepcopy(config) if config is not None else UnlearnConfig()
    if method is not None:
        config.method = method
    if "steps" in overrides:
        overrides["max_num_batches"] = overrides.pop("steps")
    for k, v in overrides.items():
        if not hasattr(config, k) or k == "steps":
            raise ValueError(f"unknown UnlearnConfig field {k!r}")
        setattr(config, k, v)
    lm = model if isinstance(model, LoadedModel) else load_model(model)
    return Trainer(lm, config, heads=heads, out_dir=out_dir).run()


# ------------------------------------------------------------------------ command line


def add_unlearn_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``interp-unlearn unlearn`` (to be handled by :func:`run_unlearn`)."""
    p.add_argument("--method", required=True, help=f"one of {available_methods()}")
    p.add_argument("--model", default="organism",
                   help="built-in name, local HF checkpoint directory, or hub name")
    p.add_argument("--heads", default=None,
                   help="selected heads: JSON file (phase 1 output) or 'L.H,L.H'")
    p.add_argument("--out", type=Path, default=None, help="output checkpoint directory")
    p.add_argument("--preset", default=None, help="method preset (zephyr, organism, ...)")
    p.add_argument("--steps", type=int, default=None, help="max_num_batches")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--forget-corpus", default=None,
                   help="forget | forget-qa | ... | JSONL path (default: the method's)")
    p.add_argument("--retain-corpus", default=None,
                   help="retain | general | retain+general | none | JSONL path")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="method parameter, e.g. --set layer=2 --set steering_coeff=20 "
                        "(values parsed as JSON when possible)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true")
    return p


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in items or ():
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def run_unlearn(args: Any) -> int:
    """Run ``interp-unlearn unlearn`` from an argparse namespace (or any object with the
    attributes of :func:`add_unlearn_arguments`; missing ones take their defaults).
    Prints the result (one JSON object with ``--json``) and returns the exit code."""
    g = lambda name, default=None: getattr(args, name, default)  # noqa: E731
    json_out = bool(g("json", False))
    config = UnlearnConfig(
        method=g("method"), preset=g("preset"), max_num_batches=g("steps"),
        batch_size=g("batch_size"), lr=g("lr"), seq_len=g("seq_len"), seed=g("seed"),
        eval_every=g("eval_every", 0) or 0, forget_corpus=g("forget_corpus"),
        retain_corpus=g("retain_corpus"), params=_parse_set(g("set", [])),
        threads=g("threads", 0) or 0,
        progress=not (g("no_progress", False) or json_out))
    lm = load_model(g("model", "organism"), device=g("device", "cpu"), dtype=g("dtype"))
    res = Trainer(lm, config, heads=g("heads"), out_dir=g("out")).run()
    if json_out:
        print(json.dumps(res.to_dict()))
    else:
        fmt = lambda d: " ".join(f"{k} {v:.3f}" for k, v in d.items() if v is not None)  # noqa
        print(f"{res.method}: before [{fmt(res.before)}] -> after [{fmt(res.after)}] in "
              f"{res.steps} steps, {res.seconds:.0f} s; checkpoint {res.checkpoint}")
    return 0
