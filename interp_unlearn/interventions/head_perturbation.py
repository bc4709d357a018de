"""ALMPU's adversarial memory perturbation: ``z[:, :, h] <- z[:, :, h] + delta[l, h]``.

Paper eq. 4-5 (protocols.md section 3): for each selected head ``(l, h)`` a learnable
vector ``delta[l, h]`` in ``R^{d_head}``, initialised ``N(0, sigma_adv^2 I)``, is added
to the head's output at every position of every sequence (TL hook point
``blocks.{l}.attn.hook_z``, ``[batch, pos, head, d_head]``). ``delta = 0`` is the
identity (bitwise: ``z + 0``).

The robustness region (eq. 9) is a norm ball of radius ``epsilon``. :meth:`HeadPerturbation.project_`
implements it **per head**: every ``delta[l, h]`` is projected onto its own ball
``||delta[l, h]||_2 <= epsilon`` (a head inside the ball is left unchanged, one outside
is rescaled onto the sphere). The paper does not say whether the ball is per head or
joint over all selected heads; per head keeps the constraint independent of K (a joint
ball of radius ``epsilon`` would shrink each head's budget as K grows). The paper gives
no value for ``sigma_adv``; the default ``1e-3`` mirrors ``sigma_A``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from interp_unlearn.core.bridge import hook_z_name
from interp_unlearn.interventions.attach import (Head, ModelLike, check_d_head, device_of,
                                                 dims_of, normalize_heads, validate_heads)

__all__ = ["HeadPerturbation"]


class HeadPerturbation(nn.Module):
    """Additive, learnable per-head offsets for a fixed list of heads.

    Args:
        heads: ``(layer, head)`` pairs, no duplicates; row ``i`` of ``delta`` belongs
            to ``heads[i]``.
        d_head: Head dimension.
        sigma: Standard deviation ``sigma_adv`` of the initialisation (``0``: zeros).
        seed: Seed of the ``torch.Generator`` that draws ``delta``.

    Attributes:
        delta: ``nn.Parameter`` ``[n_selected, d_head]`` (float32; the hook casts it to
            the activation's dtype and device).
    """

    def __init__(self, heads: Iterable[Sequence[int]], d_head: int, *, sigma: float = 1e-3,
                 seed: int = 0) -> None:
        super().__init__()
        if isinstance(d_head, bool) or not isinstance(d_head, int) or d_head < 1:
            raise ValueError(f"d_head must be a positive int, got {d_head!r}")
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma!r}")
        self.heads: list[Head] = normalize_heads(heads)
        self.d_head, self.sigma, self.seed = d_head, float(sigma), int(seed)
        gen = torch.Generator().manual_seed(self.seed)
        init = torch.randn(len(self.heads), d_head, generator=gen) * self.sigma
        self.delta: Float[Tensor, "n_selected d_head"] = nn.Parameter(init)
        self._by_layer: dict[int, tuple[list[int], list[int]]] = {}
        for row, (layer, head) in enumerate(self.heads):
            rows, hs = self._by_layer.setdefault(layer, ([], []))
            rows.append(row)
            hs.append(head)

    @classmethod
    def for_model(cls, model: ModelLike, heads: Iterable[Sequence[int]], *, sigma: float = 1e-3,
                  seed: int = 0) -> "HeadPerturbation":
        """Validate ``heads`` against ``model`` and build with its ``d_head``, on its device."""
        heads = validate_heads(heads, model)
        module = cls(heads, dims_of(model)["d_head"], sigma=sigma, seed=seed)
        device = device_of(model)
        return module.to(device) if device is not None else module

    def extra_repr(self) -> str:
        return f"heads={self.heads}, d_head={self.d_head}, sigma={self.sigma:g}, seed={self.seed}"

    @property
    def layers(self) -> list[int]:
        """The layers with at least one perturbed head, ascending."""
        return sorted(self._by_layer)

    # ------------------------------------------------------------------ the operation
    def forward(self, z: Float[Tensor, "batch pos head d_head"],
                layer: int) -> Float[Tensor, "batch pos head d_head"]:
        """``z`` with ``delta[(layer, h)]`` added to head ``h`` at every batch row and
        position, for every selected head of ``layer`` (out of place)."""
        if z.ndim != 4 or z.shape[-1] != self.d_head:
            raise ValueError(f"expected z of shape [batch, pos, head, {self.d_head}], "
                             f"got {tuple(z.shape)}")
        if layer not in self._by_layer:
            return z
        rows, heads = self._by_layer[layer]
        if max(heads) >= z.shape[2]:
            raise ValueError(f"head {max(heads)} out of range for layer {layer}: valid heads "
                             f"are 0..{z.shape[2] - 1}")
        delta = self.delta[rows].to(device=z.device, dtype=z.dtype)           # [k, d_head]
        idx = torch.tensor(heads, device=z.device)
        offset = z.new_zeros(z.shape[2], z.shape[3]).index_add(0, idx, delta)  # [head, d_head]
        return z + offset

    @torch.no_grad()
    def project_(self, eps: float) -> "HeadPerturbation":
        """Project each head's ``delta`` onto ``||delta[l, h]||_2 <= eps`` in place.

        Per head (see the module docstring): rows with norm ``<= eps`` are unchanged,
        the others are scaled to norm ``eps``. Returns ``self``."""
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        norms = self.delta.norm(dim=-1, keepdim=True)
        factor = torch.where(norms > eps, eps / norms.clamp_min(torch.finfo(norms.dtype).tiny),
                             torch.ones_like(norms))
        self.delta.mul_(factor)
        return self

    def norms(self) -> Float[Tensor, " n_selected"]:
        """``||delta[l, h]||_2`` per selected head (detached)."""
        return self.delta.detach().norm(dim=-1)

    # ----------------------------------------------------------------------- hooks
    def validate(self, model: ModelLike) -> None:
        """Raise ``ValueError`` naming the first head out of ``model``'s range, or a
        ``d_head`` mismatch."""
        validate_heads(self.heads, model)
        check_d_head(self.d_head, model, "HeadPerturbation")

    def fwd_hooks(self, model: Any = None) -> list[tuple[str, Any]]:
        """One hook per perturbed layer at ``blocks.{l}.attn.hook_z``."""
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
