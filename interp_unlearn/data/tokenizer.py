"""Byte-level BPE tokenizer for the organism, trained offline with ``tokenizers``.

The tokenizer is trained on the world's *templates*, not its entity names: the
sentence and question templates are rendered with freshly drawn decoy names from the same
syllables, so merges learn syllables but no name of the world becomes a single token
(every entity name must span several tokens; :func:`train_tokenizer` checks it).
"""

from __future__ import annotations

import random

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from interp_unlearn.data import world as W

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def _tokenizer_corpus(world: "W.World", seed: int) -> list[str]:
    rng = random.Random(f"tok-{seed}")
    out = list(world.general_documents())
    decoy_taken: set[str] = set(world.names())
    for statements, questions, attrs, syl, suf in (
        (W.FORGET_STATEMENTS, W.FORGET_QUESTIONS, W.FORGET_ATTRIBUTES,
         W._PATHOGEN_SYLLABLES, W._PATHOGEN_SUFFIXES),
        (W.RETAIN_STATEMENTS, W.RETAIN_QUESTIONS, W.RETAIN_ATTRIBUTES,
         W._TOWN_SYLLABLES, W._TOWN_SUFFIXES),
    ):
        decoys = W._make_names(rng, 60, syl, suf, decoy_taken)
        for _ in range(12):
            for a, templates in statements.items():
                for t in templates:
                    out.append(t.format(e=rng.choice(decoys), v=rng.choice(attrs[a])))
                out.append(f"Question: {questions[a].format(e=rng.choice(decoys))}\n"
                           f"Answer: {rng.choice(attrs[a])}")
    # lm-eval's lettered prompt, so real-model-style evaluation tokenises sensibly too.
    out += ["The following are multiple choice questions (with answers) about biology.\n\n"
            "A. B. C. D. Answer: A Answer: B Answer: C Answer: D"] * 20
    return out


def train_tokenizer(world: "W.World", vocab_size: int, seed: int = 0) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on the world's templates and return it as a
    ``PreTrainedTokenizerFast`` (eos = bos = ``<|endoftext|>``, its own pad token, no BOS
    added automatically — like GPT-2)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS, PAD], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_tokenizer_corpus(world, seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS,
                                   unk_token=EOS, pad_token=PAD)
    single = [n for n in world.names() if len(fast(" " + n)["input_ids"]) < 2
              or len(fast(n)["input_ids"]) < 2]
    if single:
        raise ValueError(f"{len(single)} entity names are single tokens (e.g. {single[:3]}); "
                         f"lower vocab_size (now {vocab_size})")
    return fast
