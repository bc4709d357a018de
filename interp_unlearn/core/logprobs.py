"""Token log-probabilities of continuations, tokenized and batched exactly as lm-eval 0.4.13's
``HFLM`` does (``_encode_pair``, ``tok_encode``, ``_loglikelihood_tokens``).

The ground-floor half of the evaluator: ``(context, continuation)`` string pairs ->
:func:`tokenize_requests` -> :func:`make_batches` -> (any logits: the model's,
:func:`forward_logits`, or a logit lens's) -> :func:`continuation_logprobs`.
:func:`~interp_unlearn.core.request_scoring.score_requests` runs the whole chain on a
model, each distinct context once. Prompts, MCQ scoring and results
live in :mod:`interp_unlearn.evaluation.scoring`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["Batch", "TokenizedRequest", "continuation_logprobs", "encode_pair",
           "forward_logits", "make_batches", "model_device", "output_logits", "pad_id",
           "resolve_max_length", "tok_encode", "tokenize_requests"]

# lm-eval's fallbacks when neither the model config nor the tokenizer give a length.
_DEFAULT_MAX_LENGTH = 2048
_TOKENIZER_INFINITY = 1000000000000000019884624838656


def _prefix_token_id(tokenizer: Any) -> int | None:
    """HFLM.prefix_token_id: BOS, else EOS (used for empty contexts and BOS detection)."""
    if getattr(tokenizer, "bos_token_id", None) is not None:
        return tokenizer.bos_token_id
    return getattr(tokenizer, "eos_token_id", None)


def tok_encode(tokenizer: Any, string: str, add_special_tokens: bool | None = None,
               add_bos_token: bool | None = None) -> list[int]:
    """``HFLM.tok_encode``: ``add_special_tokens`` if given, else ``add_bos_token`` if
    given, else the tokenizer's default -- except that a string already starting with
    the decoded prefix (BOS) token is encoded with ``add_special_tokens=False``."""
    if add_special_tokens is not None:
        kwargs: dict[str, bool] = {"add_special_tokens": add_special_tokens}
    elif add_bos_token is not None:
        kwargs = {"add_special_tokens": add_bos_token}
    else:
        kwargs = {}
    prefix_id = _prefix_token_id(tokenizer)
    if add_special_tokens is None and prefix_id is not None and string.startswith(
            tokenizer.decode(prefix_id)):
        kwargs["add_special_tokens"] = False
    return list(tokenizer.encode(string, **kwargs))


def encode_pair(tokenizer: Any, context: str, continuation: str,
                add_bos_token: bool | None = None) -> tuple[list[int], list[int]]:
    """Token ids ``(context_enc, continuation_enc)`` exactly as lm-eval's causal-LM
    ``loglikelihood``: whitespace at the end of the context moves to the start of the
    continuation; ``continuation_enc = enc(context + continuation)[len(enc(context)):]``
    (so a merge across the boundary, or an EOS the tokenizer appends, ends up in the
    continuation exactly as in lm-eval); an empty context becomes the prefix token."""
    if context == "":
        cont = tok_encode(tokenizer, continuation, add_special_tokens=False,
                          add_bos_token=add_bos_token)
        prefix_id = _prefix_token_id(tokenizer)
        if not cont:
            raise ValueError(f"continuation {continuation!r} encodes to no tokens")
        if prefix_id is None:
            raise ValueError("empty context needs a BOS or EOS token to condition on")
        return ([prefix_id], cont) if prefix_id != cont[0] else (cont[:1], cont[1:])
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tok_encode(tokenizer, context + continuation, add_bos_token=add_bos_token)
    context_enc = tok_encode(tokenizer, context, add_bos_token=add_bos_token)
    return context_enc, whole[len(context_enc):]


@dataclass(frozen=True)
class TokenizedRequest:
    """One scored row: the model input (already left-truncated, last token dropped) and
    the continuation tokens, which are predicted by the last ``len(continuation)``
    positions of ``input_ids``."""

    input_ids: tuple[int, ...]
    continuation: tuple[int, ...]
    #: the context lost leading tokens to ``max_length`` (left truncation, as lm-eval)
    truncated: bool = field(default=False, compare=False)


def resolve_max_length(model: Any, tokenizer: Any = None) -> int:
    """The context length lm-eval's HFLM would use: the model config's ``n_positions``,
    ``max_position_embeddings`` or ``n_ctx`` (a nested ``text_config`` first), then a
    TransformerLens ``cfg.n_ctx``, then ``tokenizer.model_max_length`` unless unset,
    then 2048."""
    config = getattr(model, "config", None)
    cfg = getattr(config, "text_config", None) or config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, attr, None)
        if value is not None:
            return int(value)
    value = getattr(getattr(model, "cfg", None), "n_ctx", None)  # TransformerLens
    if value is not None:
        return int(value)
    value = getattr(tokenizer, "model_max_length", None)
    if value is not None and value != _TOKENIZER_INFINITY:
        return int(value)
    return _DEFAULT_MAX_LENGTH


def _encode_many(tokenizer: Any, strings: Sequence[str],
                 add_bos_token: bool | None) -> dict[str, list[int]]:
    """:func:`tok_encode` of each distinct string, in one batched tokenizer call per
    ``add_special_tokens`` setting (a tokenizer without ``__call__`` is asked one by one)."""
    unique = list(dict.fromkeys(strings))
    if not callable(tokenizer):
        return {s: tok_encode(tokenizer, s, add_bos_token=add_bos_token) for s in unique}
    prefix_id = _prefix_token_id(tokenizer)
    prefix = tokenizer.decode(prefix_id) if prefix_id is not None else None
    default = True if add_bos_token is None else add_bos_token  # encode()'s default: True
    by_flag: dict[bool, list[str]] = {True: [], False: []}
    for string in unique:
        starts = prefix is not None and string.startswith(prefix)
        by_flag[False if starts else default].append(string)
    out: dict[str, list[int]] = {}
    for flag, batch in by_flag.items():
        if batch:
            ids = tokenizer(batch, add_special_tokens=flag)["input_ids"]
            out.update(zip(batch, (list(i) for i in ids)))
    return out


def tokenize_requests(tokenizer: Any, requests: Sequence[tuple[str, str]], max_length: int,
                      add_bos_token: bool | None = None) -> list[TokenizedRequest]:
    """Encode ``(context, continuation)`` pairs (:func:`encode_pair`) and build model
    inputs like ``HFLM._loglikelihood_tokens``: ``(context + continuation)`` keeps its
    last ``max_length + 1`` tokens (left truncation) and drops the final token.

    Each distinct string is encoded once, in batched tokenizer calls; the result is
    :func:`encode_pair`'s, request by request."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be a positive int, got {max_length!r}")
    split: list[tuple[str, str] | None] = []
    for context, continuation in requests:
        if context == "":
            split.append(None)  # the prefix-token case: encode_pair, one by one
            continue
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        split.append((context, continuation))
    encoded = _encode_many(tokenizer, [s for pair in split if pair is not None
                                       for s in (pair[0], pair[0] + pair[1])], add_bos_token)
    out = []
    for i, ((context, continuation), pair) in enumerate(zip(requests, split)):
        if pair is None:
            ctx, cont = encode_pair(tokenizer, context, continuation, add_bos_token)
        else:
            ctx = encoded[pair[0]]
            cont = encoded[pair[0] + pair[1]][len(ctx):]
        if not ctx or not cont:
            raise ValueError(f"request {i}: context {context!r} / continuation "
                             f"{continuation!r} encode to {len(ctx)} / {len(cont)} tokens; "
                             "both must be non-empty")
        if len(cont) > max_length:
            raise ValueError(f"request {i}: continuation has {len(cont)} tokens, more than "
                             f"max_length={max_length}")
        inp = (ctx + cont)[-(max_length + 1):][:-1]
        out.append(TokenizedRequest(tuple(inp), tuple(cont),
                                    truncated=len(ctx) + len(cont) > max_length + 1))
    return out


@dataclass
class Batch:
    """Right-padded model inputs for a set of requests.

    ``request_idx[r]`` is the index (in the list given to :func:`make_batches`) of row
    ``r``; the continuation of row ``r`` is ``cont_tokens[r, :cont_lengths[r]]`` and is
    predicted by positions ``input_lengths[r] - cont_lengths[r] ... input_lengths[r] - 1``.
    """

    input_ids: Int[Tensor, "rows pos"]
    attention_mask: Int[Tensor, "rows pos"]
    input_lengths: Int[Tensor, " rows"]
    cont_tokens: Int[Tensor, "rows cont"]
    cont_lengths: Int[Tensor, " rows"]
    request_idx: Int[Tensor, " rows"]

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(*(t.to(device) for t in (self.input_ids, self.attention_mask,
                                               self.input_lengths, self.cont_tokens,
                                               self.cont_lengths, self.request_idx)))

    @property
    def n_rows(self) -> int:
        return self.input_ids.shape[0]


def make_batches(requests: Sequence[TokenizedRequest], batch_size: int, pad_id: int,
                 sort_by_length: bool = True) -> Iterator[Batch]:
    """Group requests into right-padded batches of at most ``batch_size`` rows.

    With ``sort_by_length`` (like lm-eval) rows are ordered longest first to minimise
    padding; ``Batch.request_idx`` maps rows back to ``requests``. Right padding leaves a
    causal model's outputs at the real positions unchanged.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    order = list(range(len(requests)))
    if sort_by_length:
        order.sort(key=lambda i: -len(requests[i].input_ids))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        rows = [requests[i] for i in idx]
        width = max(len(r.input_ids) for r in rows)
        cont_width = max(len(r.continuation) for r in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        cont_tokens = torch.zeros((len(rows), cont_width), dtype=torch.long)
        for r, req in enumerate(rows):
            input_ids[r, :len(req.input_ids)] = torch.tensor(req.input_ids)
            attention_mask[r, :len(req.input_ids)] = 1
            cont_tokens[r, :len(req.continuation)] = torch.tensor(req.continuation)
        yield Batch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            input_lengths=torch.tensor([len(r.input_ids) for r in rows], dtype=torch.long),
            cont_tokens=cont_tokens,
            cont_lengths=torch.tensor([len(r.continuation) for r in rows], dtype=torch.long),
            request_idx=torch.tensor(idx, dtype=torch.long),
        )


def forward_logits(model: Any, batch: Batch) -> Float[Tensor, "rows pos vocab"]:
    """``model(input_ids=..., attention_mask=...)`` as logits (:func:`output_logits`)."""
    return output_logits(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask))


def output_logits(out: Any) -> Float[Tensor, "rows pos vocab"]:
    """The logits of a model's output: a tensor (TransformerLens) or an object / dict with
    ``logits`` (transformers)."""
    if isinstance(out, Tensor):
        return out
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, dict):
        logits = out.get("logits")
    if not isinstance(logits, Tensor):
        raise TypeError(f"model returned {type(out).__name__}; expected a logits tensor "
                        "or an object with a .logits tensor")
    return logits


def continuation_logprobs(logits: Float[Tensor, "rows pos vocab"],
                          batch: Batch) -> Float[Tensor, " rows"]:
    """Summed log-probability of each row's continuation (float32).

    Only the positions that predict continuation tokens are log-softmaxed (in float32),
    so memory stays ``rows x cont x vocab``. If ``logits`` has more positions than the
    batch input (e.g. prepended virtual tokens), the extra ones are taken to be on the
    left, as lm-eval does.
    """
    if logits.ndim != 3:
        raise ValueError(f"logits must be [rows, pos, vocab], got shape {tuple(logits.shape)}")
    rows, pos, vocab = logits.shape
    if rows != batch.n_rows:
        raise ValueError(f"logits have {rows} rows but the batch has {batch.n_rows}")
    offset = pos - batch.input_ids.shape[1]
    if offset < 0:
        raise ValueError(f"logits have {pos} positions, fewer than the batch's "
                         f"{batch.input_ids.shape[1]}")
    device = logits.device
    cont_tokens = batch.cont_tokens.to(device)
    cont_lengths = batch.cont_lengths.to(device)
    if int(cont_tokens.max()) >= vocab:
        raise ValueError(f"continuation token id {int(cont_tokens.max())} is outside the "
                         f"logits' vocabulary of {vocab}")
    steps = torch.arange(cont_tokens.shape[1], device=device)
    valid = steps[None, :] < cont_lengths[:, None]  # [rows, cont]
    # position p predicts token p + 1: the continuation's logits end at input_length - 1
    first = batch.input_lengths.to(device) + offset - cont_lengths
    positions = torch.where(valid, first[:, None] + steps[None, :], 0)
    selected = logits[torch.arange(rows, device=device)[:, None], positions]  # [rows, cont, vocab]
    logprobs = F.log_softmax(selected.float(), dim=-1)
    token_lp = logprobs.gather(-1, cont_tokens[..., None]).squeeze(-1)
    return torch.where(valid, token_lp, 0.0).sum(-1)


def model_device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def pad_id(tokenizer: Any) -> int:
    """The id used to pad batches: the tokenizer's pad token, else EOS, else 0."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0
