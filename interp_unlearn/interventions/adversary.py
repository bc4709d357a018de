"""A live latent adversary: ALMPU's head δ (and RMU-LAT's residual δ), its radii, its inner
steps and the diagnostics that show whether it does anything.

**Why this module exists** (science review §3.2). The first ALMPU implementation had one
δ step per θ step, one ε for every head, ``λ_reg = 1e-4`` and a vocabulary-*averaged*
probability MSE (``O(1/V)``): the regulariser cancelled the memory gradient at
``‖δ‖ ≈ 0.16`` (ε = 4), so the "adversary" was a near-zero perturbation. Here:

* **Per-row radii.** ``ε_{l,h} = κ · E‖z_{l,h}‖``: the mean per-token L2 norm of head
  ``(l, h)``'s slice of the ``o_proj`` input (== ``hook_z``) over the real tokens of forget
  text (:func:`measure_head_norms`; layer-0 heads have ‖z‖ ≈ 0.5-0.8, layers 2-5 ≈ 3-7 on
  the organism). An absolute ``epsilon`` gives every row the same radius; neither gives an
  unbounded adversary (the head-restore attack's default). The paper (eq. 9) names one ε
  and does not say per head or joint; κ-relative radii are our choice (the review's).
* **Projection per row** onto its own ball after every update.
* **Step size relative to the radius** (Adam): one Adam step moves ``δ[row]`` by about
  ``delta_lr · ε_row`` (per-coordinate rate ``delta_lr · ε_row / √d``), so a layer-0 head
  and a layer-5 head reach their boundaries in the same number of steps. ``sgd`` is the
  paper's plain ``δ ← δ − η∇`` with an absolute ``η``; unbounded adversaries use an
  absolute Adam rate.
* **k inner steps** (``steps``) per call of :meth:`LatentAdversary.step`, each a full
  forward under δ, gradient to δ only, update, projection.
* **Two objectives.** ``match`` (paper eq. 8): bring ``p_θ,δ`` to ``p_ref`` on forget text
  with a memory loss that is not ``O(1/V)``: ``kl`` = ``KL(p_ref ‖ p_θ,δ)`` summed over the
  vocabulary, mean over real positions (default); ``mse_sum`` = squared probability error
  summed over the vocabulary; ``mse_mean`` = the old vocabulary-averaged MSE (= mse_sum/V),
  kept **only as a labelled legacy option**. ``ce``: minimise the forget next-token CE under
  δ, i.e. restore the forget knowledge (Sheshadri et al. 2024's targeted LAT).
  ``λ_reg·Σ‖δ‖²`` is kept as an option with default 0 (the ball is the constraint).
* **Diagnostics** (:meth:`LatentAdversary.diagnostics`): per-row ‖δ‖/ε, the fraction of
  rows on the boundary (‖δ‖/ε ≥ 0.99) and the **gain**: answer log-prob (summed over the
  correct choice's tokens, mean over questions, as :func:`~interp_unlearn.evaluation.scoring.evaluate_mcq`
  scores it), the same normalised over the four choices, and MCQ accuracy, each with δ
  minus without, on held-out questions. ``alive`` is false when the median ‖δ‖/ε < 0.1 or
  the answer log-prob gain ≤ 0 (:data:`ALIVE_THRESHOLDS`; ``restores_ranking`` says
  whether the normalised gain is positive too: see :mod:`.adversary_diagnostics`).

:class:`HeadAdversary` adds δ[l,h] ∈ R^{d_head} to heads through ``o_proj`` forward
pre-hooks (its input viewed ``[batch, pos, n_heads, d_head]`` *is* ``hook_z``; the
container is a :class:`~.head_perturbation.HeadPerturbation`, so ``attach(bridge, adv.delta)``
works too). :class:`ResidualAdversary` adds δ[l] ∈ R^{d_model} to the residual output of
decoder layers (``hook_resid_post``), radius ``κ · E‖h_l‖``. Both share the step, the
projection and the diagnostics.

**Measured defaults** (``notes/adversary_defaults.md``, :data:`interp_unlearn.unlearn.
adversarial.ADVERSARY_NOTES`; shipped organism, ALMPU at heads 0.0,0.1,0.3,0.5, seed 0,
practice pools): the legacy adversary ends at median ‖δ‖/ε 0.037 (inert); with κ ∈ {0.5,
1, 2} × k ∈ {1, 3, 5} every head reaches its boundary except κ 2 with k 1 (0.80, δ lags
θ); κ 2 costs 3-6 points of forgetting. Hence κ 1, k 3, ``lr`` 0.1, KL, λ_reg 0 -- at
≈ 4.5× RMU's time per step (2.14 s vs 0.47 s, one thread, shared CPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from interp_unlearn.core.hooks import register_all, remove_all
from interp_unlearn.interventions.hf_hooks import add_head_hooks
from interp_unlearn.interventions.adversary_diagnostics import (ALIVE_THRESHOLDS, BOUNDARY,
                                                             decoder_layers_of as _layers,
                                                             ids_mask as _ids_mask,
                                                             measure_head_norms,
                                                             measure_resid_norms, norm_stats)
from interp_unlearn.interventions.adversary_objectives import (ADV_OBJECTIVES,
                                                               DELTA_OPTIMIZERS, MAX_STEPS,
                                                               MEMORY_LOSSES,
                                                               check_adversary_options,
                                                               check_radius_options, forget_ce,
                                                               memory_loss, radii_from)
from interp_unlearn.interventions.attach import dims_of, validate_heads
from interp_unlearn.interventions.head_perturbation import HeadPerturbation

__all__ = ["ADV_OBJECTIVES", "ALIVE_THRESHOLDS", "BOUNDARY", "DELTA_OPTIMIZERS", "MAX_STEPS",
           "HeadAdversary", "LatentAdversary", "MEMORY_LOSSES", "ResidualAdversary",
           "check_adversary_options", "check_radius_options", "forget_ce", "memory_loss",
           "measure_head_norms", "measure_resid_norms"]



# ---------------------------------------------------------------------------- the base


class LatentAdversary:
    """δ rows ``[n, d]`` with radii, an optimiser, k-step updates and diagnostics.

    Subclasses provide ``self.param`` (the δ tensor the hooks read), ``row_labels()`` and
    ``add_hooks(model) -> handles``. See the module docstring for the semantics.
    """

    param: Float[Tensor, "n_rows d"]
    #: key of the per-row table in :meth:`diagnostics` (``per_head`` / ``per_layer``)
    table_name = "per_row"

    def _setup(self, model: nn.Module, radii: Tensor | None, *, objective: str,
               memory: str, lambda_mem: float, lambda_reg: float, steps: int, lr: float,
               optimizer: str, reference: nn.Module | None) -> None:
        check_adversary_options(objective=objective, memory_loss_kind=memory,
                                lambda_mem=lambda_mem, lambda_reg=lambda_reg, steps=steps,
                                lr=lr, optimizer=optimizer)
        if objective == "match" and reference is None:
            raise ValueError("adv_objective 'match' needs the reference model (p_ref)")
        self.model, self.reference = model, reference
        self.objective, self.memory = objective, memory
        self.lambda_mem, self.lambda_reg = float(lambda_mem), float(lambda_reg)
        self.steps, self.lr, self.optimizer_name = int(steps), float(lr), optimizer
        self.radii = None if radii is None else radii.detach().float().to(self.param.device)
        self.param.requires_grad_(False)
        self.project_()
        self.opt = (torch.optim.Adam([self.param], lr=lr) if optimizer == "adam"
                    else torch.optim.SGD([self.param], lr=lr))
        self._row_scale = (None if self.radii is None or optimizer != "adam"
                           else (self.radii / math.sqrt(self.param.shape[-1]))[:, None])

    # -- applying δ ---------------------------------------------------------------
    @contextmanager
    def applied(self, model: nn.Module | None = None) -> Iterator[None]:
        """δ added (hooks on ``model``, default the trained model) for every forward in
        the block; exactly these hooks are removed on exit, also on an exception."""
        handles = self.add_hooks(self.model if model is None else model)
        try:
            yield
        finally:
            remove_all(handles)

    def add_hooks(self, model: nn.Module) -> list[Any]:  # pragma: no cover - abstract
        """Register δ's hooks on ``model`` and return their handles (the caller removes
        them; :meth:`applied` does it for a ``with`` block)."""
        raise NotImplementedError

    def row_labels(self) -> list[dict[str, int]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def logits(self, batch: Any) -> Tensor:
        ids, mask = _ids_mask(batch)
        with self.applied():
            return self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits

    # -- the ball -------------------------------------------------------------------
    @torch.no_grad()
    def project_(self) -> None:
        """Each row onto its own ball ``‖δ[row]‖ ≤ ε_row`` (no-op when unbounded)."""
        if self.radii is None:
            return
        norms = self.param.norm(dim=-1)
        factor = torch.where(norms > self.radii,
                             self.radii / norms.clamp_min(torch.finfo(norms.dtype).tiny),
                             torch.ones_like(norms))
        self.param.mul_(factor[:, None])

    def norms(self) -> Float[Tensor, " n_rows"]:
        return self.param.detach().norm(dim=-1)

    # -- the inner maximisation --------------------------------------------------------
    def step(self, batch: Any, logits_fn: Callable[[Any], Tensor] | None = None
             ) -> dict[str, Tensor]:
        """``steps`` projected updates of δ on ``batch`` (model fixed). ``logits_fn(batch)``
        overrides the forward under δ (the bridge backend passes one). Returns the last
        inner step's objective (``delta_mem`` or ``delta_ce``, weighted) and ``delta_reg``."""
        ids, mask = _ids_mask(batch)
        fwd = logits_fn or self.logits
        ref = None
        if self.objective == "match":
            with torch.no_grad():
                ref = F.log_softmax(self.reference(input_ids=ids, attention_mask=mask,
                                                   use_cache=False).logits.float(), dim=-1)
        d = self.param
        name = "delta_mem" if self.objective == "match" else "delta_ce"
        obj = reg = torch.zeros(())
        d.requires_grad_(True)
        try:
            for _ in range(self.steps):
                logits = fwd(batch)
                obj = self.lambda_mem * (memory_loss(logits, ref, mask, self.memory)
                                         if ref is not None else forget_ce(logits, ids, mask))
                reg = self.lambda_reg * (d ** 2).sum()
                loss = obj + reg
                if not torch.isfinite(loss):
                    break  # the trainer reports the non-finite term; δ is left untouched
                (grad,) = torch.autograd.grad(loss, [d])
                old = d.detach().clone()
                d.grad = grad
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
                if self._row_scale is not None:
                    with torch.no_grad():
                        d.copy_(old + (d - old) * self._row_scale)
                self.project_()
        finally:
            d.requires_grad_(False)
        return {name: obj.detach(), "delta_reg": reg.detach()}

    # -- diagnostics --------------------------------------------------------------------
    def norm_stats(self) -> dict[str, Any]:
        """‖δ‖ mean/max and, when bounded, ‖δ‖/ε median/min/max and frac_on_boundary."""
        return norm_stats(self.norms(), self.radii)

    def table(self) -> list[dict[str, Any]]:
        """One row per δ row: its label, radius, ‖δ‖ and ‖δ‖/ε."""
        norms = self.norms().tolist()
        out = []
        for i, label in enumerate(self.row_labels()):
            r = None if self.radii is None else float(self.radii[i])
            out.append({**label, "radius": r, "norm": round(norms[i], 6),
                        "ratio": None if r is None else round(norms[i] / r, 4)})
        return out


# ------------------------------------------------------------------------ the two kinds


class HeadAdversary(LatentAdversary):
    """δ[l,h] ∈ R^{d_head} on ``heads`` (a :class:`HeadPerturbation`), applied with
    ``o_proj`` pre-hooks.

    Args:
        model: the HF model δ is applied to (and whose heads are validated).
        heads: ``(layer, head)`` pairs.
        batches: forget-text batches for the κ-relative radii (needed unless ``epsilon``
            is given or ``kappa`` is None).
        kappa, epsilon: radius ``κ · E‖z_{l,h}‖`` per head, or ``epsilon`` for every head;
            both None: unbounded.
        sigma, seed: δ's ``N(0, σ²)`` initialisation (projected onto the ball).
        objective, memory_loss, lambda_mem, lambda_reg, steps, lr, optimizer: the step.
        reference: frozen original model (``p_ref``; needed for ``match``).
    """

    def __init__(self, model: nn.Module, heads: Sequence[Sequence[int]], *,
                 batches: Iterable[Any] | None = None, kappa: float | None = 1.0,
                 epsilon: float | None = None, sigma: float = 1e-3, seed: int = 0,
                 objective: str = "match", memory_loss: str = "kl", lambda_mem: float = 1.0,
                 lambda_reg: float = 0.0, steps: int = 3, lr: float = 0.1,
                 optimizer: str = "adam", reference: nn.Module | None = None,
                 head_norms: Tensor | None = None):
        heads = validate_heads(heads, model)
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"sigma_adv must be a finite number >= 0, got {sigma!r}")
        dims = dims_of(model)
        self.n_heads, self.d_head = dims["n_heads"], dims["d_head"]
        self.delta = HeadPerturbation.for_model(model, heads, sigma=sigma, seed=seed)
        self.heads = self.delta.heads
        self.param = self.delta.delta
        check_radius_options(kappa, epsilon)
        self.head_norms = None
        if epsilon is None and kappa is not None and head_norms is None:
            if batches is None:
                raise ValueError("kappa-relative radii need batches of forget text")
            head_norms = measure_head_norms(model, batches)
        if head_norms is not None:
            self.head_norms = torch.stack([head_norms[l, h] for l, h in self.heads])
        radii = radii_from(self.head_norms, kappa, epsilon, len(self.heads))
        self._setup(model, radii, objective=objective, memory=memory_loss,
                    lambda_mem=lambda_mem, lambda_reg=lambda_reg, steps=steps, lr=lr,
                    optimizer=optimizer, reference=reference)

    table_name = "per_head"

    def row_labels(self) -> list[dict[str, int]]:
        return [{"layer": l, "head": h} for l, h in self.heads]

    def add_hooks(self, model: nn.Module) -> list[Any]:
        return add_head_hooks(model, self.delta, self.delta.layers)


class ResidualAdversary(LatentAdversary):
    """δ[l] ∈ R^{d_model} added to the residual output of each decoder layer in
    ``layers`` at every position (RMU-LAT's adversary). Radius ``κ · E‖h_l‖`` or
    ``epsilon``; same step, projection and diagnostics as :class:`HeadAdversary`."""

    def __init__(self, model: nn.Module, layers: Sequence[int], *,
                 batches: Iterable[Any] | None = None, kappa: float | None = 0.1,
                 epsilon: float | None = None, sigma: float = 1e-3, seed: int = 0,
                 objective: str = "ce", memory_loss: str = "kl", lambda_mem: float = 1.0,
                 lambda_reg: float = 0.0, steps: int = 3, lr: float = 0.1,
                 optimizer: str = "adam", reference: nn.Module | None = None):
        n_layers = len(_layers(model))
        layers = list(layers)
        bad = [l for l in layers if isinstance(l, bool) or not isinstance(l, int)
               or not 0 <= l < n_layers]
        if not layers or bad or len(set(layers)) != len(layers):
            raise ValueError(f"layers {layers!r} must be distinct decoder layers in "
                             f"0..{n_layers - 1}")
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"sigma_adv must be a finite number >= 0, got {sigma!r}")
        self.layers = layers
        d_model = dims_of(model)["d_model"]
        gen = torch.Generator().manual_seed(int(seed))
        device = next(model.parameters()).device
        self.param = nn.Parameter((torch.randn(len(layers), d_model, generator=gen)
                                   * float(sigma)).to(device))
        check_radius_options(kappa, epsilon)
        self.layer_norms = None
        if epsilon is None and kappa is not None:
            if batches is None:
                raise ValueError("kappa-relative radii need batches of forget text")
            self.layer_norms = measure_resid_norms(model, batches)[layers]
        radii = radii_from(self.layer_norms, kappa, epsilon, len(layers))
        self._setup(model, radii, objective=objective, memory=memory_loss,
                    lambda_mem=lambda_mem, lambda_reg=lambda_reg, steps=steps, lr=lr,
                    optimizer=optimizer, reference=reference)

    table_name = "per_layer"

    def row_labels(self) -> list[dict[str, int]]:
        return [{"layer": l} for l in self.layers]

    def add_hooks(self, model: nn.Module) -> list[Any]:
        blocks = _layers(model)
        return register_all((lambda i=i, l=l: blocks[l].register_forward_hook(self._hook(i)))
                            for i, l in enumerate(self.layers))

    def _hook(self, row: int):
        def hook(module: nn.Module, args: tuple, out: Any) -> Any:
            if isinstance(out, Tensor):
                return out + self.param[row].to(out.dtype)
            return (out[0] + self.param[row].to(out[0].dtype),) + tuple(out[1:])
        return hook
