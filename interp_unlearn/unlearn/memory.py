"""Memory for 7B models (issue 16): frozen references that share what is not trained,
gradient checkpointing, and the optimiser choice (AdamW, or bitsandbytes' 8-bit / paged
AdamW). LoRA unlearning is in :mod:`.lora`.

**Frozen references.** RMU, ALMPU and RMU-LAT compare the trained model with the original
at layer ℓ; NPO, DPO, GA-MP and the adversaries' ``match`` objective need the original's
logits. Only the *trained* tensors ever differ between the two, so
:func:`frozen_copy` builds the reference as a new module tree whose parameters and buffers
are the model's own objects except the trained ones, which are cloned (``copy.deepcopy``
with a memo pre-filled with the shared tensors). On Zephyr-7B with RMU's three
``down_proj`` matrices that is 176M copied parameters instead of 7.2B. The old full deep
copy stays available as ``UnlearnConfig.frozen_reference="deepcopy"`` (the oracle the tests
compare against: identical trained weights).
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from interp_unlearn.core.arch import decoder_layers

__all__ = ["OPTIMIZERS", "OptimizerUnavailableError", "build_optimizer", "copied_parameters",
           "disable_gradient_checkpointing", "enable_gradient_checkpointing", "frozen_copy",
           "unshare"]

OPTIMIZERS = ("adamw", "adamw8bit", "paged_adamw8bit", "paged_adamw")
REFERENCE_MODES = ("shared", "deepcopy")


class OptimizerUnavailableError(ImportError):
    """An optimiser that needs bitsandbytes was asked for where it does not import."""


# ------------------------------------------------------------------ frozen references


def frozen_copy(module: nn.Module, trained: Iterable[nn.Parameter] = (),
                deep: bool = False) -> nn.Module:
    """A frozen (``requires_grad=False``) copy of ``module`` that shares every parameter
    and buffer with it except those in ``trained`` (cloned); ``deep``: a full deep copy."""
    trained_ids = {id(p) for p in trained}
    memo: dict[int, Any] = {}
    if not deep:
        for t in list(module.parameters()) + list(module.buffers()):
            if id(t) not in trained_ids:
                memo[id(t)] = t
    out = copy.deepcopy(module, memo)
    own = {id(p) for p in module.parameters()}
    for p in out.parameters():
        if id(p) not in own:  # a copy: frozen (shared ones are the trainer's business)
            p.requires_grad_(False)
    return out


def unshare(reference: nn.Module, model: nn.Module, trained: Iterable[nn.Parameter]) -> int:
    """Give ``reference`` (a :func:`frozen_copy` sharing everything) its own frozen clone of
    each ``trained`` parameter, wherever it appears (tied weights included); returns the
    number of parameters cloned."""
    trained_ids = {id(p) for p in trained}
    clones: dict[int, nn.Parameter] = {}
    for name, p in list(reference.named_parameters(remove_duplicate=False)):
        if id(p) not in trained_ids:
            continue
        if id(p) not in clones:
            clones[id(p)] = nn.Parameter(p.detach().clone(), requires_grad=False)
        owner, _, leaf = name.rpartition(".")
        setattr(reference.get_submodule(owner) if owner else reference, leaf, clones[id(p)])
    return sum(c.numel() for c in clones.values())


def copied_parameters(reference: nn.Module | dict | None, model: nn.Module) -> int:
    """Parameters ``reference`` holds that are not the model's own tensors (what the
    frozen reference costs in memory)."""
    if reference is None:
        return 0
    mods = reference.values() if isinstance(reference, dict) else [reference]
    own = {q.data_ptr() for q in model.parameters()}
    seen: set[int] = set()
    n = 0
    for m in mods:
        for p in m.parameters():
            if p.data_ptr() not in own and p.data_ptr() not in seen:
                seen.add(p.data_ptr())
                n += p.numel()
    return n


# -------------------------------------------------------------- gradient checkpointing

_CALLS = {"n": 0}  # checkpointed layer calls (tests read it: the option is not ignored)


def _checkpointed(layer: nn.Module, forward: Any, *args: Any, **kwargs: Any) -> Any:
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    _CALLS["n"] += 1
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def enable_gradient_checkpointing(model: nn.Module) -> int:
    """Recompute each decoder layer's activations in the backward pass instead of keeping
    them (``torch.utils.checkpoint``, non-reentrant: correct when the inputs do not require
    grad, as with frozen embeddings). Works for every forward path -- the model's own and
    RMU's direct layer calls -- and in eval mode. Returns the number of wrapped layers."""
    layers = decoder_layers(model)
    for layer in layers:
        if "forward" not in vars(layer):
            layer.forward = functools.partial(_checkpointed, layer, layer.forward)
    return len(layers)


def disable_gradient_checkpointing(model: nn.Module) -> None:
    for layer in decoder_layers(model):
        if isinstance(vars(layer).get("forward"), functools.partial):
            del layer.forward


# --------------------------------------------------------------------------- optimiser


def build_optimizer(name: str, params: list[nn.Parameter], lr: float, betas: tuple,
                    eps: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW (``adamw``), or bitsandbytes' ``adamw8bit`` / ``paged_adamw8bit`` /
    ``paged_adamw`` (8-bit states: 2 bytes per parameter instead of 8; paged: states
    spill to CPU memory under GPU memory pressure). Raises
    :class:`OptimizerUnavailableError` when bitsandbytes does not import."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {name!r}")
    kw = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, **kw)
    bnb = import_bitsandbytes(name)
    cls = {"adamw8bit": bnb.optim.AdamW8bit, "paged_adamw8bit": bnb.optim.PagedAdamW8bit,
           "paged_adamw": bnb.optim.PagedAdamW}[name]
    return cls(params, **kw)


def import_bitsandbytes(what: str) -> Any:
    """``bitsandbytes``, or :class:`OptimizerUnavailableError` naming ``what`` needs it."""
    try:
        import bitsandbytes as bnb
        bnb.optim.AdamW8bit  # noqa: B018 - the attribute is what we need
    except Exception as err:  # ImportError, or a broken native library
        raise OptimizerUnavailableError(
            f"optimizer {what!r} needs bitsandbytes, which does not import here "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
            "pip install bitsandbytes, or use optimizer 'adamw'") from None
    return bnb
