"""Score tokenized requests with each distinct context run through the model once.

:func:`score_requests` returns the same summed continuation log-probabilities as scoring
every ``(context, continuation)`` row on its own (lm-eval's ``_loglikelihood_tokens``),
with less work:

* **shared inputs** -- requests whose model inputs are identical (the four letter
  requests of a ``wmdp_bio`` question: same context, one-token continuations ``" A"`` ..
  ``" D"``) are one row; each request reads its own token's log-probability from it
  (lm-eval's "logits cache" does the same for one-token continuations).
* **shared prefixes** -- requests that share a context but have multi-token continuations
  (cloze: the four answer texts) run the context once with the key/value cache, then only
  the continuation tokens, four rows per context, attending to that cache. This needs a
  Hugging Face model (``transformers.PreTrainedModel``, or a PEFT model around one); any
  other callable (a TransformerLens bridge adapter, a plain function of ``input_ids``) is
  scored with shared inputs only.

Each request is split as ``input_ids = prefix + suffix``: the prefix is the context up to
the token that predicts the first continuation token (left-truncated exactly as
:func:`~interp_unlearn.core.logprobs.tokenize_requests` truncated it), the suffix the
continuation's remaining input tokens (``continuation[:-1]``). Without the cache the
suffix stays in the prefix. The last ``m`` positions of the prefix predict the first
``m`` continuation tokens (``m = 1`` with the cache, ``len(continuation)`` without); the
suffix positions predict the rest.

Numerically the cached path differs from a single forward pass only by float rounding
(~1e-6 in float32); ``tests/unit/evaluation/test_lmeval_parity.py`` checks per-question
agreement with lm-eval itself, ``benchmarks/eval_vs_lmeval.py`` the speed.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from interp_unlearn.core.logprobs import TokenizedRequest, model_device, output_logits

__all__ = ["score_requests", "supports_prefix_cache"]


def _hf_base(model: Any) -> Any:
    """The ``transformers.PreTrainedModel`` behind ``model`` (itself, or a PEFT model's
    base), else ``None``."""
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a dependency
        return None
    if isinstance(model, PreTrainedModel):
        return model
    get_base = getattr(model, "get_base_model", None)
    base = get_base() if callable(get_base) else None
    return base if isinstance(base, PreTrainedModel) else None


def supports_prefix_cache(model: Any) -> bool:
    """Whether ``model`` is a Hugging Face causal LM (or a PEFT model around one) whose
    forward takes a key/value cache -- the models :func:`score_requests` runs with a shared
    prefix."""
    return _forward_options(model)["cache"] is not None


def _forward_options(model: Any) -> dict[str, Any]:
    """How to call a Hugging Face forward: the cache keyword (``cache`` from transformers
    5.2x, ``past_key_values`` before; None: not a cacheable HF decoder) and whether it
    takes ``logits_to_keep`` (only the positions that are read go through the unembedding)."""
    base = _hf_base(model)
    if base is None or getattr(base.config, "is_encoder_decoder", False):
        return {"cache": None, "logits_to_keep": False}
    params = inspect.signature(base.forward).parameters
    name = "cache" if "cache" in params else "past_key_values" if "past_key_values" in params \
        else None
    return {"cache": name, "logits_to_keep": "logits_to_keep" in params}


@dataclass
class _Prefix:
    """One distinct prefix and the requests that read from it."""

    tokens: tuple[int, ...]
    requests: list[int] = field(default_factory=list)  # indices into the unique requests


def _split(req: TokenizedRequest, cached: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if not cached:
        return req.input_ids, ()
    cut = len(req.input_ids) - len(req.continuation) + 1
    return req.input_ids[:cut], req.input_ids[cut:]


def _padded(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, mask, torch.tensor([len(r) for r in rows], dtype=torch.long)


def _read(logits: Tensor, positions: Tensor, tokens: Tensor, valid: Tensor) -> Tensor:
    """Summed log-probabilities of ``tokens [n, k]`` at ``positions [n, k]`` of the rows of
    ``logits [n, pos, vocab]`` (float32 log-softmax of just those positions)."""
    vocab = logits.shape[-1]
    if int(tokens.max()) >= vocab:
        raise ValueError(f"continuation token id {int(tokens.max())} is outside the logits' "
                         f"vocabulary of {vocab}")
    rows = torch.arange(logits.shape[0], device=logits.device)[:, None]
    lp = F.log_softmax(logits[rows, positions].float(), dim=-1)
    token_lp = lp.gather(-1, tokens[..., None]).squeeze(-1)
    return torch.where(valid, token_lp, 0.0).sum(-1)


def _groups(prefixes: list[_Prefix], loads: list[int], rows: int) -> list[list[int]]:
    """Prefix indices in forward-pass groups, longest first (as lm-eval batches, so that
    padding is small): a group's prefixes fit in ``rows`` and so do its suffix rows."""
    order = sorted(range(len(prefixes)), key=lambda p: -len(prefixes[p].tokens))
    groups: list[list[int]] = []
    current: list[int] = []
    load = 0
    for p in order:
        if current and (len(current) + 1 > rows or load + loads[p] > rows):
            groups.append(current)
            current, load = [], 0
        current.append(p)
        load += loads[p]
    if current:
        groups.append(current)
    return groups


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


#: what one forward call costs beyond its tokens, in token-rows (a CPU forward of a small
#: model costs about as much as ~30 more token positions); it keeps groups from shattering
CALL_COST_TOKENS = 32


def _shared_groups(prefixes: list[_Prefix], loads: list[int],
                   rows: int) -> list[tuple[list[int], int]]:
    """Groups of prefixes that share a leading run of tokens, each with that run's length.

    The prefixes are sorted lexicographically (so that those sharing a start are
    neighbours) and cut into consecutive groups by dynamic programming, minimising the
    token-rows computed: per group, one row for the shared run plus ``size x (longest
    prefix - shared run)`` for the padded rest, plus :data:`CALL_COST_TOKENS` per forward
    call. A group holds at most ``rows`` prefixes and ``rows`` suffix rows; its shared run
    leaves every prefix at least one token of its own.
    """
    order = sorted(range(len(prefixes)), key=lambda p: prefixes[p].tokens)
    toks = [prefixes[p].tokens for p in order]
    n = len(order)
    neighbour = [_lcp(toks[k - 1], toks[k]) for k in range(1, n)]  # lcp of k and k + 1
    inf = float("inf")
    best = [0.0] + [inf] * n
    cut = [0] * (n + 1)
    shared_of = [0] * (n + 1)
    lengths = [len(t) for t in toks]
    group_loads = [loads[p] for p in order]
    call = CALL_COST_TOKENS
    for j in range(1, n + 1):  # best[j]: the first j prefixes grouped
        shared, longest, shortest, load = 1 << 30, 0, 1 << 30, 0
        for i in range(j - 1, max(-1, j - 1 - rows), -1):  # group = order[i:j]
            load += group_loads[i]
            if load > rows and i < j - 1:
                break
            length = lengths[i]
            if length > longest:
                longest = length
            if length < shortest:
                shortest = length
            if i < j - 1 and neighbour[i] < shared:
                shared = neighbour[i]
            size = j - i
            run = 0 if size == 1 else min(shared, shortest - 1)
            cost = best[i] + size * (longest - run) + call + (run + call if run else 0)
            if cost < best[j]:
                best[j], cut[j], shared_of[j] = cost, i, run
    out: list[tuple[list[int], int]] = []
    j = n
    while j > 0:
        out.append((order[cut[j]:j], shared_of[j]))
        j = cut[j]
    return out[::-1]


def _call(model: Any, options: dict[str, Any], keep: int, **kwargs: Any) -> tuple[Tensor, Any]:
    """``model(**kwargs)`` -> (logits of the last ``keep`` positions, the cache or None)."""
    if options["logits_to_keep"]:
        kwargs["logits_to_keep"] = keep
    out = model(**kwargs)
    logits = output_logits(out)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    return logits, cache


def _prefix_pass(model: Any, options: dict[str, Any], group: list[int], shared: int,
                 prefixes: list[_Prefix], unique: Sequence[TokenizedRequest],
                 suffixes: list[tuple[int, ...]], pad_id: int, device: torch.device,
                 scores: Tensor) -> Any:
    """Run a group's prefixes (their first ``shared`` tokens once, through the cache);
    put each request's first-``m``-token log-probabilities in ``scores``; return what the
    suffix pass needs (``None`` without a cache)."""
    cached = options["cache"] is not None
    ids, mask, lengths = _padded([prefixes[p].tokens[shared:] for p in group], pad_id)
    kwargs: dict[str, Any] = {"input_ids": ids.to(device)}
    if cached:
        kwargs["use_cache"] = True
    if shared:
        _, cache = _call(model, options, 1, use_cache=True, input_ids=torch.tensor(
            [prefixes[group[0]].tokens[:shared]], device=device))
        cache.reorder_cache(torch.zeros(len(group), dtype=torch.long, device=device))
        mask = torch.cat([torch.ones((len(group), shared), dtype=torch.long), mask], dim=1)
        kwargs[options["cache"]] = cache
        kwargs["position_ids"] = (shared + torch.arange(ids.shape[1]))[None].expand(
            len(group), -1).to(device)
    kwargs["attention_mask"] = mask.to(device)
    req_rows = [row for row, p in enumerate(group) for _ in prefixes[p].requests]
    req_idx = [r for p in group for r in prefixes[p].requests]
    m = torch.tensor([len(unique[r].continuation) - len(suffixes[r]) for r in req_idx])
    first = lengths[req_rows] - m  # the position (in the rest) predicting the first token
    width = ids.shape[1]
    logits, cache = _call(model, options, width - int(first.min()), **kwargs)
    offset = logits.shape[1] - width  # logits cover positions [-offset, width) of the rest
    steps = torch.arange(int(m.max()))
    valid = steps[None, :] < m[:, None]
    positions = torch.where(valid, first[:, None] + offset + steps[None, :], 0)
    if int(positions.min()) < 0:
        raise ValueError(f"the model returned logits for {logits.shape[1]} positions; "
                         f"{-int(positions.min())} more are needed")
    tokens = torch.zeros(valid.shape, dtype=torch.long)
    for i, r in enumerate(req_idx):
        tokens[i, :int(m[i])] = torch.tensor(unique[r].continuation[:int(m[i])])
    dev = logits.device
    lp = _read(logits[torch.tensor(req_rows, device=dev)], positions.to(dev), tokens.to(dev),
               valid.to(dev))
    scores[torch.tensor(req_idx)] = lp.float().cpu()
    return (cache, mask, lengths + shared) if cached else None


def _suffix_pass(model: Any, options: dict[str, Any], group: list[int],
                 prefixes: list[_Prefix], unique: Sequence[TokenizedRequest],
                 suffixes: list[tuple[int, ...]], pad_id: int, device: torch.device,
                 state: Any, scores: Tensor) -> None:
    """Run every suffix of a group's requests on its prefix's cache (one row each); add
    the log-probabilities of the continuation tokens they predict to ``scores``."""
    cache, prefix_mask, prefix_lengths = state
    rows = [row for row, p in enumerate(group) for r in prefixes[p].requests if suffixes[r]]
    idx = [r for p in group for r in prefixes[p].requests if suffixes[r]]
    if not idx:
        return
    if cache is None:
        raise TypeError(f"{type(model).__name__} returned no key/value cache; score it with "
                        "share_prefix=False")
    ids, mask, lengths = _padded([suffixes[r] for r in idx], pad_id)
    rows_t = torch.tensor(rows, dtype=torch.long)
    cache.reorder_cache(rows_t.to(device))  # one copy of the prefix's cache per suffix row
    width = ids.shape[1]
    logits, _ = _call(model, options, width, **{
        "input_ids": ids.to(device),
        "attention_mask": torch.cat([prefix_mask[rows_t], mask], dim=1).to(device),
        "position_ids": (prefix_lengths[rows_t][:, None] + torch.arange(width)).to(device),
        options["cache"]: cache, "use_cache": True})
    steps = torch.arange(width)
    valid = steps[None, :] < lengths[:, None]
    tokens = torch.zeros(valid.shape, dtype=torch.long)
    for i, r in enumerate(idx):
        tokens[i, :len(suffixes[r])] = torch.tensor(unique[r].continuation[-len(suffixes[r]):])
    positions = torch.where(valid, steps[None, :], 0) + (logits.shape[1] - width)
    dev = logits.device
    scores[torch.tensor(idx)] += _read(logits, positions.to(dev), tokens.to(dev),
                                       valid.to(dev)).float().cpu()


def score_requests(model: Any, requests: Sequence[TokenizedRequest], batch_size: int,
                   pad_id: int, progress: bool = False, share_prefix: bool | None = None
                   ) -> Float[Tensor, " requests"]:
    """Summed continuation log-probabilities of ``requests`` (in their order), at most
    ``batch_size`` rows per forward pass, under ``torch.inference_mode()`` (``no_grad``
    for a DeepSpeed ZeRO-3 model).

    Identical requests are scored once (so they tie exactly, as under lm-eval's logits
    cache); requests with identical inputs share one row; with ``share_prefix`` (default:
    whenever :func:`supports_prefix_cache`) requests sharing a context run it once through
    the key/value cache. An ``nn.Module`` is put in eval mode for the call and restored.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    options = _forward_options(model)
    if share_prefix and options["cache"] is None:
        raise ValueError(f"share_prefix=True needs a Hugging Face causal LM; got "
                         f"{type(model).__name__}")
    if share_prefix is False:
        options["cache"] = None
    cached = options["cache"] is not None
    unique = list(dict.fromkeys(requests))
    position = {req: i for i, req in enumerate(unique)}
    prefixes: list[_Prefix] = []
    by_tokens: dict[tuple[int, ...], int] = {}
    suffixes: list[tuple[int, ...]] = []
    for r, req in enumerate(unique):
        if not req.input_ids or not req.continuation:
            raise ValueError(f"request {r} has {len(req.input_ids)} input and "
                             f"{len(req.continuation)} continuation tokens; both must be > 0")
        prefix, suffix = _split(req, cached)
        suffixes.append(suffix)
        p = by_tokens.setdefault(prefix, len(prefixes))
        if p == len(prefixes):
            prefixes.append(_Prefix(prefix))
        prefixes[p].requests.append(r)
    scores = torch.full((len(unique),), float("nan"), dtype=torch.float32)
    loads = [max(1, sum(1 for r in pr.requests if suffixes[r])) for pr in prefixes]
    if not unique:
        groups: list[tuple[list[int], int]] = []
    elif cached:
        groups = _shared_groups(prefixes, loads, batch_size)
    else:
        groups = [(g, 0) for g in _groups(prefixes, loads, batch_size)]
    device = model_device(model)
    was_training = isinstance(model, torch.nn.Module) and model.training
    if was_training:
        model.eval()
    # a DeepSpeed ZeRO-3 model gathers its parameters in the forward: inference tensors
    # would stay in them and refuse gradients afterwards, hence no_grad for it
    partitioned = isinstance(model, torch.nn.Module) and any(
        hasattr(p, "ds_id") for p in model.parameters())
    try:
        with torch.no_grad() if partitioned else torch.inference_mode():
            for group, shared in tqdm(groups, disable=not progress, desc="Scoring MCQ"):
                state = _prefix_pass(model, options, group, shared, prefixes, unique,
                                     suffixes, pad_id, device, scores)
                if cached:
                    _suffix_pass(model, options, group, prefixes, unique, suffixes, pad_id,
                                 device, state, scores)
    finally:
        if was_training:
            model.train()
    return scores[torch.tensor([position[req] for req in requests], dtype=torch.long)]
