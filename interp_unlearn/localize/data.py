"""Phase-1 training data: which tokens of which texts the cross-entropy is taken over.

Each objective yields *rows* ``(token ids, n_context)``: the CE is taken over the tokens
at positions ``>= n_context`` (predicted from everything before them).

``corpus-ce`` (the paper, eq. 3)
    Plain documents (the world's forget documents, or given texts); ``n_context = 0``, so
    every token after the first is a target. Right-truncated to ``seq_len``.
``answer-ce`` (LoFiT's own objective)
    Q/A lines ``"Question: ...\\nAnswer: <answer>"``; the context is everything up to and
    including the last ``answer_marker``, the targets are the answer tokens only. Context
    and answer are tokenised separately and concatenated (as lm-eval splits context and
    continuation), so the mask is exact whatever the tokenizer merges. Left-truncated to
    ``seq_len`` so the answer survives. With a World: its forget Q/A in the evaluation
    phrasing for the entities of ``qa_pools`` -- the world's ``forget-qa`` lines of those
    pools (one line per fact).
``paraphrase-ce`` (new; not in the paper or LoFiT)
    As ``answer-ce``, on Q/A for the facts of ``qa_pools`` in question phrasings that occur
    nowhere in the world's corpora (:data:`PARAPHRASE_QUESTIONS`, two per attribute), so
    the organism has not memorised them. Why it exists: the organism was trained on the
    ``forget-qa`` lines too, so their answer-token CE is ~0.005 nats (practice pool), the
    memorised regime in which the L1 term dominates (``notes/e5_phase1_signal.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from interp_unlearn.data.world import FORGET_QUESTIONS, World
from interp_unlearn.localize.config import LocalizeConfig

__all__ = ["PARAPHRASE_QUESTIONS", "Row", "causal_lm_loss", "collate_rows", "forget_qa",
           "paraphrase_qa", "qa_rows", "training_rows"]

#: ``(token ids, n_context)``: CE targets are the positions ``>= n_context``.
Row = tuple[list[int], int]

#: Question phrasings of the forget attributes that no corpus of the world contains (the
#: world's own phrasing is :data:`interp_unlearn.data.world.FORGET_QUESTIONS`).
PARAPHRASE_QUESTIONS: dict[str, tuple[str, ...]] = {
    "host": ("What animal carries {e} in the wild?", "In which animals does {e} circulate?"),
    "route": ("By what route does {e} spread?", "How do people pick up {e}?"),
    "gene": ("What gene is responsible for the virulence of {e}?",
             "Which gene do researchers blame for the danger of {e}?"),
    "symptom": ("What sign do patients with {e} show?", "What does an infection with {e} cause?"),
    "region": ("In which place was {e} first isolated?", "Where did {e} first appear?"),
}


def forget_qa(world: World, pools: Sequence[str]) -> list[str]:
    """The world's forget Q/A lines (evaluation phrasing) for the entities of ``pools``,
    one per fact, in entity order (the ``forget-qa`` corpus restricted to ``pools``)."""
    return [f"Question: {FORGET_QUESTIONS[a].format(e=e.name)}\nAnswer: {v}"
            for e in world.entities_in("forget", tuple(pools)) for a, v in e.attributes.items()]


def paraphrase_qa(world: World, pools: Sequence[str]) -> list[str]:
    """Q/A lines in every phrasing of :data:`PARAPHRASE_QUESTIONS` for the forget facts of
    the entities of ``pools`` (two lines per fact)."""
    return [f"Question: {q.format(e=e.name)}\nAnswer: {v}"
            for e in world.entities_in("forget", tuple(pools)) for a, v in e.attributes.items()
            for q in PARAPHRASE_QUESTIONS[a]]


def _corpus_rows(tokenizer: Any, texts: Sequence[str], seq_len: int) -> list[Row]:
    rows = []
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=seq_len)["input_ids"]
        if len(ids) >= 2:  # one token predicts nothing
            rows.append((list(ids), 0))
    return rows


def qa_rows(tokenizer: Any, texts: Sequence[str], seq_len: int, marker: str = "Answer:"
            ) -> list[Row]:
    """Rows whose targets are the answer tokens of each Q/A text (see the module docstring).

    Raises:
        ValueError: a text without ``marker`` or with nothing after it (names its index).
    """
    rows = []
    for i, text in enumerate(texts):
        at = text.rfind(marker)
        if at < 0:
            raise ValueError(f"answer-ce: text {i} has no answer marker {marker!r} "
                             f"(expected 'Question: ...\\n{marker} <answer>'): {text[:80]!r}")
        context, answer = text[:at + len(marker)], text[at + len(marker):]
        if not answer.strip():
            raise ValueError(f"answer-ce: text {i} has an empty answer after {marker!r}")
        ctx = list(tokenizer(context)["input_ids"])
        ans = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
        ids = (ctx + ans)[-seq_len:]
        n_context = max(1, len(ids) - len(ans))  # position 0 is never a target
        if len(ids) - n_context >= 1:
            rows.append((ids, n_context))
    return rows


def training_rows(tokenizer: Any, corpus: World | Sequence[str], config: LocalizeConfig,
                  objective: str, seq_len: int) -> tuple[list[Row], str]:
    """``(rows, description of the source)`` for a resolved ``objective``."""
    if isinstance(corpus, World):
        if objective == "corpus-ce":
            pools = config.forget_pools
            texts = corpus.documents("forget", pools)
            where = "all pools" if pools is None else ", ".join(pools)
            return _corpus_rows(tokenizer, texts, seq_len), f"world forget documents ({where})"
        pools = ", ".join(config.qa_pools)
        if objective == "answer-ce":
            texts = forget_qa(corpus, config.qa_pools)
            source = f"world forget Q/A answer tokens ({pools})"
        else:
            texts = paraphrase_qa(corpus, config.qa_pools)
            source = f"world forget Q/A paraphrases, answer tokens ({pools})"
        return qa_rows(tokenizer, texts, seq_len, "Answer:"), source
    texts = list(corpus)
    if objective == "answer-ce":
        return qa_rows(tokenizer, texts, seq_len, config.answer_marker), "texts, answer tokens"
    return _corpus_rows(tokenizer, texts, seq_len), "texts"


def collate_rows(rows: Sequence[Row], pad_id: int
                 ) -> tuple[Int[Tensor, "b p"], Int[Tensor, "b p"], Int[Tensor, "b p"]]:
    """Right-padded ``(ids, attention mask, labels)``; ``labels`` is ``-100`` on padding
    and on each row's context positions (``< n_context``)."""
    width = max(len(ids) for ids, _ in rows)
    ids_t = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (ids, n_context) in enumerate(rows):
        ids_t[i, :len(ids)] = torch.tensor(ids)
        mask[i, :len(ids)] = 1
        labels[i, n_context:len(ids)] = torch.tensor(ids[n_context:], dtype=torch.long)
    return ids_t, mask, labels


def causal_lm_loss(logits: Float[Tensor, "b p v"], labels: Int[Tensor, "b p"]) -> Float[Tensor, ""]:
    """Mean next-token cross-entropy over the labelled (non ``-100``) targets, in float32."""
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                           labels[:, 1:].reshape(-1), ignore_index=-100)


# Kept for interp_unlearn.localize.attribution and benchmarks (plain texts, every token a target).
def _tokenize(tokenizer: Any, texts: Sequence[str], seq_len: int) -> list[list[int]]:
    return [ids for ids, _ in _corpus_rows(tokenizer, texts, seq_len)]


def _collate(rows: list[list[int]], pad_id: int) -> tuple[Int[Tensor, "b p"], Int[Tensor, "b p"],
                                                          Int[Tensor, "b p"]]:
    return collate_rows([(r, 0) for r in rows], pad_id)
