"""What ALMPU, GA-MP and RMU-LAT share about their latent adversary: one parameter mixin
(:class:`AdversaryParams`, validated when the params are built, i.e. before any
training), building the adversary from the trainer's context, and its diagnostics.

The mechanism itself (δ, radii, k projected steps, objectives, ‖δ‖/ε, gain) lives in
:mod:`interp_unlearn.interventions.adversary` so that the head-restore attack uses the
same machinery without importing an unlearning method.

**Measured defaults** (``notes/adversary_defaults.md``; shipped organism, seed 0,
practice pools): see :data:`ADVERSARY_NOTES`. RMU-LAT overrides ``kappa`` (0.25 of the
residual norm) and ``adv_objective`` (``ce``); GA-MP's organism preset uses ``kappa`` 0.25.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from interp_unlearn.evaluation.adversary_gain import adversary_diagnostics as _diagnose
from interp_unlearn.interventions.adversary import (HeadAdversary, LatentAdversary,
                                                    ResidualAdversary, check_adversary_options,
                                                    check_radius_options, forget_ce)
from interp_unlearn.unlearn.batches import TextBatches, resolve_corpus
from interp_unlearn.unlearn.trainer import Batch, MethodContext

__all__ = ["ADVERSARY_NOTES", "AdversaryParams", "adversary_diagnostics", "build_head_adversary",
           "build_residual_adversary", "gain_mcq", "output_term", "validate_adversary_params"]

BACKENDS = ("hf", "bridge")

ADVERSARY_NOTES = """\
Defaults chosen by measurement (notes/adversary_defaults.md; shipped organism, ALMPU with
heads 0.0,0.1,0.3,0.5, seed 0, practice pools, one thread). Final median ‖δ‖/ε and the
answer log-prob gain on forget-practice (forget accuracy in brackets; RMU 0.289):
  legacy (ε 4, vocab-mean MSE, λ_reg 1e-4, k 1): 0.037, +0.17 (0.282) -> inert
  κ 0.5: k 1 1.0, +0.50 (0.293); k 3 1.0, +0.53 (0.296); k 5 1.0, +0.47 (0.287)
  κ 1:   k 1 1.0, +0.89 (0.300); k 3 1.0, +0.94 (0.309); k 5 1.0, +0.33 (0.300)
  κ 2:   k 1 0.80, +0.10, choice-normalised gain −0.14 (0.351); k 3 1.0, +1.31 (0.340);
         k 5 1.0, +0.41 (0.351)
κ 2 with k 1 lags θ; κ 2 costs 3-6 points of forgetting. Defaults: κ 1 (each head's ball
is its own mean output norm), k 3, delta_lr 0.1 (an Adam step moves δ by ~0.1 ε), KL,
λ_reg 0. Cost per step (interleaved benchmark): RMU 0.47 s, ALMPU k 1/3/5 1.20/2.14/3.12 s.
"""


@dataclass
class AdversaryParams:
    """The adversary's parameters (mixed into ALMPU's, GA-MP's and RMU-LAT's Params).

    Attributes:
        adversarial: apply δ (detached) in θ's forget forward (the adversarial reading);
            False: δ is trained only as a diagnostic and θ follows the base method.
        kappa: radius per row ``ε = κ · E‖z‖`` (heads) or ``κ · E‖h_l‖`` (residual),
            measured on ``norm_batches`` forget batches of the original model.
        epsilon: absolute radius for every row; None (default): κ-relative.
        sigma_adv: σ of δ's ``N(0, σ²)`` initialisation.
        lambda_mem: weight of the adversary's objective; lambda_reg: of Σ‖δ‖² (default 0,
            the ball is the constraint; the paper's eq. 8 term, kept as an option).
        memory_loss: ``kl`` (KL(p_ref‖p_θ,δ) summed over the vocabulary), ``mse_sum``, or
            ``mse_mean`` (legacy: the vocabulary-averaged MSE, O(1/V)).
        adv_objective: ``match`` (paper eq. 8, restore p_ref) or ``ce`` (restore forget
            CE, targeted LAT).
        delta_steps: k projected δ steps per θ step (1..100).
        delta_lr: Adam: step size as a fraction of each row's radius; sgd: absolute rate.
        delta_optimizer: ``adam`` or ``sgd``.
        output_weight: **extension, not the paper**: θ additionally ascends the full
            model's forget CE under δ with this weight, so heads after the RMU layer can
            matter (0 = off).
        backend: ``hf`` (hooks on the HF model) or ``bridge`` (TransformerBridge).
        norm_batches: forget batches used to measure the norms the radii are relative to.
        gain_mcq: MCQ file for the gain diagnostic (None: the organism's held-out pool).
    """

    adversarial: bool = True
    kappa: float = 1.0
    epsilon: float | None = None
    sigma_adv: float = 1e-3
    lambda_mem: float = 1.0
    lambda_reg: float = 0.0
    memory_loss: str = "kl"
    adv_objective: str = "match"
    delta_steps: int = 3
    delta_lr: float = 0.1
    delta_optimizer: str = "adam"
    output_weight: float = 0.0
    backend: str = "hf"
    norm_batches: int = 4
    gain_mcq: str | None = None

    def __post_init__(self) -> None:
        validate_adversary_params(self)


def validate_adversary_params(p: Any) -> None:
    """Raise ValueError naming the first bad option and its valid range."""
    if not isinstance(p.adversarial, bool):
        raise ValueError(f"adversarial must be true or false, got {p.adversarial!r}")
    check_radius_options(p.kappa, p.epsilon)
    if p.kappa is None:
        raise ValueError("kappa must be a finite number > 0, got None")
    check_adversary_options(objective=p.adv_objective, memory_loss_kind=p.memory_loss,
                            lambda_mem=p.lambda_mem, lambda_reg=p.lambda_reg,
                            steps=p.delta_steps, lr=p.delta_lr, optimizer=p.delta_optimizer)
    for name in ("sigma_adv", "output_weight"):
        v = getattr(p, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if p.backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {p.backend!r}")
    if isinstance(p.norm_batches, bool) or not isinstance(p.norm_batches, int) \
            or not 1 <= p.norm_batches <= 1000:
        raise ValueError(f"norm_batches must be an int in 1..1000, got {p.norm_batches!r}")
    if p.gain_mcq is not None and not Path(str(p.gain_mcq)).is_file():
        raise ValueError(f"gain_mcq {p.gain_mcq!r} is not a file")


def _norm_batches(ctx: MethodContext, n: int) -> list[Batch]:
    """The first ``n`` forget batches of a stream seeded like the trainer's (the trainer's
    own stream is not consumed)."""
    c = ctx.config
    texts = (ctx.forget_texts if ctx.forget_texts is not None  # the trainer's (a packaged
             else resolve_corpus(c.forget_corpus, ctx.world_dir, "forget corpus"))  # model's)
    stream = TextBatches(texts, ctx.tokenizer, c.batch_size, c.seq_len, c.seed, c.shuffle,
                         c.padding_side)
    return [next(stream).to(ctx.device) for _ in range(min(n, stream.batches_per_pass))]


def _common(p: Any, ctx: MethodContext) -> dict[str, Any]:
    return dict(kappa=p.kappa, epsilon=p.epsilon, sigma=p.sigma_adv, seed=ctx.config.seed,
                objective=p.adv_objective, memory_loss=p.memory_loss, lambda_mem=p.lambda_mem,
                lambda_reg=p.lambda_reg, steps=p.delta_steps, lr=p.delta_lr,
                optimizer=p.delta_optimizer, reference=ctx.reference)


def build_head_adversary(ctx: MethodContext, heads: list[tuple[int, int]], p: Any
                         ) -> HeadAdversary:
    batches = _norm_batches(ctx, p.norm_batches) if p.epsilon is None else None
    return HeadAdversary(ctx.model, heads, batches=batches, **_common(p, ctx))


def build_residual_adversary(ctx: MethodContext, layer: int, p: Any) -> ResidualAdversary:
    batches = _norm_batches(ctx, p.norm_batches) if p.epsilon is None else None
    return ResidualAdversary(ctx.model, [layer], batches=batches, **_common(p, ctx))


def gain_mcq(ctx: MethodContext, p: Any) -> tuple[Any, str] | tuple[None, None]:
    """``(MCQ file, label)`` for the gain diagnostic: ``gain_mcq`` when given; else the
    organism's forget **practice** pool (its **attack** pool when the model is scored on
    practice, as the micro organism is) -- never the pool the run is scored on; without a
    world, the forget MCQ the run scores, labelled as such; else none."""
    if p.gain_mcq is not None:
        return Path(p.gain_mcq), f"given: {p.gain_mcq}"
    if ctx.world_dir is not None:
        from interp_unlearn.data.world import mcq_path

        pool = "attack" if getattr(ctx, "eval_pool", None) == "practice" else "practice"
        return mcq_path(ctx.world_dir, "forget", pool), f"forget-{pool} (held out)"
    if getattr(ctx, "practice_mcq", None) is not None and ctx.config.forget_mcq is None:
        return ctx.practice_mcq, f"{ctx.practice_mcq.stem} (held out)"
    if ctx.config.forget_mcq is not None:
        return Path(ctx.config.forget_mcq), "the scored forget MCQ (no world: not held out)"
    return None, None


def adversary_diagnostics(adv: LatentAdversary, ctx: MethodContext, p: Any) -> dict[str, Any]:
    """The adversary's diagnostics for the trainer (metrics.jsonl, diagnostics.json)."""
    items, label = gain_mcq(ctx, p)
    out = _diagnose(adv, ctx.tokenizer, items, getattr(ctx, "eval_config", None),
                    label)
    out["adversary"] = type(adv).__name__
    out["adv_objective"] = p.adv_objective
    return out


def output_term(p: Any, logits: Tensor, forget: Batch) -> Tensor:
    """**Extension, not the paper**: ``−output_weight · CE(x_f; θ, δ)`` of the full model
    under δ (θ ascends the forget CE the adversary restores)."""
    return -p.output_weight * forget_ce(logits, forget.input_ids, forget.attention_mask)
