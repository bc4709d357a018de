"""The model organism: a Llama-architecture HF checkpoint trained on the synthetic world,
and its never-learned twin (same recipe, forget-domain facts withheld).

``LlamaForCausalLM`` has the family traits of Zephyr/Mistral (RMSNorm, rotary, gated SiLU
MLP), so every code path that runs on the organism runs unchanged on those checkpoints.

Layout of a built organism directory (what ``organism train`` writes and the repo ships)::

    organism_config.json      the OrganismConfig that produced it
    world/                    world.json, corpora/*.jsonl, mcq/*.jsonl
    model/  twin/             HF checkpoints (safetensors + tokenizer + interp_unlearn.json)
    metrics.json              training curves and final accuracies of both

Training measures its own MCQ accuracy every ``eval_every`` steps with an ``evaluate``
callable ``(model, tokenizer, questions) -> accuracy`` that the caller passes in: the
scorer lives one layer up (:mod:`interp_unlearn.evaluation`), and
:func:`interp_unlearn.pipeline.organism.train_organism` passes the cloze scorer.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from interp_unlearn.core.checkpoint import META_FILE, write_checksums, write_meta  # noqa: F401 - META_FILE re-exported
from interp_unlearn.data.world import World, WorldConfig

ASSETS = Path(__file__).resolve().parents[1] / "assets"
#: ``(model, tokenizer, questions) -> accuracy``
Evaluator = Callable[[LlamaForCausalLM, PreTrainedTokenizerFast, Sequence], float]


@dataclass
class OrganismConfig:
    """Architecture and training recipe. Saved as ``organism_config.json``."""

    preset: str = "small"
    world: WorldConfig = field(default_factory=WorldConfig)
    vocab_size: int = 2048
    d_model: int = 192
    n_layers: int = 6
    n_heads: int = 6
    n_kv_heads: int = 6
    d_mlp: int = 512
    seq_len: int = 256
    batch_size: int = 16
    steps: int = 1500
    lr: float = 3e-3
    warmup: int = 50
    weight_decay: float = 0.01
    eval_every: int = 250
    eval_pool: str = "eval"  # the MCQ pool the checkpoint is scored on by default
    seed: int = 0
    threads: int = 0  # 0: torch's default

    @classmethod
    def from_dict(cls, d: dict) -> "OrganismConfig":
        d = dict(d)
        d["world"] = WorldConfig(**d.get("world", {}))
        return cls(**d)


PRESETS: dict[str, OrganismConfig] = {
    # Tests: trains in about a minute on 2 cores. It memorises the practice facts (their
    # question phrasing is trained) but has too little time to generalise to held-out
    # phrasings, so it is scored on the practice pool by default (see README).
    "micro": OrganismConfig(
        preset="micro",
        world=WorldConfig(n_pathogens=40, n_towns=40, n_general_docs=40, qa_repeats=2),
        vocab_size=512, d_model=96, n_layers=4, n_heads=4, n_kv_heads=4, d_mlp=256,
        seq_len=128, batch_size=16, steps=400, lr=5e-3, warmup=20, eval_every=100,
        eval_pool="practice"),
    # The shipped default (recipe B of notes/organism_trials.md). Three times as many
    # practice as evaluation pathogens: held-out-phrasing accuracy needs the question
    # phrasing practised on many entities. seed=1 seeds the tokenizer and the training (the
    # world keeps its own seed 0); threads=2 because CPU reductions, hence the weights,
    # depend on the thread count — the shipped checkpoint was trained with 2.
    "small": OrganismConfig(
        world=WorldConfig(n_pathogens=150, n_towns=120, n_general_docs=300, docs_per_entity=5,
                          forget_pool_fractions={"eval": 0.2, "practice": 0.6, "attack": 0.2},
                          retain_pool_fractions={"eval": 0.2, "practice": 0.8}),
        batch_size=12, steps=1500, eval_every=100, seed=1, threads=2),
}


def get_preset(name: str, **overrides) -> OrganismConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown organism preset {name!r}; valid: {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def build_model(cfg: OrganismConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.d_model, intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads, max_position_embeddings=cfg.seq_len,
        rms_norm_eps=1e-5, tie_word_embeddings=False, hidden_act="silu",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config)


def pack_documents(token_lists: list[list[int]], seq_len: int, pad_id: int,
                   rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle documents and pack whole ones greedily into rows of ``seq_len`` (a document
    is never split, so a practice question and its answer stay together). Returns
    ``input_ids`` and ``labels`` (pad → -100)."""
    order = list(range(len(token_lists)))
    rng.shuffle(order)
    rows, cur = [], []
    for i in order:
        doc = token_lists[i][:seq_len]
        if len(cur) + len(doc) > seq_len:
            rows.append(cur)
            cur = []
        cur = cur + doc
    if cur:
        rows.append(cur)
    ids = torch.full((len(rows), seq_len), pad_id, dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
    labels = ids.masked_fill(ids == pad_id, -100)
    return ids, labels


def train_lm(cfg: OrganismConfig, world: World, tokenizer: PreTrainedTokenizerFast,
             include_forget: bool, world_dir: Path, desc: str,
             progress: bool = True, *, evaluate: Evaluator) -> tuple[LlamaForCausalLM, dict]:
    """Train one organism (or its twin) from scratch; returns the model and its metrics.
    ``evaluate(model, tokenizer, questions)`` gives the accuracies logged on the way."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model = build_model(cfg, tokenizer)
    texts = world.training_texts(include_forget=include_forget)
    eos = tokenizer.eos_token_id
    token_lists = [ids + [eos] for ids in tokenizer(texts)["input_ids"]]
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98),
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup) * 0.5
                                              * (1 + math.cos(math.pi * min(1.0, s / cfg.steps))))
    forget_q = world.mcq("forget", cfg.eval_pool)
    retain_q = world.mcq("retain", cfg.eval_pool)
    metrics: dict = {"loss": [], "eval": [], "n_tokens_per_epoch": sum(map(len, token_lists)),
                     "include_forget": include_forget}
    ids, labels = pack_documents(token_lists, cfg.seq_len, tokenizer.pad_token_id, rng)
    cursor = 0
    t0 = time.time()
    bar = tqdm(range(1, cfg.steps + 1), desc=desc, disable=not progress)
    model.train()
    for step in bar:
        if cursor + cfg.batch_size > len(ids):
            ids, labels = pack_documents(token_lists, cfg.seq_len, tokenizer.pad_token_id, rng)
            cursor = 0
        x, y = ids[cursor: cursor + cfg.batch_size], labels[cursor: cursor + cfg.batch_size]
        cursor += cfg.batch_size
        loss = model(input_ids=x, attention_mask=(x != tokenizer.pad_token_id).long(),
                     labels=y).loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: non-finite training loss at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        metrics["loss"].append([step, round(loss.item(), 5)])
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % cfg.eval_every == 0 or step == cfg.steps:
            model.eval()
            ev = {"step": step, "seconds": round(time.time() - t0, 1)}
            for name, qs in (("forget", forget_q), ("retain", retain_q)):
                ev[name] = float(evaluate(model, tokenizer, qs))
            metrics["eval"].append(ev)
            bar.write(f"[{desc}] step {step}: forget {ev['forget']:.3f} retain {ev['retain']:.3f}")
            model.train()
    model.eval()
    metrics["train_seconds"] = round(time.time() - t0, 1)
    metrics["final"] = metrics["eval"][-1]
    return model, metrics


def save_checkpoint(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast,
                    out: Path, meta: dict) -> Path:
    """A standard HF checkpoint directory plus ``interp_unlearn.json`` (default scoring,
    where the world lives) so built-in names resolve ``--mcq forget``."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    write_meta(out, meta)
    write_checksums(out)
    return out


def train_organism(cfg: OrganismConfig, out_dir: str | Path,
                   members: tuple[str, ...] = ("model", "twin"), progress: bool = True, *,
                   evaluate: Evaluator) -> dict:
    """Generate the world, train the tokenizer and the requested members (``model``: the
    organism, ``twin``: the never-learned twin); write everything to ``out_dir``.
    Returns the metrics dict (merged with an existing ``metrics.json`` there)."""
    bad = set(members) - {"model", "twin"}
    if bad or not members:
        raise ValueError(f"members must be a non-empty subset of ('model', 'twin'), got {members}")
    from interp_unlearn.data.tokenizer import train_tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = World.generate(cfg.world)
    world.save(out / "world")
    (out / "organism_config.json").write_text(json.dumps(asdict(cfg), indent=1))
    tokenizer = train_tokenizer(world, cfg.vocab_size, seed=cfg.seed)
    metrics_file = out / "metrics.json"
    metrics: dict = {}
    for which, include_forget in (("model", True), ("twin", False)):
        if which not in members:
            continue
        model, m = train_lm(cfg, world, tokenizer, include_forget, out / "world",
                            desc=f"{cfg.preset}-{which}", progress=progress,
                            evaluate=evaluate)
        save_checkpoint(model, tokenizer, out / which, {
            "kind": "organism" if include_forget else "organism-twin", "preset": cfg.preset,
            "default_scoring": "cloze", "eval_pool": cfg.eval_pool, "world_dir": "../world"})
        m["n_params"] = sum(p.numel() for p in model.parameters())
        metrics[which] = m
        # merge at write time: the model and the twin may be trained by separate processes
        merged = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        metrics_file.write_text(json.dumps({**merged, **metrics}))
    return metrics
