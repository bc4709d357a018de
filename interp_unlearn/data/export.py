"""Export a model as a standard Hugging Face checkpoint (safetensors).

The directory loads with ``transformers.AutoModelForCausalLM.from_pretrained``, with
lm-eval's ``hf`` model (``lm_eval --model hf --model_args pretrained=DIR``), with
:func:`interp_unlearn.data.loading.load_model` and the ``interp_unlearn`` lm-eval model
(``path=DIR``)::

    lm = load_model("organism")
    ...                                   # unlearn, attack, edit weights
    export_hf(lm.model, lm.tokenizer, "runs/rmu-organism", meta={"method": "rmu"})

Only weights are saved. PyTorch hooks (e.g. a head ablation applied through hooks) are
not part of a checkpoint, so :func:`export_hf` warns when the model carries any; PEFT
models must be merged first (``merge_and_unload()``), and a TransformerLens bridge is
exported through the HF model it wraps (``to_bridge`` shares its weights).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from interp_unlearn.data.loading import LoadedModel, check_checkpoint
from interp_unlearn.core.checkpoint import META_FILE, write_checksums, write_meta

__all__ = ["export_hf"]

_CHECKPOINT_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json")


def _hooked_modules(model: torch.nn.Module) -> list[str]:
    return [name or "<root>" for name, m in model.named_modules()
            if m._forward_hooks or m._forward_pre_hooks]


def export_hf(model: PreTrainedModel | LoadedModel, tokenizer: Any = None,
              out_dir: str | os.PathLike | None = None, meta: dict | None = None, *,
              overwrite: bool = False) -> Path:
    """Save ``model`` and ``tokenizer`` to ``out_dir`` as an HF checkpoint (``config.json``,
    ``model.safetensors`` -- sharded above 50 GB --, tokenizer files) and ``meta`` as
    ``interp_unlearn.json`` (what :func:`~interp_unlearn.data.loading.load_model` reads back as
    ``LoadedModel.meta``). Returns the directory.

    ``model`` may be a :class:`~interp_unlearn.data.loading.LoadedModel`: its tokenizer is used
    when ``tokenizer`` is None, and its meta when ``meta`` is None (with ``world_dir`` made
    absolute, so an exported organism still finds its MCQs). An existing checkpoint in
    ``out_dir`` is refused unless ``overwrite``.
    """
    if isinstance(model, LoadedModel):
        loaded = model
        model = loaded.model
        tokenizer = loaded.tokenizer if tokenizer is None else tokenizer
        if meta is None:
            meta = dict(loaded.meta)
            if loaded.world_dir is not None:
                meta["world_dir"] = str(loaded.world_dir)
    if out_dir is None:
        raise ValueError("out_dir is required")
    if hasattr(model, "peft_config") and hasattr(model, "merge_and_unload"):
        raise TypeError("a PEFT model: merge the adapters first (model = model.merge_and_unload()) "
                        "so the checkpoint is a plain HF model")
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"expected a transformers PreTrainedModel, got {type(model).__name__}; "
                        "for a TransformerLens bridge from interp_unlearn.core.bridge.to_bridge export "
                        "the HF model it wraps (they share weights)")
    wrapped = [k for k in model.state_dict() if "_original_component" in k]
    if wrapped:
        raise TypeError(f"the model's modules were replaced by TransformerBridge components "
                        f"(e.g. {wrapped[0]}); boot the bridge with to_bridge (which leaves the HF "
                        f"model intact) and export a freshly loaded model")
    if tokenizer is None:
        raise ValueError("tokenizer is required (the checkpoint must be loadable on its own)")
    if meta is not None:
        if not isinstance(meta, dict):
            raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
        json.dumps(meta)  # fail before writing anything if it is not JSON-able
    hooked = _hooked_modules(model)
    if hooked:
        warnings.warn(f"{len(hooked)} module(s) carry PyTorch forward hooks (e.g. {hooked[0]}); "
                      "hooks are not saved, so whatever they do is missing from the exported "
                      "checkpoint", RuntimeWarning, stacklevel=2)

    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    existing = [f for f in _CHECKPOINT_FILES if (out / f).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds a checkpoint ({existing[0]}); pass "
                              f"overwrite=True to replace it")
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for f in list(out.glob("model*.safetensors")) + [out / "model.safetensors.index.json",
                                                          out / META_FILE]:
            if f.is_file():
                f.unlink()  # no stale shard or meta may survive next to the new weights
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if meta is not None:
        write_meta(out, meta)
    write_checksums(out)
    check_checkpoint(out)
    return out
