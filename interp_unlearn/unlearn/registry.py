"""The registry of unlearning methods, and the small interface a method implements.

A method is one module (``rmu.py``, ``almpu.py``, ``ga.py``, ``ga_mp.py``, ``npo.py``,
``dpo.py``) holding one :class:`UnlearnMethod` subclass registered by name with
:func:`register`. The shared trainer (:mod:`interp_unlearn.unlearn.trainer`) owns
everything else: data, seeding, the optimiser over :meth:`UnlearnMethod.trainable`,
non-finite checks, evaluation, logging and the checkpoint.

Per training step the trainer calls

1. :meth:`UnlearnMethod.loss_terms` -> ``{term: tensor}``; every term is checked for
   NaN/inf, their **sum** is back-propagated and the optimiser steps;
2. :meth:`UnlearnMethod.post_step` -> ``{term: tensor}`` (e.g. ALMPU's δ step, which runs
   its own optimiser on parameters that are not the model's); also checked.

Built-in methods are imported lazily (``get_method("rmu")`` imports ``rmu.py``), so importing
the registry costs nothing and a method module can import the trainer's helpers.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

if TYPE_CHECKING:  # pragma: no cover
    from interp_unlearn.unlearn.trainer import Batch, MethodContext

__all__ = ["UnlearnMethod", "available_methods", "get_method", "register", "canonical_name"]

_METHODS: dict[str, type["UnlearnMethod"]] = {}
_BUILTIN_MODULES = {
    "rmu": "interp_unlearn.unlearn.methods.rmu",
    "almpu": "interp_unlearn.unlearn.methods.almpu",
    "ga": "interp_unlearn.unlearn.methods.ga",
    "ga_mp": "interp_unlearn.unlearn.methods.ga_mp",
    "npo": "interp_unlearn.unlearn.methods.npo",
    "dpo": "interp_unlearn.unlearn.methods.dpo",
    "rmu_lat": "interp_unlearn.unlearn.methods.rmu_lat",
    "adaptive_rmu": "interp_unlearn.unlearn.methods.adaptive_rmu",
    "npo_sam": "interp_unlearn.unlearn.methods.npo_sam",
}


@dataclass
class NoParams:
    """For methods without method-specific parameters."""


class UnlearnMethod:
    """Base class. Subclasses set the class attributes and implement :meth:`trainable`
    and :meth:`loss_terms`.

    Class attributes:
        name: registry name.
        Params: dataclass of the method-specific parameters (``UnlearnConfig.params``).
        defaults: defaults of generic :class:`~.trainer.UnlearnConfig` fields for this
            method (``lr``, ``batch_size``, ``max_num_batches``, ``seq_len``,
            ``padding_side``, ``adam_eps``, ``weight_decay``, corpora ...).
        presets: ``{preset: {"config": {generic fields}, "params": {method params}}}``.
        reference: ``"none"`` or ``"full"``: whether the trainer gives the method a
            frozen full copy of the model (``ctx.reference``).
        uses_heads: ``"no"``, ``"optional"`` or ``"required"``.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    defaults: ClassVar[dict[str, Any]] = {}
    presets: ClassVar[dict[str, dict[str, dict[str, Any]]]] = {}
    reference: ClassVar[str] = "none"
    uses_heads: ClassVar[str] = "no"

    def __init__(self, ctx: "MethodContext"):
        self.ctx = ctx
        self.params = ctx.params

    # -- what is trained ------------------------------------------------------------
    def trainable(self) -> dict[str, nn.Parameter]:
        """``{name in model.named_parameters(): parameter}`` the optimiser updates.
        Everything else is frozen (``requires_grad=False``) for the run."""
        raise NotImplementedError

    # -- per step -------------------------------------------------------------------
    def loss_terms(self, step: int, forget: "Batch", retain: "Batch | None") -> dict[str, Tensor]:
        """Weighted loss terms whose sum is minimised over :meth:`trainable`."""
        raise NotImplementedError

    def post_step(self, step: int, forget: "Batch", retain: "Batch | None") -> dict[str, Tensor]:
        """Runs after the optimiser step (adversary updates); returns terms to log."""
        return {}

    def state_summary(self) -> dict[str, Any]:
        """JSON-able extras logged with each evaluation (e.g. ‖δ‖)."""
        return {}

    def diagnostics(self) -> dict[str, Any]:
        """JSON-able diagnostics computed at every evaluation and at the end (written to
        ``diagnostics.json``); methods with an adversary report ‖δ‖/ε, its gain and
        ``adversary_alive``. Default: none (no file is written)."""
        return {}

    def close(self) -> None:
        """Remove hooks etc.; called once at the end of a run, also on errors."""

    # -- helpers --------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        return [f.name for f in fields(cls.Params)]

    @classmethod
    def make_params(cls, values: dict[str, Any]) -> Any:
        valid = cls.param_names()
        bad = sorted(set(values) - set(valid))
        if bad:
            raise ValueError(f"unknown parameter(s) {bad} for method {cls.name!r}; "
                             f"valid: {valid}")
        return cls.Params(**values)


def canonical_name(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register(name: str):
    """Class decorator: ``@register("rmu") class RMU(UnlearnMethod): ...``."""

    def deco(cls: type[UnlearnMethod]) -> type[UnlearnMethod]:
        key = canonical_name(name)
        if key in _METHODS and _METHODS[key] is not cls:
            raise ValueError(f"unlearning method {key!r} is already registered")
        cls.name = key
        _METHODS[key] = cls
        return cls

    return deco


def available_methods() -> list[str]:
    return sorted(set(_METHODS) | set(_BUILTIN_MODULES))


def get_method(name: str) -> type[UnlearnMethod]:
    """The method class registered as ``name`` (``ga-mp`` and ``ga_mp`` are the same)."""
    if not isinstance(name, str):
        raise TypeError(f"method must be a string, got {type(name).__name__}")
    key = canonical_name(name)
    if key not in _METHODS and key in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[key])
    if key not in _METHODS:
        raise ValueError(f"unknown unlearning method {name!r}; valid: {available_methods()}")
    return _METHODS[key]

