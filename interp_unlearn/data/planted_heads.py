"""Head helpers of the planted organism (:mod:`.planted`): H* checks and defaults, mean
ablation of heads at the input of ``o_proj`` (TransformerLens' ``hook_z``) with plain HF
hooks (the data layer may not import :mod:`interp_unlearn.interventions`), the mean head
outputs, and the gradient masks that let only H*'s slices of the attention learn."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from transformers import PreTrainedModel

from interp_unlearn.core.arch import decoder_layers
from interp_unlearn.core.hooks import hooked

__all__ = ["Head", "check_plant_heads", "default_heads", "head_masks", "head_means",
           "mean_ablated", "plant_dims"]

Head = tuple[int, int]


def plant_dims(model: PreTrainedModel, *, training: bool = False) -> dict[str, int]:
    """``n_layers, n_heads, d_head``; ``training``: also check that every query head has
    its own key/value head (the recipe trains H*'s k/v rows)."""
    cfg = model.config
    n_heads = int(cfg.num_attention_heads)
    kv = int(getattr(cfg, "num_key_value_heads", n_heads) or n_heads)
    if training and kv != n_heads:
        raise ValueError(f"planting needs one key/value head per query head (got "
                         f"{n_heads} query and {kv} key/value heads)")
    return {"n_layers": int(cfg.num_hidden_layers), "n_heads": n_heads,
            "d_head": int(cfg.hidden_size) // n_heads}


def check_plant_heads(heads: Sequence[Sequence[int]], n_layers: int, n_heads: int
                      ) -> list[Head]:
    """``heads`` as sorted distinct ``(layer, head)`` pairs inside the model, or a
    ValueError naming the first bad one and the valid range."""
    out: list[Head] = []
    for h in heads:
        if len(h) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in h):
            raise ValueError(f"a head is a (layer, head) pair of ints, got {h!r}")
        l, k = int(h[0]), int(h[1])
        if not (0 <= l < n_layers and 0 <= k < n_heads):
            raise ValueError(f"head ({l}, {k}) is outside the model: layers 0..{n_layers - 1}, "
                             f"heads 0..{n_heads - 1}")
        out.append((l, k))
    if not out:
        raise ValueError("the planted head set H* is empty")
    if len(set(out)) != len(out):
        raise ValueError(f"the planted heads repeat a head: {list(heads)}")
    return sorted(out)


def default_heads(n_layers: int, n_heads: int, k: int, seed: int = 0) -> list[Head]:
    """``k`` heads drawn (seeded) from the middle layers ``1..n_layers-2``, at most
    ``ceil(k / n_middle)`` per layer, so H* spans several layers."""
    middle = list(range(1, n_layers - 1)) or list(range(n_layers))
    if k > len(middle) * n_heads:
        raise ValueError(f"cannot plant {k} heads in layers {middle[0]}..{middle[-1]} "
                         f"({len(middle) * n_heads} heads)")
    rng = random.Random(f"plant-{seed}")
    per_layer = math.ceil(k / len(middle))
    layers = [l for l in middle for _ in range(per_layer)]
    rng.shuffle(layers)
    chosen: list[Head] = []
    for l in sorted(layers[:k]):
        free = [h for h in range(n_heads) if (l, h) not in chosen]
        chosen.append((l, rng.choice(free)))
    return sorted(chosen)


@contextmanager
def mean_ablated(model: PreTrainedModel, heads: Sequence[Head], means: torch.Tensor
                 ) -> Iterator[None]:
    """Within the block, ``z`` of each head in ``heads`` (the input of its layer's
    ``o_proj``) is replaced by ``means[layer, head]`` (``[n_layers, n_heads, d_head]``)."""
    dims = plant_dims(model)
    by_layer: dict[int, list[int]] = {}
    for l, h in heads:
        by_layer.setdefault(l, []).append(h)

    def make(layer: int, hs: list[int]):
        idx = torch.tensor(hs)

        def pre(module, args):
            x = args[0]
            z = x.reshape(*x.shape[:-1], dims["n_heads"], dims["d_head"]).clone()
            z[..., idx, :] = means[layer, idx].to(z.dtype)
            return (z.reshape(x.shape), *args[1:])
        return pre

    layers = decoder_layers(model)
    with hooked([(lambda l=l, hs=hs: layers[l].self_attn.o_proj.register_forward_pre_hook(
            make(l, hs))) for l, hs in by_layer.items()]):
        yield


@torch.no_grad()
def head_means(model: PreTrainedModel, ids: torch.Tensor, pad_id: int, batch: int = 16
               ) -> torch.Tensor:
    """``[n_layers, n_heads, d_head]`` mean ``z`` over the real tokens of ``ids``."""
    dims = plant_dims(model)
    sums = torch.zeros(dims["n_layers"], dims["n_heads"], dims["d_head"], dtype=torch.float64)
    mask_now: list[torch.Tensor] = []

    def make(layer: int):
        def pre(module, args):
            z = args[0].reshape(*args[0].shape[:-1], dims["n_heads"], dims["d_head"]).double()
            sums[layer] += (z * mask_now[0][:, :, None, None]).sum(dim=(0, 1))
        return pre

    layers = decoder_layers(model)
    was = model.training
    model.eval()
    with hooked([(lambda l=l: layers[l].self_attn.o_proj.register_forward_pre_hook(make(l)))
                 for l in range(dims["n_layers"])]):
        for s in range(0, len(ids), batch):
            x = ids[s:s + batch]
            m = (x != pad_id).long()
            mask_now[:] = [m.double()]
            model(input_ids=x, attention_mask=m)
    model.train(was)
    return (sums / max(int((ids != pad_id).sum()), 1)).float()


def head_masks(model: PreTrainedModel, heads: Sequence[Head]) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
    """``(parameter, 0/1 mask)`` for the attention weights of layers holding an H* head:
    q/k/v rows and o_proj columns of H* are 1, everything else 0."""
    dims = plant_dims(model)
    d = dims["d_head"]
    out = []
    for l, attn in enumerate(a.self_attn for a in decoder_layers(model)):
        hs = [h for (ll, h) in heads if ll == l]
        if not hs:
            continue
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            w = getattr(attn, name).weight
            m = torch.zeros_like(w)
            for h in hs:
                if name == "o_proj":
                    m[:, h * d:(h + 1) * d] = 1
                else:
                    m[h * d:(h + 1) * d, :] = 1
            out.append((w, m))
    return out
