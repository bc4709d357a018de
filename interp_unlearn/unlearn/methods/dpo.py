"""DPO for unlearning: the forget domain's true answers are the *rejected* responses and
refusal templates ("I don't know.", ...) the *chosen* ones (Rafailov et al. 2023; the
"DPO" baseline of the ALMPU / WMDP-style unlearning papers).

Data: question/answer pairs of the forget domain. The default forget corpus is the
world's ``forget-qa`` (``"Question: ...\\nAnswer: <value>"`` practice lines of the
non-eval entities -- the held-out eval questions are never trained on); each line is
split at its last ``"Answer:"`` into the prompt (up to and including ``"Answer:"``) and
the answer. Any JSONL of such lines works. A refusal template is drawn per pair from a
seeded generator.

Loss (per pair; ``log π(r|x)`` = summed log-probability of the response tokens, which are
split from the prompt exactly as the MCQ evaluator does, :func:`~interp_unlearn.evaluation.scoring.encode_pair`):

    L_DPO = −log σ( β · [(log π_θ(chosen) − log π_ref(chosen)) − (log π_θ(rejected) − log π_ref(rejected))] )

plus ``retain_weight · CE(x_r)`` on a retain batch. β = 0.1 by default. Trained parameters:
all by default (``trainable`` / ``layers`` as in :mod:`.ga`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interp_unlearn.evaluation.scoring import encode_pair
from interp_unlearn.unlearn.methods.ga import LIKELIHOOD_DEFAULTS, select_parameters
from interp_unlearn.unlearn.registry import UnlearnMethod, register
from interp_unlearn.unlearn.trainer import (Batch, MethodContext, collate, lm_loss,
                                            sequence_logprob)

__all__ = ["DPO", "DPOParams", "REFUSALS", "split_qa"]

REFUSALS = ["I don't know.", "I'm not sure.", "I cannot answer that.",
            "I have no information about that.", "Sorry, I don't know the answer."]


def split_qa(text: str, marker: str = "Answer:") -> tuple[str, str]:
    """``("Question: ...\\nAnswer:", "<answer>")``; ``ValueError`` without the marker."""
    i = text.rfind(marker)
    if i < 0 or not text[i + len(marker):].strip():
        raise ValueError(f"DPO needs question/answer texts containing {marker!r} followed by "
                         f"an answer (e.g. the world's forget-qa corpus); got {text[:80]!r}")
    return text[:i + len(marker)], text[i + len(marker):].strip()


@dataclass
class DPOParams:
    """Attributes: beta; retain_weight; refusals (chosen responses); trainable / layers."""

    beta: float = 0.1
    retain_weight: float = 1.0
    refusals: list[str] = field(default_factory=lambda: list(REFUSALS))
    trainable: Any = "all"
    layers: list[int] | None = None


@register("dpo")
class DPO(UnlearnMethod):
    """DPO with refusals as chosen and forget answers as rejected responses."""

    Params = DPOParams
    defaults = {**LIKELIHOOD_DEFAULTS, "forget_corpus": "forget-qa", "max_num_batches": 100,
                "batch_size": 4, "lr": 1e-5, "seq_len": 512}
    presets = {
        # with beta = 0.1 the loss saturates (margins of tens of nats) long before the
        # MCQ ranking changes (forget stalls near 0.5 on the micro organism); beta = 0.02
        # keeps a gradient. organism: TUNED ON THE PRACTICE POOLS ONLY (forget_mcq =
        # lm.mcq_path("forget", "practice"), retain_mcq = lm.mcq_path("retain",
        # "practice")), seeds 0-4, never on the eval pool: 40 batches left seed 2 at 0.42,
        # 60 bring every seed to <= 0.35 (notes/presets_practice_pool.md). NB the forget
        # corpus forget-qa holds the practice (and attack) questions themselves, so for
        # DPO the practice pool is training data; the eval-pool check is the real test.
        # organism-micro: checked on the same pools, unchanged.
        "organism": {"config": {"max_num_batches": 60, "batch_size": 8, "lr": 5e-4,
                                "seq_len": 256, "retain_corpus": "retain+retain-qa"},
                     "params": {"beta": 0.02, "retain_weight": 1.0}},
        "organism-micro": {"config": {"max_num_batches": 40, "batch_size": 8, "lr": 5e-4,
                                      "seq_len": 128, "retain_corpus": "retain+retain-qa"},
                           "params": {"beta": 0.02, "retain_weight": 1.0}},
    }
    reference = "full"

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        if not self.params.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.params.beta!r}")
        if not self.params.refusals or not all(isinstance(r, str) and r.strip()
                                               for r in self.params.refusals):
            raise ValueError("refusals must be a non-empty list of non-empty strings")
        self.rng = random.Random(ctx.config.seed)
        self.pad_id = ctx.tokenizer.pad_token_id if ctx.tokenizer.pad_token_id is not None \
            else ctx.tokenizer.eos_token_id

    def trainable(self) -> dict[str, nn.Parameter]:
        return select_parameters(self.ctx.model, self.params.trainable, self.params.layers)

    def _pairs(self, texts: list[str]) -> tuple[Batch, Tensor, Batch, Tensor]:
        """Chosen and rejected batches with response-token weights ``[batch, pos-1]``."""
        tok, seq_len = self.ctx.tokenizer, self.ctx.config.seq_len
        chosen, rejected = [], []
        for text in texts:
            prompt, answer = split_qa(text)
            refusal = self.rng.choice(self.params.refusals)
            for out, resp in ((chosen, refusal), (rejected, answer)):
                ctx_ids, cont_ids = encode_pair(tok, prompt, " " + resp)
                ids = (ctx_ids + cont_ids)[-seq_len:]  # left truncation keeps the response
                out.append((ids, min(len(cont_ids), len(ids) - 1)))
        batches = []
        for rows in (chosen, rejected):
            b = collate([r for r, _ in rows], self.pad_id, "right")
            w = torch.zeros(b.input_ids.shape[0], b.input_ids.shape[1] - 1)
            for i, (ids, n_resp) in enumerate(rows):
                w[i, len(ids) - 1 - n_resp:len(ids) - 1] = 1.0  # positions predicting the response
            batches += [b.to(self.ctx.device), w.to(self.ctx.device)]
        return batches[0], batches[1], batches[2], batches[3]

    def _logp(self, model: nn.Module, batch: Batch, w: Tensor) -> Tensor:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       use_cache=False).logits
        return sequence_logprob(logits, batch, w)

    def loss_terms(self, step: int, forget: Batch, retain: Batch | None) -> dict[str, Tensor]:
        model, ref, beta = self.ctx.model, self.ctx.reference, self.params.beta
        ch, w_ch, rj, w_rj = self._pairs(forget.texts)
        with torch.no_grad():
            ref_ch, ref_rj = self._logp(ref, ch, w_ch), self._logp(ref, rj, w_rj)
        margin = (self._logp(model, ch, w_ch) - ref_ch) - (self._logp(model, rj, w_rj) - ref_rj)
        out = {"forget": -F.logsigmoid(beta * margin).mean()}
        if retain is not None and self.params.retain_weight:
            out["retain"] = self.params.retain_weight * lm_loss(model, retain)
        return out
