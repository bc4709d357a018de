"""Fine-tuning (relearning) attack: fine-tune a checkpoint on ``N`` documents, then evaluate.

Three presets (:meth:`FinetuneAttackConfig.preset`), from the sources
(``/work/shared/reference/protocols.md`` section 5):

``lora`` -- Łucki et al. 2024's recipe with a **model-scaled learning rate** (default)
    LoRA rank 128, alpha 16, dropout 0 on ``q/k/v/o/gate/up/down_proj``; AdamW weight
    decay 0.01, 3 epochs, batch 1, linear schedule with 5 % warm-up, max length 1024
    tokens; lr ``None`` = the model family's :data:`ATTACK_LR` (:func:`attack_lr`).
``paper`` -- Łucki et al. verbatim: the same with lr 2e-4 on every model.
``full`` -- Fan et al. 2025 (relearning attack)
    all weights; lr 1e-5, 3 epochs, batch 1 x gradient accumulation 4.

**How the strength is scaled.** Łucki's 2e-4 was set for 7B models, where it is 4x
Zephyr's RMU lr (5e-5) and breaks RMU within 10-15 documents. The organism unlearns at
lr 3e-3 (RMU) and was itself trained at 3e-3, so 2e-4 is 0.067x its unlearning lr --
about 60x weaker relative to the edit than on Zephyr -- and RMU recovers almost nothing
(a floor effect). Attack strength is therefore calibrated per model family by
measurement, not by a formula: the family's lr is the one at which an RMU model's
recovery on the **disjoint attack pool** spans roughly 0.3-0.8 over N = 10-50 documents
(the regime where a more robust method has room to show). For the organism that sweep
is ``notes/e3_calibrated_attack.md`` (E3); for Zephyr-7B it is the paper's own setting,
2e-4, under which the paper reports RMU fully broken by N = 15; every other family keeps
2e-4 (unvalidated: calibrate it the same way).
Where the sources are silent the Hugging Face ``Trainer`` defaults are used (both
reference codes train through it): AdamW betas (0.9, 0.999), eps 1e-8, gradient clipping
at norm 1.0, ``get_linear_schedule_with_warmup`` (warm-up steps =
``ceil(warmup_ratio * total_steps)``), data reshuffled every epoch (seeded), and, for the
``full`` preset, weight decay 0 and no warm-up. Each document is one training example
(tokenizer's own special tokens, no EOS appended unless ``append_eos``), truncated to
``max_length`` tokens; the loss is the mean next-token cross-entropy over the
example's tokens (padding masked when ``batch_size > 1``).

**Rank vs width.** Rank 128 is kept in the preset although the organisms are narrower
(``organism-micro`` d_model 96, ``organism`` 192, MLP widths 256/...): a LoRA update of
rank ``r >= min(d_in, d_out)`` can represent *any* update of that matrix, so on the
micro organism LoRA-128 is a full-rank fine-tune of every targeted matrix reparametrised
as ``B A`` with scale ``alpha / r = 0.125`` (on a 7B model it is a genuine low-rank
update). ``lora_rank`` is exposed to study the low-rank regime (e.g. 8 or 16).
**Max length** is additionally capped at the model's context length (128 tokens for
the micro organism); documents longer than that are truncated, never split.

``N = 0`` means no training: the checkpoint is evaluated as it is. The input checkpoint
is never written: a name/path is loaded fresh from disk, a ``LoadedModel`` is deep-copied.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

from interp_unlearn.core.distributed import (BatchSplitError, ShardedEngineError,
                                             all_reduce_sum_, dist_env)
from interp_unlearn.attacks.common import (POOLS, AttackResult, ModelSpec, attack_corpus,
                                           load_attack_target, run_eval_for, sample_texts)

__all__ = ["ATTACK_LR", "FINETUNE_PRESETS", "LORA_TARGETS", "PAPER_LR", "FinetuneAttackConfig",
           "attack_lr", "finetune_attack", "train_on_texts"]

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: Łucki et al.'s LoRA learning rate (set for 7B models): the ``paper`` preset.
PAPER_LR = 2e-4
#: The ``lora`` preset's learning rate per model family (:func:`interp_unlearn.data.families.detect_family`);
#: families not listed get :data:`PAPER_LR`. See the module docstring for how it is chosen.
ATTACK_LR: dict[str, float] = {
    # E3 sweep (notes/e3_calibrated_attack.md): RMU seed 0, disjoint attack pool, attack
    # seeds 0-2, lr in {2e-4, 1e-3, 2e-3, 3e-3, 1e-2}; at 2e-3 RMU's recovery is 0.45 /
    # 0.66 / 0.76 at N = 10 / 20 / 50 and the original keeps 0.95 (0.67x RMU's lr 3e-3)
    "organism": 2e-3,
    # the test organism: not calibrated separately, the organism's value
    "organism-micro": 2e-3,
    # the paper's / Łucki's setting (4x Zephyr's RMU lr 5e-5)
    "zephyr": PAPER_LR,
}


def attack_lr(model: Any) -> tuple[float, str]:
    """``(lr, family)``: the ``lora`` preset's learning rate for ``model`` (a
    ``LoadedModel``, name or path; see :data:`ATTACK_LR`)."""
    from interp_unlearn.data.families import detect_family

    fam = detect_family(model, warn=False).name
    return ATTACK_LR.get(fam, PAPER_LR), fam


@dataclass
class FinetuneAttackConfig:
    """Hyper-parameters of the fine-tuning attack (defaults: the ``lora`` preset).

    ``method``: ``lora`` (PEFT LoRA adapters, merged into the weights after training) or
    ``full`` (every parameter trained). ``lr``: a positive number, or ``None`` for the
    model family's :data:`ATTACK_LR` (resolved by :func:`finetune_attack` before
    training; the recorded config holds the value used). ``grad_accum`` micro-batches of
    ``batch_size`` documents make one optimiser step; ``warmup_ratio`` of the optimiser
    steps warm up linearly; ``schedule``: ``linear`` (decay to 0) or ``constant``."""

    method: str = "lora"
    lr: float | None = None
    epochs: int = 3
    batch_size: int = 1
    grad_accum: int = 1
    warmup_ratio: float = 0.05
    weight_decay: float = 0.01
    schedule: str = "linear"
    max_length: int = 1024
    lora_rank: int = 128
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = LORA_TARGETS
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    append_eos: bool = False
    preset_name: str | None = None

    def __post_init__(self) -> None:
        if self.method not in ("lora", "full"):
            raise ValueError(f"method must be 'lora' or 'full', got {self.method!r}")
        if self.schedule not in ("linear", "constant"):
            raise ValueError(f"schedule must be 'linear' or 'constant', got {self.schedule!r}")
        for name in ("epochs", "batch_size", "grad_accum", "max_length", "lora_rank"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.lr is not None and (isinstance(self.lr, bool) or not isinstance(
                self.lr, (int, float)) or not 0 < self.lr < math.inf):
            raise ValueError(f"lr must be a finite number > 0 or None (the model family's "
                             f"ATTACK_LR), got {self.lr!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        self.lora_targets = tuple(self.lora_targets)
        self.adam_betas = tuple(self.adam_betas)  # type: ignore[assignment]

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "FinetuneAttackConfig":
        """``lora`` (Łucki et al., model-scaled lr), ``paper`` (Łucki et al. verbatim,
        lr 2e-4) or ``full`` (Fan et al.), with optional overrides
        (``preset_name`` then still names the preset they started from)."""
        if name not in FINETUNE_PRESETS:
            raise ValueError(f"unknown fine-tuning preset {name!r}; valid: {sorted(FINETUNE_PRESETS)}")
        _check_fields(overrides)
        return replace(FINETUNE_PRESETS[name], **overrides)

    @property
    def label(self) -> str:
        return f"finetune-{self.method}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        d["adam_betas"] = list(self.adam_betas)
        if self.method == "full":
            for k in ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets"):
                d.pop(k)
        return d


FINETUNE_PRESETS: dict[str, FinetuneAttackConfig] = {
    # Łucki et al. 2024, lr scaled to the model family (ATTACK_LR)
    "lora": FinetuneAttackConfig(preset_name="lora"),
    # Łucki et al. 2024 as published
    "paper": FinetuneAttackConfig(lr=PAPER_LR, preset_name="paper"),
    # Fan et al. 2025; weight decay / warm-up: HF Trainer defaults (not stated)
    "full": FinetuneAttackConfig(method="full", lr=1e-5, epochs=3, batch_size=1, grad_accum=4,
                                 warmup_ratio=0.0, weight_decay=0.0, preset_name="full"),
}


def _check_fields(overrides: dict[str, Any]) -> None:
    valid = {f.name for f in fields(FinetuneAttackConfig)}
    bad = sorted(set(overrides) - valid)
    if bad:
        raise ValueError(f"unknown fine-tuning option(s) {bad}; valid: {sorted(valid)}")


def _as_config(config: FinetuneAttackConfig | str | None, **overrides: Any) -> FinetuneAttackConfig:
    if config is None:
        config = "lora"
    if isinstance(config, str):
        return FinetuneAttackConfig.preset(config, **overrides)
    if not isinstance(config, FinetuneAttackConfig):
        raise TypeError(f"config must be a FinetuneAttackConfig or a preset name, got "
                        f"{type(config).__name__}")
    _check_fields(overrides)
    return replace(config, **overrides) if overrides else config


def _context_length(model: Any) -> int | None:
    cfg = getattr(model, "config", None)
    v = getattr(cfg, "max_position_embeddings", None)
    return int(v) if v is not None else None


def tokenize_documents(tokenizer: Any, texts: Sequence[str], max_length: int,
                       append_eos: bool = False) -> list[list[int]]:
    out = []
    eos = getattr(tokenizer, "eos_token_id", None)
    for t in texts:
        ids = list(tokenizer(t)["input_ids"])
        if append_eos and eos is not None:
            ids.append(eos)
        ids = ids[:max_length]
        if len(ids) >= 2:  # a single token has nothing to predict
            out.append(ids)
    return out


def _collate(docs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(map(len, docs))
    ids = torch.full((len(docs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(docs), width), dtype=torch.long)
    for r, d in enumerate(docs):
        ids[r, :len(d)] = torch.tensor(d)
        mask[r, :len(d)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def train_on_texts(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str],
                   config: FinetuneAttackConfig, seed: int, *,
                   params: list[torch.nn.Parameter] | None = None,
                   after_step: Any = None, extra_params: list[torch.nn.Parameter] | None = None,
                   progress: bool = False) -> dict[str, Any]:
    """The training loop shared by the fine-tuning and head-restoration attacks.

    Trains ``params`` (default: every parameter with ``requires_grad``) plus
    ``extra_params`` with AdamW on next-token cross-entropy over ``texts``; ``after_step()``
    runs after every optimiser step (e.g. to restore frozen entries). The data order is
    drawn from ``torch.Generator().manual_seed(seed)``. Returns ``info`` (steps, losses)."""
    from tqdm.auto import tqdm

    if config.lr is None:  # the model family's ATTACK_LR
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        config = replace(config, lr=attack_lr(base)[0])
    max_length = config.max_length
    ctx = _context_length(model)
    if ctx is not None:
        max_length = min(max_length, ctx)
    docs = tokenize_documents(tokenizer, texts, max_length, config.append_eos)
    if not docs:
        raise ValueError("no training document has at least two tokens")
    pad_id = getattr(tokenizer, "pad_token_id", None)
    pad_id = int(pad_id) if pad_id is not None else 0
    trainable = list(params) if params is not None else [
        p for p in model.parameters() if p.requires_grad]
    trainable += list(extra_params or [])
    if not trainable:
        raise ValueError("nothing to train: no parameter requires grad")
    n_micro = math.ceil(len(docs) / config.batch_size)
    steps_per_epoch = math.ceil(n_micro / config.grad_accum)
    total = steps_per_epoch * config.epochs
    warmup = math.ceil(config.warmup_ratio * total)
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]  # HF Trainer: no decay on biases/norms
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=config.lr, betas=config.adam_betas, eps=config.adam_eps)
    sched = (get_linear_schedule_with_warmup(opt, warmup, total) if config.schedule == "linear"
             else get_constant_schedule_with_warmup(opt, warmup))
    gen = torch.Generator().manual_seed(int(seed))
    device = next(model.parameters()).device
    env = dist_env()  # under `accelerate launch`: a step's micro-batches spread over processes
    if env.sharded:
        raise ShardedEngineError("the fine-tuning attack does not run under FSDP or ZeRO-3: "
                                 "launch it with ddp.yaml or on one process")
    if config.grad_accum % env.world:
        raise BatchSplitError(f"grad_accum {config.grad_accum} (micro-batches per step) is not "
                              f"divisible by {env.world} processes; use a multiple of {env.world}")
    losses: list[float] = []
    t0 = time.time()
    model.train()
    bar = tqdm(total=total, disable=not progress, desc=f"fine-tune ({config.method})", leave=False)
    step = 0
    for _ in range(config.epochs):
        order = torch.randperm(len(docs), generator=gen).tolist()
        micro = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        for start in range(0, len(micro), config.grad_accum):
            group = micro[start:start + config.grad_accum]
            step_loss = 0.0
            for j, mb in enumerate(group):
                if j % env.world != env.rank:  # another process's micro-batch
                    continue
                ids, mask, labels = (t.to(device) for t in _collate([docs[i] for i in mb], pad_id))
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
                tok_loss = torch.nn.functional.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                    ignore_index=-100, reduction="sum")
                # HF Trainer: mean over the tokens of one micro-batch, averaged over the
                # accumulation steps
                n_mb = int((labels[:, 1:] != -100).sum())
                loss = tok_loss / max(n_mb, 1) / len(group)
                if not torch.isfinite(loss) and not env.distributed:
                    raise FloatingPointError(f"non-finite fine-tuning loss at step {step}")
                loss.backward()
                step_loss += float(loss.detach())
            if env.distributed:  # the gradients of the whole step, on every process
                total_loss = torch.tensor([step_loss], device=device)
                for p in trainable:  # a process without a micro-batch adds zeros
                    p.grad = torch.zeros_like(p) if p.grad is None else p.grad
                all_reduce_sum_([total_loss] + [p.grad for p in trainable], env)
                step_loss = float(total_loss)
                if not math.isfinite(step_loss):
                    raise FloatingPointError(f"non-finite fine-tuning loss at step {step}")
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            if after_step is not None:
                after_step()
            step += 1
            losses.append(round(step_loss, 5))
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}")
    bar.close()
    model.eval()
    return {"steps": step, "warmup_steps": warmup, "n_docs": len(docs),
            "n_tokens": sum(map(len, docs)), "max_length": max_length,
            "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
            "train_seconds": round(time.time() - t0, 2)}


def finetune_attack(model: ModelSpec, n: int, seed: int = 0, *, data: str = "forget",
                    pool: str = "attack", config: FinetuneAttackConfig | str | None = None,
                    mcq: Any = None, scoring: str | None = None,
                    domains: Sequence[str] = ("forget",), batch_size: int = 32,
                    texts: Sequence[str] | None = None, keep_model: bool = False,
                    progress: bool = False, repeat: bool = False,
                    **overrides: Any) -> AttackResult:
    """Fine-tune a copy of ``model`` on ``n`` attack documents and evaluate it.

    Args:
        model: built-in name, checkpoint directory or ``LoadedModel`` (never modified).
        n: number of documents (``0``: no training, just evaluate).
        seed: draws the documents, the LoRA initialisation and the data order.
        data, pool: the attack data (see :func:`~interp_unlearn.attacks.common.attack_corpus`):
            ``forget`` + ``attack`` (default: attack-pool documents only), ``forget`` +
            ``same`` (the paper's protocol: forget documents of all pools), ``unrelated``.
        config: a :class:`FinetuneAttackConfig` or a preset name (``lora``: lr scaled to
            the model family, ``paper``: lr 2e-4, ``full``); ``overrides`` replace its
            fields (e.g. ``lora_rank=8``, ``lr=1e-3``).
        mcq, scoring, domains: what to score (default: the model's own forget pool and
            scoring). ``batch_size``: questions per forward pass in evaluation.
        texts: the training documents themselves (skips ``data``/``pool`` sampling).
        keep_model: return the fine-tuned model in ``AttackResult.attacked_model``.
        repeat: allow ``n`` beyond the corpus (whole shuffled passes; else an error).

    Bad options (an unknown preset or pool, lr <= 0, ``n`` beyond the corpus without
    ``repeat``) raise ``ValueError`` before any weight is loaded or trained.
    """
    cfg = _as_config(config, **overrides)
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    lm = load_attack_target(model, copy_weights=n > 0)
    if texts is None:
        corpus, pool_label, files = attack_corpus(lm.world_dir, data, pool,
                                                     real_set=lm.meta.get("real_set"))
    else:
        corpus, pool_label, files = list(texts), "given", []
    sample = sample_texts(corpus, n, seed, repeat=repeat)
    info: dict[str, Any] = {"corpus": files}
    if cfg.lr is None:
        lr, family = attack_lr(lm)
        cfg = replace(cfg, lr=lr)
        info["lr_family"] = family
    m = lm.model
    if n > 0:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            if cfg.method == "lora":
                from peft import LoraConfig, get_peft_model

                targets = [t for t in cfg.lora_targets
                           if any(name.endswith(t) for name, _ in m.named_modules())]
                if not targets:
                    raise ValueError(f"none of the LoRA targets {cfg.lora_targets} exist in "
                                     f"{type(m).__name__}")
                peft_model = get_peft_model(m, LoraConfig(
                    r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                    target_modules=targets, bias="none", task_type="CAUSAL_LM"))
                info.update(train_on_texts(peft_model, lm.tokenizer, sample, cfg, seed,
                                           progress=progress))
                m = peft_model.merge_and_unload()
            else:
                for p in m.parameters():
                    p.requires_grad_(True)
                info.update(train_on_texts(m, lm.tokenizer, sample, cfg, seed, progress=progress))
        for p in m.parameters():
            p.requires_grad_(False)
        m.eval()
    return run_eval_for(lm, m, attack=cfg.label, data=str(data), pool=pool_label, n=n, seed=seed,
                        mcq=mcq, scoring=scoring, domains=domains, batch_size=batch_size,
                        config=cfg.to_dict(), info=info, keep_model=keep_model,
                        sample=sample, corpus_docs=len(corpus))
