""":class:`LocalizeConfig`: how ALMPU phase 1 trains the head-scaling factors.

Defaults are LoFiT's (``protocols.md`` section 2 and its trainer, ``fc2869/lo-fit``:
``lofit_trainer.py`` + ``utils/trainers.py``, which run the Hugging Face ``Trainer`` with
its defaults), except the phase-1 *objective*, which depends on the data (see
:data:`OBJECTIVES` and :func:`resolve_objective`).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from interp_unlearn.core.config import ConfigBase
from interp_unlearn.core.selection import LOFIT_DEFAULT_FRACTION
from interp_unlearn.data.families import detect_family
from interp_unlearn.data.world import FORGET_POOLS

__all__ = ["BACKENDS", "OBJECTIVES", "ORGANISM_OBJECTIVE", "QA_POOLS", "LocalizeConfig",
           "check_seeds", "localize_config", "resolve_objective"]

BACKENDS = ("tl", "nnsight")
#: ``auto`` resolves to :data:`ORGANISM_OBJECTIVE` for a synthetic world and to
#: ``corpus-ce`` for a list of texts (:func:`resolve_objective`).
OBJECTIVES = ("auto", "corpus-ce", "answer-ce", "paraphrase-ce")
#: Phase-1 objective used for organisms (a :class:`~interp_unlearn.data.world.World` corpus)
#: under ``objective="auto"``: LoFiT's answer-token CE on the practice pool's forget Q/A,
#: chosen by measurement (``notes/e5_phase1_signal.md``: the only objective whose ranking
#: was both reproducible across seeds and causal; with lambda = 1e-4, the organism preset).
ORGANISM_OBJECTIVE = "answer-ce"
#: Pools whose Q/A may train phase 1 (``answer-ce``, ``paraphrase-ce``). Never ``eval``:
#: the scored questions must not choose the heads.
QA_POOLS = ("practice", "attack")


def check_seeds(seeds: Any) -> tuple[int, ...]:
    """``seeds`` as a tuple of distinct ints >= 0: an int ``k`` (or ``"k"``) means
    ``0..k-1``, ``"0,2"`` or a list is taken as is (:func:`~interp_unlearn.core.records.parse_seeds`).

    Raises:
        ValueError: empty, a count < 1, a repeat, a negative or non-integer seed.
    """
    from interp_unlearn.core.records import parse_seeds

    try:
        out = parse_seeds(seeds)
    except (TypeError, ValueError) as err:
        raise ValueError(f"seeds must be a count >= 1 (3 = seeds 0,1,2) or a list of distinct "
                         f"ints >= 0 (0,1,2), got {seeds!r}: {err}") from None
    bad = [s for s in out if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad:
        raise ValueError(f"seeds must be ints >= 0, got {bad[0]!r} in {seeds!r}")
    return tuple(out)


def resolve_objective(objective: str, world_given: bool) -> str:
    """The concrete objective of ``objective`` (``auto``: :data:`ORGANISM_OBJECTIVE` with a
    world, ``corpus-ce`` with texts). Q/A-based objectives on texts need ``answer-ce``;
    ``paraphrase-ce`` needs a world (it generates the paraphrases)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if objective == "auto":
        return ORGANISM_OBJECTIVE if world_given else "corpus-ce"
    if objective == "paraphrase-ce" and not world_given:
        raise ValueError("objective 'paraphrase-ce' generates paraphrases from a synthetic "
                         "World; with a list of texts use 'corpus-ce' or 'answer-ce' (Q/A lines)")
    return objective


@dataclass
class LocalizeConfig(ConfigBase):
    """How phase 1 trains the scaling factors. Saved as ``localize_config.json``.

    Attributes:
        epochs: Passes over the training texts (LoFiT: 5). Ignored when ``steps`` is set.
        steps: Optimiser steps; ``None``: ``epochs * ceil(n_texts / batch_size)``.
        batch_size: Texts per step (LoFiT: 8).
        lr: Peak learning rate, decayed linearly to 0 (LoFiT: 5e-3).
        l1_lambda: Coefficient of ``sum |A|`` (LoFiT: 1e-3).
        sigma_A: Standard deviation of ``A``'s initialisation (LoFiT: 1e-3).
        seq_len: Tokens kept per text (truncation); lowered to the model's context.
        seed: Seeds ``A``'s initialisation and the order of the texts (one run).
        seeds: Several runs (``run_localize``, ``localize_seeds``): a count ``k`` (seeds
            ``0..k-1``) or a list; ``None``: the single run of ``seed``.
        weight_decay, betas, adam_eps: AdamW settings (HF Trainer defaults).
        max_grad_norm: Gradient-norm clipping (HF Trainer default 1.0); ``None``: off.
        top_k: Heads to select, ``1..n_layers*n_heads``; ``None``: LoFiT's 10 % (>= 1).
            The organism's K (4) is set by :func:`interp_unlearn.localize.config.localize_config`.
        objective: ``corpus-ce`` (the paper: CE on every token of the forget documents),
            ``answer-ce`` (LoFiT: CE on the answer tokens of Q/A lines only),
            ``paraphrase-ce`` (answer-token CE on Q/A in question phrasings the organism
            never saw, generated from the world) or ``auto`` (:func:`resolve_objective`).
        forget_pools: ``corpus-ce`` with a World: pools of its forget documents;
            ``None``: all pools (eval, practice, attack), as ALMPU uses the whole forget
            corpus.
        qa_pools: ``answer-ce``/``paraphrase-ce`` with a World: pools of its forget Q/A,
            a non-empty subset of :data:`QA_POOLS` (never ``eval``).
        answer_marker: ``answer-ce``: the answer is what follows the last occurrence of
            this marker in each text (``Question: ...\\nAnswer: <answer>``).
        backend: ``tl`` (TransformerLens bridge, ``hook_z``) or ``nnsight`` (nnsight on
            the HF model, input of the attention output projection).
    """

    epochs: int = 5
    steps: int | None = None
    batch_size: int = 8
    lr: float = 5e-3
    l1_lambda: float = 1e-3
    sigma_A: float = 1e-3
    seq_len: int = 512
    seed: int = 0
    seeds: tuple[int, ...] | None = None
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    top_k: int | None = None
    objective: str = "auto"
    forget_pools: tuple[str, ...] | None = None
    qa_pools: tuple[str, ...] = ("practice",)
    answer_marker: str = "Answer:"
    backend: str = "tl"

    def __post_init__(self) -> None:
        def positive_int(name: str, value: Any, allow_none: bool = False) -> None:
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1{' or None' if allow_none else ''}, "
                                 f"got {value!r}")

        positive_int("epochs", self.epochs)
        positive_int("steps", self.steps, allow_none=True)
        positive_int("batch_size", self.batch_size)
        positive_int("seq_len", self.seq_len)
        positive_int("top_k", self.top_k, allow_none=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        if self.seeds is not None:
            self.seeds = check_seeds(self.seeds)
        for name in ("lr", "adam_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("l1_lambda", "sigma_A", "weight_decay"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}")
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.forget_pools is not None:
            pools = tuple(self.forget_pools)
            bad = [p for p in pools if p not in FORGET_POOLS]
            if bad or not pools:
                raise ValueError(f"forget_pools must be a non-empty subset of {FORGET_POOLS}, "
                                 f"got {self.forget_pools!r}")
            self.forget_pools = pools
        pools = tuple(self.qa_pools) if not isinstance(self.qa_pools, str) else (self.qa_pools,)
        if not pools or any(p not in QA_POOLS for p in pools) or len(set(pools)) != len(pools):
            raise ValueError(f"qa_pools must be a non-empty subset of {QA_POOLS} (never the "
                             f"scored eval pool), got {self.qa_pools!r}")
        self.qa_pools = pools
        if not isinstance(self.answer_marker, str) or not self.answer_marker:
            raise ValueError(f"answer_marker must be a non-empty string, got {self.answer_marker!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")

    # SAELens-style persistence
    def resolved_top_k(self, n_heads_total: int) -> int:
        """``top_k``, or LoFiT's default ``max(1, int(0.1 * n_heads_total))``.

        Raises:
            ValueError: ``top_k`` outside ``1..n_heads_total`` (names both).
        """
        k = self.top_k if self.top_k is not None else max(1, int(LOFIT_DEFAULT_FRACTION * n_heads_total))
        if not 1 <= k <= n_heads_total:
            raise ValueError(f"top_k must be in 1..{n_heads_total} (the model's n_layers x "
                             f"n_heads), got {k}")
        return k

    def seed_list(self) -> list[int]:
        """``seeds`` as a list, or ``[seed]`` when ``seeds`` is ``None``."""
        return list(self.seeds) if self.seeds is not None else [self.seed]


def localize_config(model: Any, **overrides: Any) -> "LocalizeConfig":
    """A :class:`~interp_unlearn.localize.LocalizeConfig` with the family's localization
    defaults (``top_k`` from :attr:`Family.top_k_fraction` and the head count), then
    ``overrides``."""
    from interp_unlearn.core.bridge import model_dims

    fam = detect_family(model)
    values: dict[str, Any] = dict(fam.localize)
    if fam.top_k_fraction is not None and "top_k" not in overrides:
        from transformers import PretrainedConfig

        from interp_unlearn.data.loading import LoadedModel

        hf = model.model if isinstance(model, LoadedModel) else model
        if isinstance(hf, PretrainedConfig):
            hf = SimpleNamespace(config=hf)
        if not hasattr(hf, "config"):
            raise TypeError("localize_config needs a LoadedModel, an HF model or its config "
                            f"to count the heads, got {type(model).__name__}")
        dims = model_dims(hf)
        values["top_k"] = max(1, round(fam.top_k_fraction * dims["n_layers"] * dims["n_heads"]))
    values.update(overrides)
    return LocalizeConfig(**values)
