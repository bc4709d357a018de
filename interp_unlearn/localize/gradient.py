"""Head localization by gradient attribution: attribution patching of mean ablation.

:mod:`.attribution` measures the effect of mean-ablating each head with one forward pass
per head. Attribution patching (Nanda 2023; Syed, Rager & Conmy, "Attribution Patching
Outperforms Automated Circuit Discovery", 2023) estimates all of them at once from one
forward and one backward pass, to first order:

    dL(l, h) ~= sum over positions p of (mu[l, h] - z[p, l, h]) . dL/dz[p, l, h]

where ``z`` is the head's output at ``hook_z`` (the input of ``o_proj``), ``mu`` its mean
over the real tokens of every scored text, and ``L`` the cross-entropy of the correct
answer's tokens after ``"Question: ...\\nAnswer:"`` (the cloze MCQ's correct
continuation) -- so ``dL > 0`` means ablating the head would hurt. ``d_forget`` /
``d_retain`` are the mean estimates over held-out forget / retain questions, and the
score, as in :mod:`.attribution`, is ``contrast`` (``d_forget - d_retain``) or ``forget``.

Gradients are taken through the whole network (the embedding output is made to require
a gradient), never stored on the weights, which are not changed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from interp_unlearn.core.arch import decoder_of
from interp_unlearn.core.bridge import model_dims
from interp_unlearn.core.config import ConfigBase
from interp_unlearn.core.hooks import hooked
from interp_unlearn.core.mcq import MCQ
from interp_unlearn.evaluation.scoring import pad_id as _pad_id
from interp_unlearn.interventions.hf_hooks import add_head_hooks
from interp_unlearn.localize.attribution import ATTRIBUTION_SCORES, AttributionResult
from interp_unlearn.localize.data import collate_rows, qa_rows

__all__ = ["GradientConfig", "gradient_attribution"]


@dataclass
class GradientConfig(ConfigBase):
    """How heads are scored by attribution patching. Saved with the result.

    Attributes:
        score: ``contrast`` (``d_forget - d_retain``) or ``forget`` (``d_forget``).
        max_texts: Questions per domain, a seeded sample; ``None``: all.
        batch_size: Questions per forward/backward pass.
        seed: Seeds the sample.
        top_k: Heads to select (default: 10 % of all heads, LoFiT's default).
    """

    score: str = "contrast"
    max_texts: int | None = 150
    batch_size: int = 16
    seed: int = 0
    top_k: int | None = None

    def __post_init__(self) -> None:
        if self.score not in ATTRIBUTION_SCORES:
            raise ValueError(f"score must be one of {ATTRIBUTION_SCORES}, got {self.score!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        for name in ("max_texts", "top_k"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive int or None, got {v!r}")


def _sample(items: Sequence[MCQ], n: int | None, seed: int, what: str) -> list[MCQ]:
    items = list(items)
    if not items:
        raise ValueError(f"the {what} question set is empty")
    if not all(isinstance(i, MCQ) for i in items):
        raise TypeError(f"{what}: gradient attribution needs MCQ items")
    if n is None or n >= len(items):
        return items
    g = torch.Generator().manual_seed(seed)
    return [items[i] for i in sorted(torch.randperm(len(items), generator=g)[:n].tolist())]


def gradient_attribution(model: PreTrainedModel, tokenizer: Any, forget: Sequence[MCQ],
                         retain: Sequence[MCQ], config: GradientConfig | None = None, *,
                         progress: bool = True, model_name: str | None = None
                         ) -> AttributionResult:
    """Score every head by the first-order effect of its mean ablation on the correct
    answers of ``forget`` vs ``retain`` questions (an HF Llama-style model).

    Returns:
        :class:`~interp_unlearn.localize.attribution.AttributionResult` (``table``:
        ``layer, head, d_forget, d_retain, score, rank``; rank 1 = highest score).
    """
    config = GradientConfig() if config is None else config
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"gradient attribution needs an HF PreTrainedModel, got "
                        f"{type(model).__name__}")
    dims = model_dims(model)
    n_layers, n_heads = dims["n_layers"], dims["n_heads"]
    n_total = n_layers * n_heads
    k = config.top_k if config.top_k is not None else max(1, int(0.1 * n_total))
    if k > n_total:
        raise ValueError(f"top_k={k} but the model has only {n_total} heads")
    pad = _pad_id(tokenizer)
    device = next(model.parameters()).device
    seq_len = int(getattr(model.config, "max_position_embeddings", 512) or 512)
    rows = {}
    for name, items in (("forget", forget), ("retain", retain)):
        qs = _sample(items, config.max_texts, config.seed, name)
        texts = [f"Question: {q.question.strip()}\nAnswer: {q.choices[q.answer]}" for q in qs]
        rows[name] = qa_rows(tokenizer, texts, seq_len, "Answer:")
    batches = {name: [collate_rows(r[i:i + config.batch_size], pad)
                      for i in range(0, len(r), config.batch_size)] for name, r in rows.items()}
    captured: dict[int, torch.Tensor] = {}

    def capture(z: torch.Tensor, layer: int) -> torch.Tensor:
        if z.requires_grad:
            z.retain_grad()
        captured[layer] = z
        return z  # passed on, so the forward runs through this very tensor

    def grad_on(module, args, out):  # the embedding output requires grad: gradients reach every z
        return out.detach().requires_grad_(True)

    t0 = time.time()
    was_training = model.training
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    model.eval()
    handles = add_head_hooks(model, capture)
    try:
        for p in params:  # gradients reach z through the embedding hook, never the weights
            p.requires_grad_(False)
        with torch.no_grad():  # mu: the mean z over the real tokens of every scored text
            total = torch.zeros(n_layers, n_heads, dims["d_head"], dtype=torch.float64)
            count = 0
            for ids, mask, _ in (b for bs in batches.values() for b in bs):
                model(input_ids=ids.to(device), attention_mask=mask.to(device))
                m = mask.to(device)[:, :, None, None].double()
                for l in range(n_layers):
                    total[l] += (captured[l].double() * m).sum(dim=(0, 1)).cpu()
                count += int(mask.sum())
            mu = (total / max(count, 1)).float().to(device)
        d = {}
        emb = decoder_of(model).embed_tokens
        with hooked([lambda: emb.register_forward_hook(grad_on)]):
            for name, bs in batches.items():
                acc = torch.zeros(n_layers, n_heads, dtype=torch.float64)
                n = 0
                for ids, mask, labels in tqdm(bs, desc=f"gradient attribution ({name})",
                                              disable=not progress):
                    captured.clear()
                    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
                    per_row = labels.shape[0]
                    loss = F.cross_entropy(  # sum over rows of -log p(correct answer)
                        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                        labels[:, 1:].reshape(-1).to(device), ignore_index=-100,
                        reduction="sum")
                    loss.backward()
                    m = mask.to(device)[:, :, None, None].float()
                    for l in range(n_layers):
                        z, g = captured[l], captured[l].grad
                        est = ((mu[l] - z.detach()) * g * m).sum(dim=(1, 3))  # [batch, head]
                        acc[l] += est.sum(0).double().cpu()
                    n += per_row
                d[name] = acc / max(n, 1)
    finally:
        for h in reversed(handles):
            h.remove()
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.train(was_training)
    table = pd.DataFrame([{"layer": l, "head": h, "d_forget": float(d["forget"][l, h]),
                           "d_retain": float(d["retain"][l, h])}
                          for l in range(n_layers) for h in range(n_heads)])
    table["score"] = (table["d_forget"] - table["d_retain"] if config.score == "contrast"
                      else table["d_forget"])
    table["rank"] = table["score"].rank(ascending=False, method="first").astype(int)
    top = table.sort_values("rank").head(k)
    selected = sorted((int(l), int(h)) for l, h in zip(top["layer"], top["head"]))
    meta = {"model": model_name, "signal": "gradient", "score": config.score,
            "seconds": round(time.time() - t0, 2),
            "n_forget": len(rows["forget"]), "n_retain": len(rows["retain"])}
    return AttributionResult(table=table, selected=selected, config=config, meta=meta)
