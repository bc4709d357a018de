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
    at ``blocks.{l}.attn.hook_z``: the same
    :class:`~interp_unlearn.interventions.adversary.HeadAdversary` ALMPU trains against,
    initialised at 0, with objective ``ce`` (minimise the attack documents' CE, i.e.
    restore the knowledge). **Unbounded by default**; ``kappa=`` gives each head the radius
    ``κ · E‖z_{l,h}‖`` (measured on the attack documents, as ALMPU measures on forget
    text) and ``epsilon=`` an absolute radius, with a projection after every optimiser
    step. Applied with a forward pre-hook on the HF ``o_proj`` whose input, viewed as
    ``[batch, pos, n_heads, d_head]``, *is* ``hook_z`` (``notes/bridge_findings.md``
    section 5); the hooks stay on while the attacked model is evaluated and are removed
    afterwards. ``info`` reports ``delta_norms`` and, when bounded, ``radii`` and
    ``delta_over_eps``. Pass ``heads=`` explicitly to attack a model at another model's
    heads (e.g. RMU at ALMPU's).

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
from typing import Any

import torch
from torch import nn

from interp_unlearn.core.heads import parse_heads
from interp_unlearn.core.bridge import model_dims
from interp_unlearn.attacks.common import (AttackResult, ModelSpec, attack_corpus,
                                           decoder_layers, load_attack_target, run_eval_for,
                                           sample_texts)
from interp_unlearn.attacks.finetune import FinetuneAttackConfig, train_on_texts

__all__ = ["HEAD_RESTORE_MODES", "head_restore_attack", "resolve_heads"]

HEAD_RESTORE_MODES = ("weights", "delta")
_DEFAULT_LR = {"weights": 2e-4, "delta": 1e-2}


def resolve_heads(heads: Any, lm: Any) -> list[tuple[int, int]]:
    """``(layer, head)`` pairs from a list, a ``selected_heads.json`` path, or (None) the
    checkpoint's recorded ``unlearn.heads``; validated against the model."""
    if heads is None:
        heads = (lm.meta.get("unlearn") or {}).get("heads")
        if not heads:
            raise ValueError(f"{lm.name}: no heads given and the checkpoint records none "
                             "(interp_unlearn.json unlearn.heads); pass heads=")
    return parse_heads(heads, lm.model)


def _text_batches(tokenizer: Any, texts: Sequence[str], model: nn.Module, size: int = 8
                  ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(input_ids, attention_mask)`` batches of ``texts`` (right-padded, truncated to the
    model's context) to measure the head norms a κ-relative radius is relative to."""
    limit = int(getattr(model.config, "max_position_embeddings", 1024) or 1024)
    device = next(model.parameters()).device
    out = []
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = int(pad) if pad is not None else 0
    for i in range(0, len(texts), size):
        enc = [list(t)[:limit] for t in tokenizer(list(texts[i:i + size]))["input_ids"]]
        enc = [t for t in enc if t]
        if not enc:
            continue
        width = max(len(t) for t in enc)
        ids = torch.tensor([t + [pad] * (width - len(t)) for t in enc], device=device)
        mask = torch.tensor([[1] * len(t) + [0] * (width - len(t)) for t in enc], device=device)
        out.append((ids, mask))
    return out


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
                        keep_model: bool = False, progress: bool = False,
                        kappa: float | None = None, epsilon: float | None = None,
                        texts: Sequence[str] | None = None, **_: Any) -> AttackResult:
    """Train only the selected heads of a copy of ``model`` on ``n`` attack documents
    (see the module docstring) and evaluate it. ``keep_model`` (``weights`` mode) returns
    the trained copy in ``AttackResult.attacked_model``. ``kappa`` / ``epsilon`` bound the
    ``delta`` mode's vectors (default: unbounded). ``texts``: the corpus the ``n``
    documents are drawn from (default: ``data``/``pool``'s, as every attack draws)."""
    if mode not in HEAD_RESTORE_MODES:
        raise ValueError(f"mode must be one of {HEAD_RESTORE_MODES}, got {mode!r}")
    from interp_unlearn.interventions.adversary import check_radius_options

    check_radius_options(kappa, epsilon)
    if mode == "weights" and (kappa is not None or epsilon is not None):
        raise ValueError("kappa / epsilon bound the 'delta' mode only (mode='weights' given)")
    base = (FinetuneAttackConfig.preset(config) if isinstance(config, str)
            else config or FinetuneAttackConfig.preset("lora"))
    cfg = replace(base, method="full", lr=lr if lr is not None else (
        base.lr if config is not None else _DEFAULT_LR[mode]))
    lm = load_attack_target(model, copy_weights=n > 0 and mode == "weights")
    head_list = resolve_heads(heads, lm)
    if texts is None:
        corpus, pool_label, files = attack_corpus(lm.world_dir, data, pool,
                                                  real_set=lm.meta.get("real_set"))
    else:
        corpus, pool_label, files = list(texts), "given", []
    config_d = {"mode": mode, "heads": [list(h) for h in head_list],
                **({"kappa": kappa, "epsilon": epsilon} if mode == "delta" else {}),
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
        from interp_unlearn.interventions.adversary import HeadAdversary

        adv = HeadAdversary(m, head_list, kappa=kappa, epsilon=epsilon, sigma=0.0, seed=seed,
                            objective="ce", lr=cfg.lr,
                            batches=(_text_batches(lm.tokenizer, texts, m)
                                     if kappa is not None and epsilon is None else None))
        handles.extend(adv.add_hooks(m))
        adv.param.requires_grad_(True)
        info["n_trained"] = int(adv.param.numel())
        info["objective"] = "ce"
        info.update(train_on_texts(m, lm.tokenizer, texts, cfg, seed, params=[adv.param],
                                   after_step=adv.project_, progress=progress))
        info["delta_norms"] = [round(float(x), 5) for x in adv.norms()]
        if adv.radii is not None:
            info["radii"] = [round(float(x), 5) for x in adv.radii]
            info["delta_over_eps"] = [round(float(x), 4) for x in adv.norms() / adv.radii]
        adv.param.requires_grad_(False)
        return run_eval_for(lm, m, attack=label, data=str(data), pool=pool_label, n=n, seed=seed,
                            mcq=mcq, scoring=scoring, domains=domains, batch_size=batch_size,
                            config=config_d, info=info)
    finally:
        for h in handles:
            h.remove()
        if mode == "delta" or n == 0:
            for p, g in was_grad.items():
                p.requires_grad_(g)
