"""LoFiT's per-head scaling vectors: ``z[l, h] <- (1 + A[l, h]) * z[l, h]``.

ALMPU phase 1 (paper eq. 2) and LoFiT's head-selection step (protocols.md section 2):
one learnable vector ``A[l, h]`` in ``R^{d_head}`` per attention head scales that
head's output element-wise before the output projection. In TransformerLens terms the
head output is ``blocks.{l}.attn.hook_z``, ``[batch, pos, head, d_head]`` (the input of
``o_proj`` split into query heads). A head's score is ``||A[l, h]||_2``.

``A = 0`` is the identity (bitwise: ``z * 1.0``); ``A[l, h] = -1`` zero-ablates head
``(l, h)``.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from interp_unlearn.core.bridge import hook_z_name
from interp_unlearn.interventions.attach import ModelLike, check_d_head, device_of, dims_of

__all__ = ["HeadScale"]


class HeadScale(nn.Module):
    """Learnable element-wise scale of every attention head's output.

    Args:
        n_layers, n_heads, d_head: Shape of ``A`` (``n_heads`` counts query heads).
        sigma: Standard deviation of the initialisation ``A ~ N(0, sigma)`` (LoFiT and
            the paper: ``sigma_A = 1e-3``; ``0`` gives the identity).
        seed: Seed of the ``torch.Generator`` that draws ``A`` (the global RNG is not
            touched), so equal seeds give equal ``A``.

    Attributes:
        A: ``nn.Parameter`` ``[n_layers, n_heads, d_head]`` (float32, CPU; move the
            module with ``.to(device)``; the hook casts to the activation's dtype).
    """

    def __init__(self, n_layers: int, n_heads: int, d_head: int, *, sigma: float = 1e-3,
                 seed: int = 0) -> None:
        super().__init__()
        for name, value in (("n_layers", n_layers), ("n_heads", n_heads), ("d_head", d_head)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma!r}")
        self.n_layers, self.n_heads, self.d_head = n_layers, n_heads, d_head
        self.sigma, self.seed = float(sigma), int(seed)
        gen = torch.Generator().manual_seed(self.seed)
        init = torch.randn(n_layers, n_heads, d_head, generator=gen) * self.sigma
        self.A: Float[Tensor, "layer head d_head"] = nn.Parameter(init)

    @classmethod
    def for_model(cls, model: ModelLike, *, sigma: float = 1e-3, seed: int = 0) -> "HeadScale":
        """A ``HeadScale`` shaped for ``model`` (HF causal LM, bridge or dims dict), on
        the device of its parameters when it has any."""
        dims = dims_of(model)
        module = cls(dims["n_layers"], dims["n_heads"], dims["d_head"], sigma=sigma, seed=seed)
        device = device_of(model)
        return module.to(device) if device is not None else module

    def extra_repr(self) -> str:
        return (f"n_layers={self.n_layers}, n_heads={self.n_heads}, d_head={self.d_head}, "
                f"sigma={self.sigma:g}, seed={self.seed}")

    # ------------------------------------------------------------------ the operation
    def forward(self, z: Float[Tensor, "batch pos head d_head"],
                layer: int) -> Float[Tensor, "batch pos head d_head"]:
        """``(1 + A[layer]) * z``, broadcast over batch and positions."""
        if z.ndim != 4 or z.shape[-2:] != (self.n_heads, self.d_head):
            raise ValueError(f"expected z of shape [batch, pos, {self.n_heads}, {self.d_head}], "
                             f"got {tuple(z.shape)}")
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer {layer} out of range: valid layers are 0..{self.n_layers - 1}")
        scale = (1 + self.A[layer]).to(device=z.device, dtype=z.dtype)
        return z * scale

    def scores(self) -> Float[Tensor, "layer head"]:
        """``||A[l, h]||_2`` per head (detached, float32)."""
        return self.A.detach().float().norm(dim=-1)

    def l1(self) -> Float[Tensor, ""]:
        """``sum |A|`` over every element (LoFiT's un-normalised L1 term; differentiable)."""
        return self.A.abs().sum()

    # ----------------------------------------------------------------------- hooks
    def validate(self, model: ModelLike) -> None:
        """Raise ``ValueError`` unless ``A``'s shape matches ``model``."""
        dims = dims_of(model)
        if (dims["n_layers"], dims["n_heads"]) != (self.n_layers, self.n_heads):
            raise ValueError(
                f"HeadScale has A for {self.n_layers} layers x {self.n_heads} heads but the model "
                f"has {dims['n_layers']} layers x {dims['n_heads']} heads "
                f"(valid layers 0..{dims['n_layers'] - 1}, heads 0..{dims['n_heads'] - 1})")
        check_d_head(self.d_head, dims, "HeadScale")

    def fwd_hooks(self, model: Any = None) -> list[tuple[str, Any]]:
        """One hook per layer at ``blocks.{l}.attn.hook_z`` applying :meth:`forward`.

        With ``model`` given, the shape of ``A`` is validated against it first."""
        if model is not None:
            self.validate(model)
        return [(hook_z_name(layer, self.n_layers), self._hook(layer))
                for layer in range(self.n_layers)]

    def _hook(self, layer: int):
        def hook(z: Float[Tensor, "batch pos head d_head"], hook: Any
                 ) -> Float[Tensor, "batch pos head d_head"]:
            return self.forward(z, layer)
        return hook
