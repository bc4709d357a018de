"""Unlearning depth: how much of the knowledge is gone from the *inside* of the model.

The Unlearning Depth Score (UDS; Lee, Kim, Jo, arXiv 2605.24614; reference code
``gnueaj/unlearning-depth-score``, ``compute_uds.py``) patches activations into the
**full** (original) model, one layer at a time, and measures the log-probability of the
answer:

* ``Δ1_ℓ`` (stage 1) = ``log p_full(answer)`` − the same with layer ℓ's output
  (``hook_resid_post``) patched from the **reference** model that never learned the
  knowledge (our never-learned twin);
* ``Δ2_ℓ`` (stage 2) = the same with layer ℓ's output patched from the **unlearned** model;
* knowledge-encoding layers ``FT = {ℓ : Δ1_ℓ > τ}``, ``τ = 0.05``;
* ``UDS = Σ_FT Δ1_ℓ · clip(Δ2_ℓ / Δ1_ℓ, 0, 1) / Σ_FT Δ1_ℓ`` -- per question, then the mean
  over the questions that have at least one FT layer (the others are counted and
  reported, not scored).

0 = the unlearned model's activations carry the knowledge as the original's do (shallow
or no unlearning); 1 = they are as free of it as the never-learned model's.

Choices, as the reference makes them (``compute_uds.py``): teacher forcing on
``prompt + answer``; the score is the **mean** log-probability of the answer tokens
(its ``entity`` span; here the whole answer, which is short); the patched positions are
those whose logits predict the answer tokens (``patch_scope="span"``: from the last
prompt position to the one before the last answer token); the source activations come
from the same input run through the source model; all layers; ``τ = 0.05``; per-example
UDS averaged over the examples with an FT layer. Adapted to MCQ files: the prompt is the
cloze prompt ``Question: {q}\\nAnswer:`` and the answer is ``" " + the correct choice``,
encoded as lm-eval encodes a continuation.

Deviation (on purpose): the reference patches ``output_hidden_states[ℓ + 1]`` into layer
ℓ's output; for the **last** layer Hugging Face returns that state *after* the final norm,
so the reference patches a normalised vector into an un-normalised position there. We
capture every layer's own output with a forward hook (the true ``hook_resid_post``).

The per-head variant (not in the reference) patches one head's ``hook_z`` (the input of
its attention output projection) at the same positions, giving ``Δ1``, ``Δ2`` and the
erasure ratio per head -- a ``[layers, heads]`` depth map -- and a UDS over the heads with
``Δ1 > τ``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from interp_unlearn.core.arch import decoder_layers, layer_output, replace_layer_output
from interp_unlearn.core.bridge import model_dims
from interp_unlearn.core.config import ConfigBase
from interp_unlearn.core.hooks import hooked
from interp_unlearn.core.logprobs import encode_pair
from interp_unlearn.core.mcq import MCQ
from interp_unlearn.evaluation.scoring import cloze_prompt
from interp_unlearn.interventions.hf_hooks import head_hooks

__all__ = ["TAU", "DepthConfig", "depth_scores", "uds_from_deltas"]

#: the reference's ``delta_threshold``
TAU = 0.05


@dataclass
class DepthConfig(ConfigBase):
    """``tau``: knowledge-encoding threshold on ``Δ1`` (nats of mean answer log-prob);
    ``scope``: the patched positions -- ``span`` (the reference's: the positions whose
    logits predict the answer) or ``all`` (every position of prompt and answer, so that
    knowledge read from the question's tokens by later attention is patched too);
    ``heads``: also the per-head map (2 x layers x heads patched forwards per batch);
    ``batch_size``: questions per forward pass; ``max_questions``: a seeded sample (None:
    all)."""

    tau: float = TAU
    scope: str = "span"
    heads: bool = False
    batch_size: int = 16
    max_questions: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.tau, (int, float)) and math.isfinite(self.tau) and self.tau >= 0):
            raise ValueError(f"tau must be a finite number >= 0, got {self.tau!r}")
        if self.scope not in ("span", "all"):
            raise ValueError(f"scope must be 'span' or 'all', got {self.scope!r}")
        if isinstance(self.batch_size, bool) or int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size!r}")


def uds_from_deltas(d1: np.ndarray, d2: np.ndarray, tau: float = TAU) -> np.ndarray:
    """Per-example UDS from ``Δ1``, ``Δ2`` of shape ``[examples, units]`` (NaN where an
    example has no unit with ``Δ1 > tau``)."""
    d1, d2 = np.asarray(d1, dtype=float), np.asarray(d2, dtype=float)
    ft = d1 > tau
    ratio = np.clip(np.divide(d2, d1, out=np.zeros_like(d1), where=ft), 0.0, 1.0)
    den = np.where(ft, d1, 0.0).sum(axis=1)
    num = np.where(ft, d1 * ratio, 0.0).sum(axis=1)
    return np.divide(num, den, out=np.full_like(den, np.nan), where=den > 0)


# ------------------------------------------------------------------------------ batches


def _rows(tokenizer: Any, items: Sequence[MCQ]) -> list[tuple[list[int], int]]:
    """``(ids, n_answer)`` per question: the cloze prompt + the correct answer."""
    rows = []
    for it in items:
        ctx, cont = encode_pair(tokenizer, cloze_prompt(it), " " + it.choices[it.answer])
        rows.append((ctx + cont, len(cont)))
    return rows


def _batch(rows: list[tuple[list[int], int]], pad: int, device: Any
           ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Right-padded ``ids, mask``; ``pos`` [rows, max_answer] = the positions predicting
    the answer tokens (padded with the last one) and ``valid`` [rows, max_answer]."""
    n, width = len(rows), max(len(r[0]) for r in rows)
    k = max(r[1] for r in rows)
    ids = torch.full((n, width), pad, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    pos = torch.zeros((n, k), dtype=torch.long)
    valid = torch.zeros((n, k), dtype=torch.bool)
    for i, (r, m) in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
        start = len(r) - m - 1  # the last prompt position predicts the first answer token
        pos[i, :m] = torch.arange(start, start + m)
        pos[i, m:] = start + m - 1
        valid[i, :m] = True
    return ids.to(device), mask.to(device), pos.to(device), valid.to(device)


def _answer_logprob(logits: Tensor, ids: Tensor, pos: Tensor, valid: Tensor) -> Tensor:
    """Mean log-prob of the answer tokens, per row (the reference's score)."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    rows = torch.arange(ids.shape[0], device=ids.device)[:, None]
    target = ids[rows, (pos + 1).clamp(max=ids.shape[1] - 1)]
    got = lp[rows, pos, target]
    return (got * valid).sum(1) / valid.sum(1)


def _span_mask(pos: Tensor, valid: Tensor, width: int) -> Tensor:
    """``[rows, width]`` True at the patched positions."""
    m = torch.zeros((pos.shape[0], width), dtype=torch.bool, device=pos.device)
    m.scatter_(1, pos, valid)
    return m


@torch.no_grad()
def _layer_outputs(model: Any, ids: Tensor, mask: Tensor) -> list[Tensor]:
    """Every decoder layer's output (``hook_resid_post``) on this batch."""
    layers = decoder_layers(model)
    out: list[Tensor | None] = [None] * len(layers)

    def grab(i: int):
        def hook(module: Any, args: Any, output: Any) -> None:
            out[i] = layer_output(output).detach().clone()
        return hook

    with hooked([lambda i=i, m=m: m.register_forward_hook(grab(i)) for i, m in enumerate(layers)]):
        model(input_ids=ids, attention_mask=mask, use_cache=False)
    return out  # type: ignore[return-value]


@torch.no_grad()
def _head_inputs(model: Any, ids: Tensor, mask: Tensor) -> list[Tensor]:
    """Every layer's ``hook_z`` ``[rows, pos, heads, d_head]`` on this batch."""
    out: dict[int, Tensor] = {}

    def grab(z: Tensor, layer: int) -> None:
        out[layer] = z.detach().clone()

    with head_hooks(model, grab):
        model(input_ids=ids, attention_mask=mask, use_cache=False)
    return [out[i] for i in sorted(out)]


@torch.no_grad()
def _patched_layer(full: Any, layer: int, source: Tensor, span: Tensor, ids: Tensor,
                   mask: Tensor) -> Tensor:
    def patch(module: Any, args: Any, output: Any) -> Any:
        h = layer_output(output)
        new = torch.where(span[..., None], source.to(h.dtype), h)
        return replace_layer_output(output, new)

    mod = decoder_layers(full)[layer]
    with hooked([lambda: mod.register_forward_hook(patch)]):
        return full(input_ids=ids, attention_mask=mask, use_cache=False).logits


@torch.no_grad()
def _patched_head(full: Any, layer: int, head: int, source: Tensor, span: Tensor,
                  ids: Tensor, mask: Tensor) -> Tensor:
    def patch(z: Tensor, at: int) -> Tensor:
        z = z.clone()
        sel = span[..., None]
        z[:, :, head] = torch.where(sel, source[:, :, head].to(z.dtype), z[:, :, head])
        return z

    with head_hooks(full, patch, layers=[layer]):
        return full(input_ids=ids, attention_mask=mask, use_cache=False).logits


# ------------------------------------------------------------------------------- scores


@torch.no_grad()
def _deltas(full: Any, sources: dict[str, Any], rows: list[tuple[list[int], int]],
            pad: int, config: DepthConfig, progress: bool = False, desc: str = "depth"
            ) -> dict[str, np.ndarray]:
    """``base`` (the full model's mean answer log-prob) and, per source model, ``Δ``
    ``[questions, layers]`` (and ``[questions, layers*heads]`` under ``heads/<name>``)."""
    from tqdm.auto import tqdm

    dims = model_dims(full)
    n_layers, n_heads = dims["n_layers"], dims["n_heads"]
    device = next(full.parameters()).device
    acc: dict[str, list[Tensor]] = {"base": []}
    for s in tqdm(range(0, len(rows), config.batch_size), desc=desc, disable=not progress):
        ids, mask, pos, valid = _batch(rows[s:s + config.batch_size], pad, device)
        span = (_span_mask(pos, valid, ids.shape[1]) if config.scope == "span"
                else mask.bool())
        p = _answer_logprob(full(input_ids=ids, attention_mask=mask, use_cache=False).logits,
                            ids, pos, valid)
        acc["base"].append(p)
        for name, model in sources.items():
            outs = _layer_outputs(model, ids, mask)
            acc.setdefault(name, []).append(torch.stack([
                p - _answer_logprob(_patched_layer(full, l, outs[l], span, ids, mask),
                                    ids, pos, valid) for l in range(n_layers)], dim=1))
            if config.heads:
                zs = _head_inputs(model, ids, mask)
                acc.setdefault(f"heads/{name}", []).append(torch.stack([
                    p - _answer_logprob(_patched_head(full, l, h, zs[l], span, ids, mask),
                                        ids, pos, valid)
                    for l in range(n_layers) for h in range(n_heads)], dim=1))
    return {k: torch.cat(v).cpu().numpy() for k, v in acc.items()}


#: a control set's stage-1 drop above this fraction of the forget set's says the
#: reference model does not share the full model's representation basis
CONTROL_WARN_RATIO = 0.5


def depth_scores(full: Any, reference: Any, unlearned: Any, tokenizer: Any,
                 items: Sequence[MCQ], config: DepthConfig | None = None,
                 control: Sequence[MCQ] | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """``Δ1``, ``Δ2`` per question and layer (and head), the per-question UDS and the
    summary (see the module docstring). The three models share the tokenizer.

    ``control``: questions the reference model *does* know (the retain set): patching its
    activations should barely move them. Their mean stage-1 drop is reported
    (``control_delta_s1``) next to the forget set's, and a ``RuntimeWarning`` says so when
    it exceeds :data:`CONTROL_WARN_RATIO` of it -- then the reference differs from the
    full model in more than the forget knowledge (e.g. it was trained separately, in
    another basis), and UDS mixes that mismatch into the score.

    Returns ``{"layers": DataFrame, "heads": DataFrame | None, "per_question":
    DataFrame, "summary": dict}``."""
    config = config or DepthConfig()
    items = _sample(list(items), config)
    dims = model_dims(full)
    for name, m in (("reference", reference), ("unlearned", unlearned)):
        if model_dims(m) != dims:
            raise ValueError(f"the {name} model's shape {model_dims(m)} differs from the full "
                             f"model's {dims}: depth patches activations between them")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    got = _deltas(full, {"ref": reference, "unl": unlearned}, _rows(tokenizer, items), pad,
                  config, progress)
    delta1, delta2 = got["ref"], got["unl"]
    per_q = pd.DataFrame({"question": [it.question for it in items],
                          "logprob_full": got["base"],
                          "uds": uds_from_deltas(delta1, delta2, config.tau),
                          "n_ke_layers": (delta1 > config.tau).sum(1)})
    summary: dict[str, Any] = {
        "uds": _mean(per_q["uds"]), "n_questions": len(items),
        "n_scored": int(per_q["uds"].notna().sum()), "tau": config.tau,
        "n_layers": dims["n_layers"], "n_heads": dims["n_heads"],
        "delta_s1": float(delta1.mean())}
    heads_df = None
    if config.heads:
        hd1, hd2 = got["heads/ref"], got["heads/unl"]
        heads_df = _tables(hd1, hd2, config.tau, unit="head", n_heads=dims["n_heads"])
        per_q["uds_heads"] = uds_from_deltas(hd1, hd2, config.tau)
        summary["uds_heads"] = _mean(per_q["uds_heads"])
        summary["n_scored_heads"] = int(per_q["uds_heads"].notna().sum())
    if control is not None:
        ctl = _deltas(full, {"ref": reference}, _rows(tokenizer, _sample(list(control), config)),
                      pad, DepthConfig(**{**config.to_dict(), "heads": False}), progress,
                      desc="depth control")
        summary["control_delta_s1"] = float(ctl["ref"].mean())
        ratio = summary["control_delta_s1"] / max(summary["delta_s1"], 1e-12)
        summary["control_ratio"] = ratio
        if ratio > CONTROL_WARN_RATIO:
            import warnings
            warnings.warn(
                f"depth: patching the reference model's activations moves the control "
                f"questions by {summary['control_delta_s1']:.3f} nats, {ratio:.2f}x the forget "
                f"questions' {summary['delta_s1']:.3f}: the reference differs from the full "
                "model in more than the forget knowledge, so UDS is not a clean measure here",
                RuntimeWarning, stacklevel=2)
    return {"layers": _tables(delta1, delta2, config.tau, unit="layer"), "heads": heads_df,
            "per_question": per_q, "summary": summary}


def _sample(items: list[MCQ], config: DepthConfig) -> list[MCQ]:
    if not items:
        raise ValueError("no questions to score")
    if config.max_questions is not None and len(items) > config.max_questions:
        rng = np.random.default_rng(config.seed)
        keep = sorted(rng.choice(len(items), config.max_questions, replace=False))
        items = [items[i] for i in keep]
    return items


def _mean(s: pd.Series) -> float | None:
    s = s.dropna()
    return float(s.mean()) if len(s) else None


def _tables(d1: np.ndarray, d2: np.ndarray, tau: float, unit: str, n_heads: int = 1
            ) -> pd.DataFrame:
    """Per unit (layer, or layer x head): mean ``Δ1``/``Δ2``, the fraction of questions for
    which it is knowledge-encoding, and its erasure ratio (mean ``clip(Δ2/Δ1, 0, 1)`` over
    those questions; NaN where none)."""
    ft = d1 > tau
    ratio = np.clip(np.divide(d2, d1, out=np.zeros_like(d1), where=ft), 0.0, 1.0)
    n_ft = ft.sum(0)
    erasure = np.divide(np.where(ft, ratio, 0).sum(0), n_ft,
                        out=np.full(d1.shape[1], np.nan), where=n_ft > 0)
    df = pd.DataFrame({"delta_s1": d1.mean(0), "delta_s2": d2.mean(0),
                       "frac_ke": ft.mean(0), "erasure": erasure})
    if unit == "layer":
        df.insert(0, "layer", np.arange(d1.shape[1]))
    else:
        df.insert(0, "head", np.arange(d1.shape[1]) % n_heads)
        df.insert(0, "layer", np.arange(d1.shape[1]) // n_heads)
    return df
