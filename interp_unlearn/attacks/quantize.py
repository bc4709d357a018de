"""Quantization attack (Zhang et al. 2025): quantize the weights, evaluate again.

Zhang et al. report that 4-bit quantization of an unlearned model restores much of the
forgotten knowledge (the unlearning update is smaller than the quantization step, so
rounding snaps the weights back towards the original), while 8-bit is mostly harmless.

What this module does -- **simulated ("fake") quantization**: every weight matrix of the
targeted ``nn.Linear`` layers is quantized with **round-to-nearest, symmetric,
per-output-channel** scales and immediately **dequantized back to the model's float
dtype**; the model is then evaluated in float. Numerically this is what an int8 / int4
kernel computes up to the accumulation order (weights only; activations stay in float),
without needing bitsandbytes/AWQ/GPTQ kernels, which do not run on CPU.

* ``bits=8``: integer levels ``-127..127``; ``bits=4``: ``-7..7`` (symmetric, the level
  ``-8`` of int4 is unused). Scale of row ``i`` = ``max_j |W[i, j]| / qmax`` (a zero row
  keeps scale 1). ``group_size`` splits each row into groups of that many input columns
  with their own scale (GPTQ/AWQ use 128); the default ``None`` is per-channel.
* Layers: every ``nn.Linear`` inside the decoder (q/k/v/o and gate/up/down projections).
  The output head ``lm_head`` is kept in float by default, as GPTQ, AWQ and
  bitsandbytes do (``include_lm_head=True`` quantizes it too); embeddings and norms are
  not ``nn.Linear`` and stay in float. Biases are kept in float.
* Zhang et al. use GPTQ/AWQ (error-compensating) quantizers on MUSE models; plain RTN is
  the simplest member of that family and, if anything, perturbs the weights more.

The attack uses no data: ``N`` and ``seed`` are recorded but ignored (the result is
deterministic). ``bits=None`` evaluates the unquantized model (the control).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from interp_unlearn.attacks.common import (AttackResult, ModelSpec, load_attack_target,
                                           run_eval_for)

__all__ = ["QUANT_BITS", "quantize_attack", "quantize_model_", "quantize_weight", "quantized_linears"]

QUANT_BITS = (8, 4)


def quantize_weight(weight: Float[Tensor, "out inp"], bits: int,
                    group_size: int | None = None) -> Float[Tensor, "out inp"]:
    """Round-to-nearest symmetric quantize-dequantize of a 2-D weight, one scale per
    output row (or per ``group_size`` input columns of a row). Returns a new tensor of
    the same dtype."""
    if weight.ndim != 2:
        raise ValueError(f"expected a 2-D weight, got shape {tuple(weight.shape)}")
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an int in 2..16, got {bits!r}")
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach().float()
    out_f, in_f = w.shape
    if group_size is not None:
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"group_size must be a positive int or None, got {group_size!r}")
        if in_f % group_size:
            raise ValueError(f"group_size {group_size} does not divide the input width {in_f}")
        w = w.reshape(out_f, in_f // group_size, group_size)
    scale = w.abs().amax(dim=-1, keepdim=True) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(w / scale), -qmax, qmax)
    return (q * scale).reshape(out_f, in_f).to(weight.dtype)


def quantized_linears(model: nn.Module, include_lm_head: bool = False) -> list[tuple[str, nn.Linear]]:
    """The ``nn.Linear`` modules the attack quantizes (name, module)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [(name, mod) for name, mod in model.named_modules()
            if isinstance(mod, nn.Linear) and (include_lm_head or mod is not head)]


@torch.no_grad()
def quantize_model_(model: nn.Module, bits: int, group_size: int | None = None,
                    include_lm_head: bool = False) -> list[str]:
    """Quantize-dequantize the targeted Linear weights of ``model`` in place; returns
    their names. (Tied input/output embeddings are left alone with the head.)"""
    names = []
    for name, mod in quantized_linears(model, include_lm_head):
        mod.weight.copy_(quantize_weight(mod.weight, bits, group_size))
        names.append(name)
    return names


def quantize_attack(model: ModelSpec, n: int = 0, seed: int = 0, *, bits: int | None = 4,
                    group_size: int | None = None, include_lm_head: bool = False,
                    data: str = "none", pool: str = "none", mcq: Any = None,
                    scoring: str | None = None, domains: Sequence[str] = ("forget",),
                    batch_size: int = 32, keep_model: bool = False, **_: Any) -> AttackResult:
    """Quantize a copy of ``model`` to ``bits`` (8 or 4; ``None``: no quantization) and
    evaluate it. ``n``, ``seed``, ``data`` and ``pool`` are recorded only."""
    if bits is not None and bits not in QUANT_BITS:
        raise ValueError(f"bits must be one of {QUANT_BITS} or None, got {bits!r}")
    lm = load_attack_target(model, copy_weights=bits is not None)
    info: dict[str, Any] = {}
    if bits is not None:
        info["quantized"] = len(quantize_model_(lm.model, bits, group_size, include_lm_head))
    label = "quantize-none" if bits is None else ("quantize-int8" if bits == 8 else "quantize-4bit")
    config = {"bits": bits, "group_size": group_size, "include_lm_head": include_lm_head,
              "scheme": "rtn-symmetric-per-channel-dequantized"}
    return run_eval_for(lm, lm.model, attack=label, data=data, pool=pool, n=n, seed=seed,
                        mcq=mcq, scoring=scoring, domains=domains, batch_size=batch_size,
                        config=config, info=info, keep_model=keep_model)
