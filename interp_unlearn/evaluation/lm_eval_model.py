"""lm-eval model type ``interp_unlearn``: lm-eval's ``HFLM`` over anything
:func:`interp_unlearn.data.loading.load_model` accepts (a built-in organism, a local HF
checkpoint directory, a hub name).

lm-eval 0.4.13 finds models only in its own registry (no plugin entry points), so this
module must be imported before lm-eval looks the name up. From the command line use the
wrapper, which imports it and then runs lm-eval's own CLI with the same arguments::

    python -m interp_unlearn.evaluation.lm_eval_cli --model interp_unlearn \\
        --model_args path=organism-micro --tasks organism_wmdp --include_path TASK_DIR \\
        --device cpu --batch_size 8

(the bare ``lm_eval --model interp_unlearn`` cannot see the model: it never imports this
module). From Python::

    import interp_unlearn.evaluation.lm_eval_model  # registers "interp_unlearn"
    lm_eval.simple_evaluate(model="interp_unlearn", model_args="path=organism", ...)

``model_args``:

``path``
    built-in name (``organism``, ``organism-micro``, ...), local checkpoint directory or
    hub name (default ``organism``).
``dtype``
    ``float32`` (default), ``bfloat16``, ``float16``.
``device_map``
    e.g. ``auto`` for a model larger than one GPU (``--device`` is then ignored).
``heads``, ``ablate``, ``perturbation``, ``means``
    an intervention on attention heads, applied to every forward pass of the evaluation:
    ``heads`` = a ``selected_heads.json`` (:func:`interp_unlearn.core.selection.write_heads`;
    ``{"heads": [[layer, head], ...]}``) and exactly one of

    * ``ablate=zero``: :class:`~interp_unlearn.interventions.HeadAblation` zeroes the
      heads' outputs;
    * ``ablate=mean``: replaces them by ``means`` (a ``.pt``/``.safetensors`` tensor
      ``[n_layers, n_heads, d_head]`` such as
      :func:`~interp_unlearn.interventions.mean_head_outputs` returns, key ``means`` or
      the bare tensor); without ``means``, by their mean over the current batch and
      positions (padding included, so it depends on lm-eval's batching: a warning says so);
    * ``perturbation=<file>``: :class:`~interp_unlearn.interventions.HeadPerturbation`
      adds ``delta`` (``.pt``/``.safetensors``; ``HeadPerturbation.state_dict()``, i.e.
      key ``delta`` ``[n_selected, d_head]`` with rows in the heads file's order).

    The intervention acts where ``blocks.{l}.attn.hook_z`` is in TransformerLens: on the
    input of each decoder layer's ``self_attn.o_proj``, viewed as
    ``[batch, pos, n_heads, d_head]`` (forward pre-hooks on the HF model, as
    ``interp_unlearn.unlearn.methods.almpu`` applies delta; ``notes/bridge_findings.md`` section 5).

Every other argument goes to ``HFLM`` (``batch_size``, ``max_length``, ``add_bos_token``,
...); ``pretrained`` and ``tokenizer`` are set from ``path``. Scores equal ``HFLM``'s on
the same model (and :func:`interp_unlearn.evaluation.scoring.evaluate_mcq` with ``scoring="letter"``
on a ``write_lm_eval_task`` task).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from interp_unlearn.data.loading import LoadedModel, load_model
from interp_unlearn.interventions.hf_hooks import add_head_hooks

__all__ = ["ABLATIONS", "InterpUnlearnLM", "attach_to_o_proj", "build_intervention"]

ABLATIONS = ("zero", "mean")


def _check_intervention_args(heads, ablate, perturbation, means) -> None:
    """Validate ``heads`` / ``ablate`` / ``perturbation`` / ``means`` before anything is
    loaded."""
    if heads is None:
        if ablate is not None or perturbation is not None or means is not None:
            raise ValueError("ablate=, perturbation= and means= act on the heads given by "
                             "heads=<path to selected_heads.json>; heads= is missing")
        return
    if not Path(str(heads)).expanduser().is_file():
        raise FileNotFoundError(f"heads file not found: {heads}")
    if (ablate is None) == (perturbation is None):
        raise ValueError("with heads=..., give exactly one of ablate=zero|mean or "
                         "perturbation=<file>")
    if ablate is not None and ablate not in ABLATIONS:
        raise ValueError(f"ablate must be one of {ABLATIONS}, got {ablate!r}")
    if means is not None and ablate != "mean":
        raise ValueError("means= is only used with ablate=mean")
    for name, f in (("perturbation", perturbation), ("means", means)):
        if f is not None and not Path(str(f)).expanduser().is_file():
            raise FileNotFoundError(f"{name} file not found: {f}")


def _load_tensor(path, key: str) -> torch.Tensor:
    """The tensor ``key`` (or the only / bare tensor) of a ``.safetensors`` or torch file."""
    path = Path(str(path)).expanduser()
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        data = load_file(str(path))
    else:
        data = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(data, torch.Tensor):
        return data
    if isinstance(data, dict):
        if key in data:
            return data[key]
        tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
        if len(tensors) == 1:
            return tensors[0]
    raise ValueError(f"{path}: expected a tensor or a dict with the key {key!r}")


def build_intervention(model: torch.nn.Module, heads: str | os.PathLike,
                       ablate: str | None = None, perturbation: str | os.PathLike | None = None,
                       means: str | os.PathLike | None = None) -> torch.nn.Module:
    """The :class:`HeadAblation` or :class:`HeadPerturbation` that ``heads`` + ``ablate`` /
    ``perturbation`` / ``means`` describe (see the module docstring), validated against
    ``model`` and on its device."""
    from interp_unlearn.core.bridge import model_dims
    from interp_unlearn.interventions import HeadAblation, HeadPerturbation
    from interp_unlearn.core.selection import load_heads

    _check_intervention_args(heads, ablate, perturbation, means)
    selected = load_heads(heads, model)
    dims = model_dims(model)
    if ablate is not None:
        table = None if means is None else _load_tensor(means, "means").float()
        if ablate == "mean" and table is None:
            warnings.warn("ablate=mean without means=: each head is replaced by its mean over "
                          "the current batch and positions, padding included, so scores depend "
                          "on lm-eval's batch size; pass means=<file> (mean_head_outputs over a "
                          "reference set) for a fixed mean", RuntimeWarning, stacklevel=3)
        iv = HeadAblation(selected, mode=ablate, means=table)
    else:
        delta = _load_tensor(perturbation, "delta").float()
        if tuple(delta.shape) != (len(selected), dims["d_head"]):
            raise ValueError(f"{perturbation}: delta has shape {tuple(delta.shape)}, expected "
                             f"[{len(selected)} heads in {heads}, d_head={dims['d_head']}]")
        iv = HeadPerturbation(selected, dims["d_head"], sigma=0.0)
        with torch.no_grad():
            iv.delta.copy_(delta)
        iv.delta.requires_grad_(False)
    iv.validate(model)
    device = next(model.parameters()).device
    return iv.to(device)


def attach_to_o_proj(model: torch.nn.Module, intervention: torch.nn.Module) -> list:
    """Forward pre-hooks on ``o_proj`` of the intervention's layers applying
    ``intervention(z, l)`` to hook_z (:func:`~interp_unlearn.interventions.hf_hooks.add_head_hooks`).
    Returns the hook handles (``handle.remove()`` undoes them)."""
    return add_head_hooks(model, intervention, intervention.layers)


@register_model("interp_unlearn")
class InterpUnlearnLM(HFLM):
    """``HFLM`` over a model loaded by :func:`interp_unlearn.data.loading.load_model`."""

    def __init__(self, path: str = "organism", heads: str | None = None,
                 ablate: str | None = None, perturbation: str | None = None,
                 means: str | None = None, device: str | None = None,
                 dtype: str | torch.dtype | None = None, device_map: str | None = None,
                 **kwargs) -> None:
        for key in ("pretrained", "tokenizer"):
            if key in kwargs:
                raise ValueError(f"interp_unlearn takes the model from path=...; do not pass "
                                 f"{key}= (use --model hf for that)")
        if path is None or str(path) == "":
            raise ValueError("path= is required: a built-in name, a local checkpoint directory "
                             "or a hub name")
        _check_intervention_args(heads, ablate, perturbation, means)
        if dtype == "auto":
            dtype = None  # load_model's default: float32
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        loaded = load_model(os.fspath(path) if isinstance(path, os.PathLike) else str(path),
                            device=device, dtype=dtype, device_map=device_map)
        intervention, handles = None, []
        if heads is not None:
            intervention = build_intervention(loaded.model, heads, ablate, perturbation, means)
            handles = attach_to_o_proj(loaded.model, intervention)
        super().__init__(pretrained=loaded.model, tokenizer=loaded.tokenizer, **kwargs)
        self.loaded: LoadedModel = loaded  # the model, its tokenizer, name, path and meta
        #: the HeadAblation / HeadPerturbation in force (None without heads=), and the
        #: o_proj hook handles that apply it to every forward pass of ``self.model``
        self.intervention = intervention
        self.hook_handles = handles
