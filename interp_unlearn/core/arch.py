"""Architecture helpers for HF causal LMs: the decoder stack, its layers, the final norm and
the residual stream a decoder layer returns (shared by every stage)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["decoder_layers", "decoder_of", "final_norm", "layer_output", "replace_layer_output"]


def decoder_of(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder stack (``LlamaModel`` ...) of an HF causal LM."""
    if hasattr(model, "get_decoder"):
        dec = model.get_decoder()
        if dec is not None:
            return dec
    dec = getattr(model, "model", None)
    if dec is None:
        raise TypeError(f"cannot find the decoder stack of {type(model).__name__}")
    return dec


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder's ``layers`` (``model.model.layers`` for Llama, Mistral/Zephyr, Qwen ...)."""
    layers = getattr(decoder_of(model), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise TypeError(f"{type(model).__name__}: the decoder has no .layers (expected an HF "
                        "decoder-only LM such as LlamaForCausalLM)")
    return layers


def final_norm(model: torch.nn.Module) -> torch.nn.Module:
    dec = decoder_of(model)
    for attr in ("norm", "final_layernorm", "ln_f"):
        mod = getattr(dec, attr, None)
        if mod is not None:
            return mod
    raise TypeError(f"{type(model).__name__}: cannot find the final norm")


def layer_output(out: Any) -> torch.Tensor:
    """The hidden state from a decoder layer's output (a tensor, or a tuple's first item)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def replace_layer_output(out: Any, new: torch.Tensor) -> Any:
    if isinstance(out, tuple):
        return (new, *out[1:])
    if isinstance(out, list):
        return [new, *out[1:]]
    return new
