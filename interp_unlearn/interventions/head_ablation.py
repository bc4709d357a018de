"""Zero- or mean-ablation of attention heads at ``blocks.{l}.attn.hook_z``.

* ``mode="zero"``: ``z[:, :, h] <- 0`` (the head contributes nothing to ``o_proj``;
  equals :class:`HeadScale` with ``A[l, h] = -1``).
* ``mode="mean"`` with ``means=None``: ``z[:, :, h] <-`` the mean of ``z[:, :, h]``
  over the batch and positions **of the current input** (one vector per head, recomputed
  every forward pass). The hook does not see the attention mask, so padded positions
  count too; for padded batches prefer a precomputed mean.
* ``mode="mean"`` with ``means``: ``z[:, :, h] <- means[(l, h)]``, a fixed vector, e.g.
  from :func:`mean_head_outputs` over a reference set (only real tokens counted).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from interp_unlearn.core.bridge import TransformerBridge, hook_z_name, model_dims
from interp_unlearn.interventions.attach import (Head, ModelLike, check_d_head, dims_of,
                                                 normalize_heads, validate_heads)

__all__ = ["ABLATION_MODES", "HeadAblation", "mean_head_outputs"]

ABLATION_MODES = ("zero", "mean")


class HeadAblation(nn.Module):
    """Replace the outputs of the given heads by zeros or by a mean.

    Args:
        heads: ``(layer, head)`` pairs, no duplicates.
        mode: ``"zero"`` or ``"mean"``.
        means: Only for ``mode="mean"``: fixed replacement vectors, either
            ``[n_selected, d_head]`` (row ``i`` for ``heads[i]``) or a full table
            ``[n_layers, n_heads, d_head]`` (e.g. :func:`mean_head_outputs`) from which
            the selected heads are taken. ``None``: the mean of the current input.
    """

    def __init__(self, heads: Iterable[Sequence[int]], mode: str = "zero",
                 means: Tensor | None = None) -> None:
        super().__init__()
        if mode not in ABLATION_MODES:
            raise ValueError(f"mode must be one of {ABLATION_MODES}, got {mode!r}")
        self.heads: list[Head] = normalize_heads(heads)
        self.mode = mode
        if means is not None:
            if mode != "mean":
                raise ValueError("means are only used with mode='mean'")
            means = torch.as_tensor(means).detach()
            if means.ndim == 3:
                n_layers, n_heads = means.shape[:2]
                validate_heads(self.heads, {"n_layers": n_layers, "n_heads": n_heads})
                means = torch.stack([means[l, h] for l, h in self.heads])
            elif means.ndim != 2 or means.shape[0] != len(self.heads):
                raise ValueError(f"means must be [n_selected={len(self.heads)}, d_head] or "
                                 f"[n_layers, n_heads, d_head], got {tuple(means.shape)}")
            means = means.clone()
        self.register_buffer("means", means)
        self._by_layer: dict[int, tuple[list[int], list[int]]] = {}
        for row, (layer, head) in enumerate(self.heads):
            rows, hs = self._by_layer.setdefault(layer, ([], []))
            rows.append(row)
            hs.append(head)

    def extra_repr(self) -> str:
        source = "" if self.mode == "zero" else (
            ", means=fixed" if self.means is not None else ", means=current input")
        return f"heads={self.heads}, mode={self.mode!r}{source}"

    @property
    def layers(self) -> list[int]:
        return sorted(self._by_layer)

    # ------------------------------------------------------------------ the operation
    def forward(self, z: Float[Tensor, "batch pos head d_head"],
                layer: int) -> Float[Tensor, "batch pos head d_head"]:
        """``z`` with the selected heads of ``layer`` replaced (out of place)."""
        if z.ndim != 4:
            raise ValueError(f"expected z of shape [batch, pos, head, d_head], got {tuple(z.shape)}")
        if layer not in self._by_layer:
            return z
        rows, heads = self._by_layer[layer]
        if max(heads) >= z.shape[2]:
            raise ValueError(f"head {max(heads)} out of range for layer {layer}: valid heads "
                             f"are 0..{z.shape[2] - 1}")
        idx = torch.tensor(heads, device=z.device)
        if self.mode == "zero":
            return z.index_fill(2, idx, 0.0)
        if self.means is not None:
            if self.means.shape[-1] != z.shape[-1]:
                raise ValueError(f"means have d_head={self.means.shape[-1]}, z has {z.shape[-1]}")
            repl = self.means[rows].to(device=z.device, dtype=z.dtype)       # [k, d_head]
        else:
            repl = z[:, :, idx].mean(dim=(0, 1))                              # [k, d_head]
        out = z.clone()
        out[:, :, idx] = repl
        return out

    # ----------------------------------------------------------------------- hooks
    def validate(self, model: ModelLike) -> None:
        validate_heads(self.heads, model)
        if self.means is not None:
            check_d_head(int(self.means.shape[-1]), model, "HeadAblation means")

    def fwd_hooks(self, model: Any = None) -> list[tuple[str, Any]]:
        """One hook per ablated layer at ``blocks.{l}.attn.hook_z``."""
        if model is not None:
            self.validate(model)
            n_layers = dims_of(model)["n_layers"]
        else:
            n_layers = max(self.layers) + 1
        return [(hook_z_name(layer, n_layers), self._hook(layer)) for layer in self.layers]

    def _hook(self, layer: int):
        def hook(z: Float[Tensor, "batch pos head d_head"], hook: Any
                 ) -> Float[Tensor, "batch pos head d_head"]:
            return self.forward(z, layer)
        return hook


@torch.no_grad()
def mean_head_outputs(
    bridge: TransformerBridge,
    batches: Iterable[tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"] | None]],
) -> Float[Tensor, "layer head d_head"]:
    """Mean of every head's ``hook_z`` output over the real (unmasked) tokens of ``batches``.

    Args:
        bridge: The model (no hooks of its own are needed; the caller's stay active).
        batches: ``(input_ids, attention_mask)`` pairs; a ``None`` mask counts every position.

    Returns:
        ``[n_layers, n_heads, d_head]`` float32 on the CPU, for :class:`HeadAblation`.
    """
    if not isinstance(bridge, TransformerBridge):
        raise TypeError(f"mean_head_outputs needs a TransformerBridge, got {type(bridge).__name__}")
    dims = model_dims(bridge)
    sums = torch.zeros(dims["n_layers"], dims["n_heads"], dims["d_head"], dtype=torch.float64)
    count = 0
    current: dict[str, Tensor | None] = {"mask": None}

    def make_hook(layer: int):
        def hook(z: Float[Tensor, "batch pos head d_head"], hook: Any) -> None:
            mask = current["mask"]
            zz = z.detach().double()
            if mask is not None:
                zz = zz * mask.to(zz.device, zz.dtype)[:, :, None, None]
            sums[layer] += zz.sum(dim=(0, 1)).cpu()
        return hook

    hooks = [(hook_z_name(l, bridge), make_hook(l)) for l in range(dims["n_layers"])]
    device = next(bridge.parameters()).device
    with bridge.hooks(fwd_hooks=hooks):
        for input_ids, mask in batches:
            input_ids = input_ids.to(device)
            mask = None if mask is None else mask.to(device)
            current["mask"] = mask
            bridge(input_ids, attention_mask=mask)
            count += int(mask.sum()) if mask is not None else input_ids.numel()
    if count == 0:
        raise ValueError("no tokens to average over")
    return (sums / count).float()
