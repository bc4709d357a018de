"""Per-block logit lens with the evaluator's own MCQ scoring (Łucki et al.; ALMPU Fig. 5).

For every block ``l`` the residual stream after the block, ``blocks.{l}.hook_resid_post``,
is passed through the model's final norm and unembedding, and the four choices of each
question are scored from those logits exactly as :func:`interp_unlearn.evaluation.scoring.evaluate_mcq`
scores the real logits: same prompts (letter or cloze; default: the model's own), same
tokenisation and truncation, same batches (:func:`~interp_unlearn.evaluation.scoring.make_batches`
over the de-duplicated requests, like ``score_requests``), same summed continuation
log-probabilities (:func:`~interp_unlearn.evaluation.scoring.continuation_logprobs`) and argmax. At
the last block this *is* the model's output (final norm + unembedding of the last
residual stream), so the lens reproduces ``evaluate_mcq``'s per-question predictions.

Cost: **one forward pass per batch** serves all blocks. The residual streams are
captured during that pass, and only the positions that predict continuation tokens
(``rows x cont`` of them, not ``rows x pos``) are normalised and unembedded, block by block.

Backends:

``hf`` (default)
    Forward hooks on the HF decoder layers capture their outputs -- the tensor
    TransformerLens calls ``blocks.{l}.hook_resid_post`` (equal to the bridge's up to
    ~1e-8, ``notes/bridge_findings.md``) -- during a forward of the decoder stack alone
    (``model.get_decoder()``), so the full-vocabulary unembedding of every position that
    ``evaluate_mcq`` pays for is skipped; the lens applies ``model.model.norm`` and
    ``lm_head`` itself. This path is needed to meet the speed target on small models,
    where the bridge's fixed per-block overhead alone is ~2.5x an HF forward.
``bridge``
    ``TransformerBridge.run_with_cache(names_filter=[resid_post names])`` and the bridge's
    ``ln_final`` / ``unembed``. Same numbers (the bridge computes eager attention; HF sdpa
    differs from it by ~2e-7), slower.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from interp_unlearn.evaluation.scoring import (Batch, EvalConfig, _ci95, _model_device,
                                               _pad_id, build_requests, continuation_logprobs,
                                               make_batches, resolve_config, resolve_max_length,
                                               tokenize_requests)
from interp_unlearn.core.mcq import MCQ, N_CHOICES, load_mcq

__all__ = ["LENS_BACKENDS", "logit_lens", "logit_lens_scores", "run_logit_lens"]

LENS_BACKENDS = ("hf", "bridge")


def _compact(batch: Batch) -> tuple[Batch, Tensor]:
    """A batch whose 'input' is just the scored positions, and the gather index
    ``[rows, cont]`` of those positions in the real input (padding steps point at 0)."""
    cont_w = batch.cont_tokens.shape[1]
    steps = torch.arange(cont_w, device=batch.input_ids.device)
    valid = steps[None, :] < batch.cont_lengths[:, None]
    first = batch.input_lengths - batch.cont_lengths
    positions = torch.where(valid, first[:, None] + steps[None, :], 0)
    compact = Batch(input_ids=torch.zeros_like(batch.cont_tokens),
                    attention_mask=valid.long(), input_lengths=batch.cont_lengths.clone(),
                    cont_tokens=batch.cont_tokens, cont_lengths=batch.cont_lengths,
                    request_idx=batch.request_idx)
    return compact, positions


def _gather(resid: Float[Tensor, "rows pos d"], positions: Tensor) -> Float[Tensor, "rows cont d"]:
    rows = torch.arange(resid.shape[0], device=resid.device)[:, None]
    return resid[rows, positions.to(resid.device)]


class _HFLens:
    def __init__(self, model: torch.nn.Module):
        from interp_unlearn.core.arch import decoder_layers, decoder_of, final_norm, layer_output
        self.model = model
        self.decoder = decoder_of(model)
        self.layers = decoder_layers(model)
        self.norm = final_norm(model)
        self.head = model.get_output_embeddings()
        self._out = layer_output
        self.n_layers = len(self.layers)

    def resid(self, batch: Batch, blocks: Sequence[int]) -> dict[int, Tensor]:
        captured: dict[int, Tensor] = {}

        def grab(i: int):
            def hook(mod, args, out):
                captured[i] = self._out(out)
            return hook

        handles = [self.layers[i].register_forward_hook(grab(i)) for i in blocks]
        try:
            self.decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                         use_cache=False)
        finally:
            for h in handles:
                h.remove()
        return captured

    def unembed(self, x: Tensor) -> Tensor:
        return self.head(self.norm(x))


class _BridgeLens:
    def __init__(self, bridge: Any):
        from interp_unlearn.core.bridge import model_dims
        self.bridge = bridge
        self.n_layers = model_dims(bridge)["n_layers"]

    def resid(self, batch: Batch, blocks: Sequence[int]) -> dict[int, Tensor]:
        names = [f"blocks.{i}.hook_resid_post" for i in blocks]
        _, cache = self.bridge.run_with_cache(batch.input_ids, attention_mask=batch.attention_mask,
                                              names_filter=names)
        return {i: cache[n] for i, n in zip(blocks, names)}

    def unembed(self, x: Tensor) -> Tensor:
        return self.bridge.unembed(self.bridge.ln_final(x))


def _lens_for(model: Any, tokenizer: Any, backend: str) -> Any:
    if backend not in LENS_BACKENDS:
        raise ValueError(f"backend must be one of {LENS_BACKENDS}, got {backend!r}")
    from interp_unlearn.core.bridge import TransformerBridge
    if isinstance(model, TransformerBridge):
        if backend == "hf":
            from interp_unlearn.core.bridge import hf_model_of
            return _HFLens(hf_model_of(model))
        return _BridgeLens(model)
    if backend == "bridge":
        from interp_unlearn.core.bridge import to_bridge
        return _BridgeLens(to_bridge(model, tokenizer))
    return _HFLens(model)


def _items(items: Sequence[MCQ] | str | Path) -> list[MCQ]:
    items = load_mcq(items) if isinstance(items, (str, Path)) else list(items)
    if not items:
        raise ValueError("no questions to evaluate")
    return items


def logit_lens_scores(model: Any, tokenizer: Any, items: Sequence[MCQ] | str | Path,
                      config: EvalConfig | None = None, *, blocks: Sequence[int] | None = None,
                      backend: str = "hf", progress: bool = False
                      ) -> Float[np.ndarray, "blocks questions choices"]:
    """Summed continuation log-probabilities ``[len(blocks), n_questions, 4]`` read
    through the lens at each block (default: every block, ascending)."""
    from tqdm.auto import tqdm

    config = resolve_config(config, model)
    items = _items(items)
    lens = _lens_for(model, tokenizer, backend)
    blocks = list(range(lens.n_layers)) if blocks is None else [int(b) for b in blocks]
    bad = [b for b in blocks if not 0 <= b < lens.n_layers]
    if bad:
        raise ValueError(f"blocks {bad} out of range: the model has {lens.n_layers} blocks "
                         f"(0..{lens.n_layers - 1})")
    hf = lens.model if isinstance(lens, _HFLens) else lens.bridge
    max_length = config.max_length or resolve_max_length(
        lens.model if isinstance(lens, _HFLens) else model, tokenizer)
    pairs = build_requests(items, config.scoring, config.description)
    requests = tokenize_requests(tokenizer, pairs, max_length, config.add_bos_token)
    # the same de-duplication and batches as evaluate.score_requests
    unique = list(dict.fromkeys(requests))
    position = {req: i for i, req in enumerate(unique)}
    scores = torch.full((len(blocks), len(unique)), float("nan"), dtype=torch.float32)
    rows = config.batch_size * N_CHOICES
    device = _model_device(hf)
    was_training = isinstance(hf, torch.nn.Module) and hf.training
    if was_training:
        hf.eval()
    try:
        with torch.inference_mode():
            for batch in tqdm(make_batches(unique, rows, _pad_id(tokenizer)),
                              total=math.ceil(len(unique) / rows), disable=not progress,
                              desc="Logit lens"):
                batch = batch.to(device)
                resid = lens.resid(batch, blocks)
                compact, positions = _compact(batch)
                for j, b in enumerate(blocks):
                    logits = lens.unembed(_gather(resid[b], positions))
                    lp = continuation_logprobs(logits, compact)
                    scores[j, batch.request_idx.cpu()] = lp.float().cpu()
    finally:
        if was_training:
            hf.train()
    order = torch.tensor([position[r] for r in requests], dtype=torch.long)
    return scores[:, order].double().numpy().reshape(len(blocks), len(items), N_CHOICES)


def logit_lens(model: Any, tokenizer: Any, items: Sequence[MCQ] | str | Path,
               config: EvalConfig | None = None, *, blocks: Sequence[int] | None = None,
               backend: str = "hf", progress: bool = False) -> pd.DataFrame:
    """Tidy accuracy per block: columns ``block, accuracy, ci95_low, ci95_high, n``
    (the interval as in :class:`~interp_unlearn.evaluation.scoring.EvalResult`: normal
    approximation, clipped to [0, 1]). ``df.attrs["predictions"]`` holds the per-question
    predictions ``[blocks, questions]``."""
    items = _items(items)
    lp = logit_lens_scores(model, tokenizer, items, config, blocks=blocks, backend=backend,
                           progress=progress)
    n_blocks = lp.shape[0]
    blocks = list(range(n_blocks)) if blocks is None else [int(b) for b in blocks]
    answer = np.array([it.answer for it in items])
    pred = lp.argmax(axis=2)  # first maximum on ties, like evaluate_mcq
    rows = []
    for j, b in enumerate(blocks):
        acc = float((pred[j] == answer).mean())
        lo, hi = _ci95(acc, len(items))
        rows.append({"block": b, "accuracy": acc, "ci95_low": lo, "ci95_high": hi, "n": len(items)})
    df = pd.DataFrame(rows)
    df.attrs["predictions"] = pred
    return df


def run_logit_lens(model: Any, out: str | os.PathLike | None = None, *,
                   domains: Sequence[str] = ("forget", "retain"), mcq: Any = None,
                   scoring: str | None = None, batch_size: int = 32, backend: str = "hf",
                   threads: int | None = None, progress: bool = True, device: str = "cpu",
                   dtype: str | None = None) -> pd.DataFrame:
    """The ``interp-unlearn logit-lens`` command: the lens of a checkpoint (a name loaded on
    ``device`` in ``dtype``, or a loaded model) on its own MCQ
    pools (``forget`` and ``retain`` of its default pool, its own scoring), as one tidy table
    with a ``domain`` column (plus ``model``, ``scoring``, ``mcq``). Writes
    ``out/logit_lens.csv`` and ``out/logit_lens.json`` when ``out`` is given."""
    from interp_unlearn.evaluation.domains import mcq_name, resolve_mcqs
    from interp_unlearn.data.loading import load_model

    if threads:
        torch.set_num_threads(int(threads))
    from interp_unlearn.data.loading import LoadedModel

    lm = model if isinstance(model, LoadedModel) else load_model(model, device=device, dtype=dtype)
    scoring = scoring or lm.default_scoring
    cfg = EvalConfig(scoring=scoring, batch_size=batch_size)
    frames = []
    t0 = time.time()
    for domain, items in resolve_mcqs(lm, mcq, domains).items():
        df = logit_lens(lm.model, lm.tokenizer, items if isinstance(items, list) else load_mcq(items),
                        cfg, backend=backend, progress=progress)
        df.attrs = {}  # the predictions array would break pd.concat's attrs check
        df.insert(0, "domain", domain)
        df["model"] = str(lm.path or lm.name)
        df["scoring"] = scoring
        df["mcq"] = mcq_name(items)
        frames.append(df)
    result = pd.concat(frames, ignore_index=True)
    result.attrs["seconds"] = round(time.time() - t0, 2)
    if out is not None:
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        result.to_csv(d / "logit_lens.csv", index=False)
        (d / "logit_lens.json").write_text(result.to_json(orient="records", indent=1))
    return result
