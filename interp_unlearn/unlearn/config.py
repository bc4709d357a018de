"""The unlearning trainer's configuration: :class:`UnlearnConfig`, generic defaults, and
how a method's defaults, its preset (from the model family) and explicit values combine."""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


from interp_unlearn.core.config import ConfigBase
from interp_unlearn.data.families import (ModelInfo, UnvalidatedPresetWarning, detect_family,
                                         model_info, scaled_layer)
from interp_unlearn.data.loading import LoadedModel
from interp_unlearn.unlearn.registry import UnlearnMethod, get_method


CONFIG_FILE = "unlearn_config.json"
METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "unlearn_result.json"

#: Generic defaults under every method's own ``defaults``.
BASE_DEFAULTS: dict[str, Any] = {
    "max_num_batches": 100,
    "batch_size": 4,
    "lr": 1e-5,
    "seq_len": 512,
    "seed": 42,
    "forget_corpus": "forget",
    "retain_corpus": "retain",
    "shuffle": True,
    "padding_side": "right",
    "adam_eps": 1e-8,
    "weight_decay": 0.0,
    "betas": (0.9, 0.999),
    "grad_clip": None,
}


# ----------------------------------------------------------------------------- config


@dataclass
class UnlearnConfig(ConfigBase):
    """Everything a run needs. ``None`` means "the method's / preset's default"; the
    resolved config (no ``None`` left where a default exists) is what gets saved.

    Attributes:
        method: registry name (``rmu``, ``almpu``, ``ga``, ``ga_mp``, ``npo``, ``dpo``).
        preset: a preset of the method (``zephyr``, ``organism``, ...). ``None``: the
            ``organism`` preset for organism checkpoints, the method defaults otherwise.
        max_num_batches: training steps (one forget batch + one retain batch each).
        batch_size, lr, seq_len (max tokens per text), seed.
        eval_every: evaluate every this many steps (0: only before and after).
        forget_corpus, retain_corpus: corpus spec (see :func:`resolve_corpus`).
        shuffle: seeded shuffle of the corpora (False: file order, like the reference).
        padding_side: ``left`` (RMU reference) or ``right``.
        adam_eps, weight_decay, betas, grad_clip: AdamW settings; ``grad_clip`` None = off.
        forget_mcq, retain_mcq: MCQ JSONL files to score (default: the model's own pools).
        eval_scoring: ``cloze`` / ``letter`` (default: the model's own).
        eval_batch_size: questions per forward pass in evaluation.
        params: method-specific parameters (see the method's ``Params`` dataclass).
        threads: ``torch.set_num_threads`` for the run (0: leave as is).
        progress: tqdm progress bar.
        check_grads: check gradients for NaN/inf before every optimiser step.
        evaluate: score the MCQs before/after (False: accuracies are None; for speed).
        grad_accum: gradient-accumulation steps. ``batch_size`` is the **effective** batch
            (rows per optimiser step): each process computes ``batch_size / (processes ×
            grad_accum)`` rows per micro-batch, and the result does not depend on the
            split (:mod:`~interp_unlearn.core.distributed`).
        gradient_checkpointing: recompute decoder-layer activations in the backward pass.
        lora_rank: LoRA adapters of this rank on the trained linear weights, merged at the
            end (0: off; :mod:`.lora`); lora_alpha: their scale numerator (None: 2·rank).
        optimizer: ``adamw``, or bitsandbytes' ``adamw8bit`` / ``paged_adamw8bit`` /
            ``paged_adamw`` (:mod:`.memory`).
        frozen_reference: ``shared`` (the frozen reference shares every untrained tensor
            with the model) or ``deepcopy`` (the old full copy; same results, more memory).
    """

    method: str = "rmu"
    preset: str | None = None
    max_num_batches: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seq_len: int | None = None
    seed: int | None = None
    eval_every: int = 0
    forget_corpus: Any = None
    retain_corpus: Any = None
    shuffle: bool | None = None
    padding_side: str | None = None
    adam_eps: float | None = None
    weight_decay: float | None = None
    betas: tuple[float, float] | None = None
    grad_clip: float | None = None
    forget_mcq: str | None = None
    retain_mcq: str | None = None
    eval_scoring: str | None = None
    eval_batch_size: int = 32
    params: dict[str, Any] = field(default_factory=dict)
    threads: int = 0
    progress: bool = True
    check_grads: bool = True
    evaluate: bool = True
    grad_accum: int = 1
    gradient_checkpointing: bool = False
    lora_rank: int = 0
    lora_alpha: float | None = None
    optimizer: str = "adamw"
    frozen_reference: str = "shared"

    @property
    def steps(self) -> int | None:
        return self.max_num_batches

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("forget_corpus", "retain_corpus"):
            v = d[k]
            if isinstance(v, (list, tuple)):
                d[k] = f"<{len(v)} texts given in memory>"
            elif isinstance(v, Path):
                d[k] = str(v)
        if d["betas"] is not None:
            d["betas"] = list(d["betas"])
        return d


_GENERIC_KEYS = tuple(BASE_DEFAULTS)


def _default_preset(cls: type[UnlearnMethod], lm: LoadedModel) -> tuple[str | None, dict[str, Any]]:
    """The model family's preset and parameter overrides (:mod:`interp_unlearn.data.families`);
    an :class:`UnvalidatedPresetWarning` when the values were not validated on the family
    (or the method has no preset for it)."""
    preset, params = method_preset(cls.name, lm)
    fam = detect_family(lm, warn=False)
    if not fam.validated or preset is None:
        what = (f"preset {preset!r}" + (f" with {params}" if params else "")
                if preset is not None else "no preset: the method's defaults")
        import warnings
        warnings.warn(f"{cls.name} on {lm.name} (family {fam.name}): {what}, UNVALIDATED for "
                      "this family -- check the forget/retain accuracies and tune the "
                      "method's parameters (--set KEY=VALUE) on practice questions",
                      UnvalidatedPresetWarning, stacklevel=3)
    return preset, params


def resolve_config(config: UnlearnConfig, lm: LoadedModel) -> tuple[UnlearnConfig, Any]:
    """Fill the ``None`` fields (base < method defaults < preset < explicit) and build the
    method's ``Params``. Returns ``(resolved config, params)``."""
    cls = get_method(config.method)
    preset, family_params = ((config.preset, {}) if config.preset is not None
                             else _default_preset(cls, lm))
    if preset is not None and preset not in cls.presets:
        raise ValueError(f"unknown preset {preset!r} for method {cls.name!r}; "
                         f"valid: {sorted(cls.presets)}")
    pre = cls.presets.get(preset, {}) if preset else {}
    bad = sorted(set(pre.get("config", {})) - set(_GENERIC_KEYS))
    if bad:  # a bug in a preset table, not a user error
        raise AssertionError(f"preset {preset!r} of {cls.name!r} sets unknown fields {bad}")
    values = {**BASE_DEFAULTS, **cls.defaults, **pre.get("config", {})}
    for k in _GENERIC_KEYS:
        v = getattr(config, k)
        if v is not None:
            values[k] = v
    params_dict = {**pre.get("params", {}), **family_params, **(config.params or {})}
    params = cls.make_params(params_dict)
    resolved = copy.copy(config)
    for k, v in values.items():
        setattr(resolved, k, v)
    resolved.method = cls.name
    resolved.preset = preset
    resolved.betas = tuple(resolved.betas)
    resolved.params = asdict(params)
    _validate(resolved)
    return resolved, params


def _validate(c: UnlearnConfig) -> None:
    for k in ("max_num_batches", "batch_size", "seq_len"):
        v = getattr(c, k)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{k} must be a positive int, got {v!r}")
    if not isinstance(c.eval_every, int) or c.eval_every < 0:
        raise ValueError(f"eval_every must be an int >= 0, got {c.eval_every!r}")
    if not (isinstance(c.lr, (int, float)) and c.lr > 0 and math.isfinite(c.lr)):
        raise ValueError(f"lr must be a positive number, got {c.lr!r}")
    if c.padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {c.padding_side!r}")
    if c.grad_clip is not None and not c.grad_clip > 0:
        raise ValueError(f"grad_clip must be None or > 0, got {c.grad_clip!r}")
    if isinstance(c.grad_accum, bool) or not isinstance(c.grad_accum, int) or c.grad_accum < 1:
        raise ValueError(f"grad_accum must be a positive int, got {c.grad_accum!r}")
    if isinstance(c.lora_rank, bool) or not isinstance(c.lora_rank, int) or c.lora_rank < 0:
        raise ValueError(f"lora_rank must be an int >= 0 (0: no LoRA), got {c.lora_rank!r}")
    if c.lora_alpha is not None and not (isinstance(c.lora_alpha, (int, float))
                                         and c.lora_alpha > 0):
        raise ValueError(f"lora_alpha must be None or > 0, got {c.lora_alpha!r}")
    from interp_unlearn.unlearn.memory import OPTIMIZERS, REFERENCE_MODES

    if c.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {c.optimizer!r}")
    if c.frozen_reference not in REFERENCE_MODES:
        raise ValueError(f"frozen_reference must be one of {list(REFERENCE_MODES)}, got "
                         f"{c.frozen_reference!r}")


def method_preset(method: str, model: Any) -> tuple[str | None, dict[str, Any]]:
    """``(preset name or None, method-parameter overrides)`` for ``method`` on ``model``.

    The preset is the first of the family's :attr:`Family.presets` that the method
    defines (``None``: the method's defaults, e.g. GA on Zephyr). For a ``scale_layer``
    family the overrides set RMU/ALMPU's ``layer`` to :func:`scaled_layer`; explicit
    ``params`` of the caller go on top of both (the trainer's order)."""
    info = model if isinstance(model, ModelInfo) else model_info(model)
    fam = detect_family(info)
    cls = get_method(method)
    names = [p.format(preset=info.meta.get("preset", "")) for p in fam.presets]
    preset = next((n for n in names if n in cls.presets), None)
    params: dict[str, Any] = {}
    if fam.scale_layer and preset is not None and "layer" in cls.param_names():
        if info.n_layers is None:
            raise ValueError(f"cannot scale the RMU layer for {info.label!r}: its "
                             "number of layers is unknown (pass a loaded model or a local "
                             "checkpoint directory, not a bare hub name)")
        params["layer"] = scaled_layer(info.n_layers)
    return preset, params
