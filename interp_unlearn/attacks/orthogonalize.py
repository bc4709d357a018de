"""Orthogonalization attack (Łucki et al. 2024): project the "unlearning direction" out.

Unlearning methods such as RMU work by pushing the residual stream on forget-domain
tokens along a direction (RMU's control vector). Łucki et al. recover the knowledge by
estimating that direction as the **difference of means** between the unlearned and the
original model's activations on forget prompts, and projecting it out of the residual
stream (``x <- x - (x . r) r`` with ``||r|| = 1``) at **every layer** (directional
ablation, as in Arditi et al.'s refusal-direction work).

Here (``protocols.md`` section 5):

* Activations: ``blocks.{l}.hook_resid_post`` (the output of decoder layer ``l``, read with a
  forward hook on the HF layer -- the same tensor, see ``notes/bridge_findings.md``),
  averaged over every token of the ``N`` attack documents (attack pool by default; the
  documents are the "forget prompts").
* ``mode="single"`` (default; "that direction" in the protocol): ONE unit direction
  ``r = normalize(mean_unlearned[l*] - mean_original[l*])`` from one layer ``l*``,
  projected out of the embedding output and of every layer's ``resid_post``, so no
  block reads it or writes it back. Which layer the direction comes from is not fixed by
  the source; ``layer="best"`` (default) tries every layer's direction and keeps the one
  that gives the highest forget accuracy on a *selection* set the attacker may use: the
  attack pool's own MCQs (``mcq/forget-attack.jsonl``), disjoint from the scored pool
  (with no world: the last layer). ``layer=int`` fixes it.
* ``mode="per-layer"``: each layer's own difference-of-means direction is projected out
  of that layer's ``resid_post`` (one direction per layer).

``N = 0`` means no attack. On the original model itself the difference is zero and the
attack is the identity. The attack only adds hooks (removed afterwards); weights are never
changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from interp_unlearn.evaluation.scoring import EvalConfig, evaluate_mcq
from interp_unlearn.core.mcq import load_mcq
from interp_unlearn.data.world import mcq_path as world_mcq_path
from interp_unlearn.attacks.common import (AttackResult, ModelSpec, attack_corpus,
                                           decoder_layers, layer_output, load_attack_target,
                                           related_models, replace_layer_output, run_eval_for,
                                           sample_texts)
from interp_unlearn.attacks.finetune import tokenize_documents

__all__ = ["ORTHO_MODES", "ablate_directions", "mean_resid_post", "orthogonalize_attack"]

ORTHO_MODES = ("single", "per-layer")


@torch.no_grad()
def mean_resid_post(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str],
                    max_length: int = 1024) -> Tensor:
    """``[n_layers, d_model]``: each layer's ``resid_post`` averaged over all tokens of
    ``texts`` (one document per forward pass, no padding)."""
    layers = decoder_layers(model)
    ctx = getattr(model.config, "max_position_embeddings", None)
    docs = tokenize_documents(tokenizer, texts, min(max_length, ctx or max_length))
    if not docs:
        raise ValueError("no document to average over")
    sums: list[Tensor | None] = [None] * len(layers)
    count = 0

    def grab(i: int):
        def hook(mod, args, out):
            h = layer_output(out)[0].float().sum(0)
            sums[i] = h if sums[i] is None else sums[i] + h
        return hook

    handles = [layer.register_forward_hook(grab(i)) for i, layer in enumerate(layers)]
    device = next(model.parameters()).device
    try:
        for d in docs:
            model(input_ids=torch.tensor([d], device=device), use_cache=False)
            count += len(d)
    finally:
        for h in handles:
            h.remove()
    return torch.stack([s / count for s in sums])  # type: ignore[operator]


def _project_out(x: Tensor, r: Tensor) -> Tensor:
    r = r.to(device=x.device, dtype=x.dtype)
    return x - (x @ r)[..., None] * r


@contextmanager
def ablate_directions(model: torch.nn.Module, directions: Tensor | dict[int, Tensor]):
    """Project directions out of the residual stream while the block runs.

    ``directions``: one ``[d_model]`` vector (removed from the embedding output and
    every layer's output) or ``{layer: [d_model]}`` (removed from that layer's output
    only). Vectors are normalised here; zero vectors are skipped."""
    layers = decoder_layers(model)
    handles = []

    def unit(v: Tensor) -> Tensor | None:
        n = v.float().norm()
        return None if n == 0 else v.float() / n

    def layer_hook(r: Tensor):
        def hook(mod, args, out):
            return replace_layer_output(out, _project_out(layer_output(out), r))
        return hook

    try:
        if isinstance(directions, dict):
            for l, v in directions.items():
                r = unit(v)
                if r is not None:
                    handles.append(layers[l].register_forward_hook(layer_hook(r)))
        else:
            r = unit(directions)
            if r is not None:
                handles.append(model.get_input_embeddings().register_forward_hook(
                    lambda mod, args, out: _project_out(out, r)))
                handles += [layer.register_forward_hook(layer_hook(r)) for layer in layers]
        yield model
    finally:
        for h in handles:
            h.remove()


def orthogonalize_attack(model: ModelSpec, n: int, seed: int = 0, *,
                         original: ModelSpec | None = None, data: str = "forget",
                         pool: str = "attack", mode: str = "single", layer: int | str = "best",
                         selection_mcq: Any = None, max_length: int = 1024, mcq: Any = None,
                         scoring: str | None = None, domains: Sequence[str] = ("forget",),
                         batch_size: int = 32, **_: Any) -> AttackResult:
    """Estimate the unlearning direction(s) from ``n`` attack documents and evaluate the
    model with them projected out (see the module docstring).

    ``original``: the model before unlearning (default: derived with
    :func:`~interp_unlearn.attacks.common.related_models`). ``selection_mcq``: questions
    used to pick the layer when ``layer="best"`` (default: the world's attack-pool MCQs)."""
    if mode not in ORTHO_MODES:
        raise ValueError(f"mode must be one of {ORTHO_MODES}, got {mode!r}")
    lm = load_attack_target(model, copy_weights=False)
    corpus, pool_label, files = attack_corpus(lm.world_dir, data, pool,
                                                     real_set=lm.meta.get("real_set"))
    info: dict[str, Any] = {"corpus": files}
    config = {"mode": mode, "layer": layer, "max_length": max_length}
    scoring_ = scoring or lm.default_scoring
    if n == 0:
        return run_eval_for(lm, lm.model, attack="orthogonalize", data=str(data), pool=pool_label,
                            n=n, seed=seed, mcq=mcq, scoring=scoring_, domains=domains,
                            batch_size=batch_size, config=config, info=info)
    if original is None:
        original = related_models(lm)[0]
        if original is None:
            raise ValueError(f"cannot derive the original model of {lm.name}; pass original=")
    orig = load_attack_target(original, copy_weights=False)
    texts = sample_texts(corpus, n, seed)
    diff = (mean_resid_post(lm.model, lm.tokenizer, texts, max_length)
            - mean_resid_post(orig.model, orig.tokenizer, texts, max_length))
    del orig
    info["diff_norms"] = [round(float(x), 5) for x in diff.norm(dim=-1)]
    if mode == "per-layer":
        directions: Tensor | dict[int, Tensor] = {l: diff[l] for l in range(diff.shape[0])}
    else:
        if layer == "best":
            sel = selection_mcq
            if sel is None and lm.world_dir is not None:
                sel = world_mcq_path(lm.world_dir, "forget", "attack")
            if sel is None:
                chosen = diff.shape[0] - 1
            else:
                items = load_mcq(sel) if not isinstance(sel, list) else sel
                cfg = EvalConfig(scoring=scoring_, batch_size=batch_size)
                accs = []
                for l in range(diff.shape[0]):
                    with ablate_directions(lm.model, diff[l]):
                        accs.append(evaluate_mcq(lm.model, lm.tokenizer, items, cfg).accuracy)
                chosen = int(max(range(len(accs)), key=lambda i: (accs[i], -i)))
                info["selection_accuracy"] = [round(a, 4) for a in accs]
        else:
            if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < diff.shape[0]:
                raise ValueError(f"layer must be 'best' or an int in [0, {diff.shape[0] - 1}], "
                                 f"got {layer!r}")
            chosen = layer
        info["layer"] = chosen
        directions = diff[chosen]
    with ablate_directions(lm.model, directions):
        return run_eval_for(lm, lm.model, attack="orthogonalize", data=str(data),
                            pool=pool_label, n=n, seed=seed, mcq=mcq, scoring=scoring_,
                            domains=domains, batch_size=batch_size, config=config, info=info)
