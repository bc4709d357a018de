"""Head-restoration attack: fine-tune only the selected attention heads on N attack documents.

ALMPU hardens the model at the heads its localization selects. An attacker who knows
those heads (a white-box, worst-case assumption) can try to restore the knowledge by
training *only* them. Two modes:

``weights`` (default)
    Each selected head's own slice of the attention weights is trained, everything else
    is frozen: the head's rows of ``q_proj`` (``h*d_head:(h+1)*d_head``), the rows of
    ``k_proj`` / ``v_proj`` of its key/value head (under grouped-query attention that
    KV head is shared by the group's query heads, so they see the change too) and the
    head's columns of ``o_proj``; biases of those rows when present. Gradients outside
    the slices are masked to zero before clipping, and after every optimiser step the
    entries outside the slices are restored exactly (so AdamW's decoupled weight decay
    never touches them).
``delta``
    A vector ``delta[l, h]`` is learnt at each selected head's output, ``z <- z + delta``
    at ``blocks.{l}.attn.hook_z`` (:class:`interp_unlearn.interventions.HeadPerturbation`,
    initialised at 0, unbounded): the attack ALMPU's phase 2 simulates, without the
    epsilon-ball. Applied with a forward pre-hook on the HF ``o_proj`` whose input,
    viewed as ``[batch, pos, n_heads, d_head]``, *is* ``hook_z`` (verified in
    ``notes/bridge_findings.md`` section 5); the hooks stay on while the attacked model is
    evaluated and are removed afterwards.

Training recipe: the fine-tuning attack's loop and its ``lora`` preset schedule
(Łucki et al.: 3 epochs, batch 1, linear schedule with 5 % warm-up, AdamW, weight decay
0.01), with learning rate 2e-4 for ``weights`` and 1e-2 for ``delta`` (a vector starting
at zero; our choice, no source fixes it). Override with ``config=`` / ``lr=``.

Heads: ``heads=`` a list of ``(layer, head)`` or a ``selected_heads.json``; default: the
heads recorded by the unlearning run in the checkpoint's ``interp_unlearn.json``
(``unlearn.heads``). ``N = 0`` means no attack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..bridge import model_dims
from .common import (AttackResult, ModelSpec, attack_corpus, decoder_layers, load_attack_target,
                     run_eval_for, sample_texts)
from .finetune import FinetuneAttackConfig, train_on_texts

__all__ = ["HEAD_RESTORE_MODES", "head_restore_attack", "resolve_heads"]

HEAD_RESTORE_MODES = ("weights", "delta")
_DEFAULT_LR = {"weights": 2e-4, "delta": 1e-2}


def resolve_heads(heads: Any, lm: Any) -> list[tuple[int, int]]:
    """``(layer, head)`` pairs from a list, a ``selected_heads.json`` path, or (None) the
    checkpoint's recorded ``unlearn.heads``; validated against the model."""
    from ..interventions.attach import validate_heads

    if heads is None:
        heads = (lm.meta.get("unlearn") or {}).get("heads")
        if not heads:
            raise ValueError(f"{lm.name}: no heads given and the checkpoint records none "
                             "(interp_unlearn.json unlearn.heads); pass heads=")
    if isinstance(heads, (str, Path)):
        from ..selection import load_heads
        return [tuple(h) for h in load_heads(heads, lm.model)]  # type: ignore[misc]
    return [tuple(h) for h in validate_heads(heads, lm.model)]  # type: ignore[misc]


def _attn(model: nn.Module, layer: int) -> nn.Module:
    return decoder_layers(model)[layer].self_attn


def _weight_slices(model: nn.Module, heads: list[tuple[int, int]]
                   ) -> dict[nn.Parameter, torch.Tensor]:
    """``{parameter: bool mask}`` of the entries belonging to the selected heads."""
    dims = model_dims(model)
    n_heads, d_head = dims["n_heads"], dims["d_head"]
    n_kv = int(getattr(model.config, "num_key_value_heads", None) or n_heads)
    group = n_heads // n_kv
    masks: dict[nn.Parameter, torch.Tensor] = {}

    def mark(p: nn.Parameter | None, rows: slice | None = None, cols: slice | None = None) -> None:
        if p is None:
            return
        m = masks.setdefault(p, torch.zeros_like(p, dtype=torch.bool))
        if p.ndim == 1:
            m[rows] = True
        elif rows is not None:
            m[rows, :] = True
        else:
            m[:, cols] = True

    for layer, h in heads:
        attn = _attn(model, layer)
        q = slice(h * d_head, (h + 1) * d_head)
        kv = slice((h // group) * d_head, (h // group + 1) * d_head)
        mark(attn.q_proj.weight, rows=q)
        mark(getattr(attn.q_proj, "bias", None), rows=q)
        for proj in (attn.k_proj, attn.v_proj):
            mark(proj.weight, rows=kv)
            mark(getattr(proj, "bias", None), rows=kv)
        mark(attn.o_proj.weight, cols=q)
    return masks


def head_restore_attack(model: ModelSpec, n: int, seed: int = 0, *, heads: Any = None,
                        mode: str = "weights", data: str = "forget", pool: str = "attack",
                        config: FinetuneAttackConfig | str | None = None, lr: float | None = None,
                        mcq: Any = None, scoring: str | None = None,
                        domains: Sequence[str] = ("forget",), batch_size: int = 32,
                        keep_model: bool = False, progress: bool = False, **_: Any) -> AttackResult:
    """Train only the selected heads of a copy of ``model`` on ``n`` attack documents
    (see the module docstring) and evaluate it. ``keep_model`` (``weights`` mode) returns
    the trained copy in ``AttackResult.attacked_model``."""
    if mode not in HEAD_RESTORE_MODES:
        raise ValueError(f"mode must be one of {HEAD_RESTORE_MODES}, got {mode!r}")
    base = (FinetuneAttackConfig.preset(config) if isinstance(config, str)
            else config or FinetuneAttackConfig.preset("lora"))
    cfg = replace(base, method="full", lr=lr if lr is not None else (
        base.lr if config is not None else _DEFAULT_LR[mode]))
    lm = load_attack_target(model, copy_weights=n > 0 and mode == "weights")
    head_list = resolve_heads(heads, lm)
    corpus, pool_label, files = attack_corpus(lm.world_dir, data, pool)
    config_d = {"mode": mode, "heads": [list(h) for h in head_list],
                **{k: v for k, v in cfg.to_dict().items() if k != "method"}}
    info: dict[str, Any] = {"corpus": files}
    m = lm.model
    label = f"head-restore-{mode}"
    if n == 0:
        return run_eval_for(lm, m, attack=label, data=str(data), pool=pool_label, n=n, seed=seed,
                            mcq=mcq, scoring=scoring, domains=domains, batch_size=batch_size,
                            config=config_d, info=info)
    texts = sample_texts(corpus, n, seed)
    was_grad = {p: p.requires_grad for p in m.parameters()}
    for p in m.parameters():
        p.requires_grad_(False)
    handles = []
    try:
        if mode == "weights":
            masks = _weight_slices(m, head_list)
            originals = {p: p.detach().clone() for p in masks}
            for p, mask in masks.items():
                p.requires_grad_(True)
                handles.append(p.register_hook(lambda g, mask=mask: g * mask.to(g.dtype)))

            @torch.no_grad()
            def restore() -> None:
                for p, mask in masks.items():
                    p.copy_(torch.where(mask, p, originals[p]))

            info["n_trained"] = int(sum(int(mk.sum()) for mk in masks.values()))
            info.update(train_on_texts(m, lm.tokenizer, texts, cfg, seed,
                                       params=list(masks), after_step=restore, progress=progress))
            for h in handles:
                h.remove()
            handles = []
            for p in m.parameters():
                p.requires_grad_(False)
            return run_eval_for(lm, m, attack=label, data=str(data), pool=pool_label, n=n,
                                seed=seed, mcq=mcq, scoring=scoring, domains=domains,
                                batch_size=batch_size, config=config_d, info=info,
                                keep_model=keep_model)
        from ..interventions import HeadPerturbation

        dims = model_dims(m)
        pert = HeadPerturbation(head_list, dims["d_head"], sigma=0.0, seed=seed)
        pert.to(next(m.parameters()).device)

        def pre_hook(layer: int):
            def hook(mod, args):
                x = args[0]
                z = x.view(*x.shape[:-1], dims["n_heads"], dims["d_head"])
                return (pert(z, layer).reshape(x.shape), *args[1:])
            return hook

        for layer in pert.layers:
            handles.append(_attn(m, layer).o_proj.register_forward_pre_hook(pre_hook(layer)))
        info["n_trained"] = int(pert.delta.numel())
        info.update(train_on_texts(m, lm.tokenizer, texts, cfg, seed, params=[pert.delta],
                                   progress=progress))
        info["delta_norms"] = [round(float(x), 5) for x in pert.norms()]
        pert.delta.requires_grad_(False)
        return run_eval_for(lm, m, attack=label, data=str(data), pool=pool_label, n=n, seed=seed,
                            mcq=mcq, scoring=scoring, domains=domains, batch_size=batch_size,
                            config=config_d, info=info)
    finally:
        for h in handles:
            h.remove()
        if mode == "delta" or n == 0:
            for p, g in was_grad.items():
                p.requires_grad_(g)
