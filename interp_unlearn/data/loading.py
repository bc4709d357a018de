"""Model loading in one place: a built-in organism name, a local HF checkpoint directory,
or a hub name (real models; needs the network).

Errors are fast and name the culprit: an unknown built-in lists the valid ones, a partial
checkpoint names the missing file, and a hub name while offline says so at once instead of
stalling in retries. Pickled weights (``*.bin``) are refused: only safetensors are loaded.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from interp_unlearn.core.checkpoint import META_FILE, read_meta, verify_checksums
from interp_unlearn.data.organism import ASSETS

BUILTIN: dict[str, tuple[str, str]] = {
    "organism": ("organism-small", "model"),
    "organism-twin": ("organism-small", "twin"),
    "organism-micro": ("organism-micro", "model"),
    "organism-micro-twin": ("organism-micro", "twin"),
}
HUB_HOST = ("huggingface.co", 443)


class OfflineError(RuntimeError):
    """A hub name was given where nothing can be downloaded."""


class CheckpointError(FileNotFoundError):
    """A local checkpoint directory is missing a file it needs."""


class IncompleteCheckpointError(ValueError):
    """A checkpoint saved by a stopped or diverged unlearning run."""


_ACCEPT_INCOMPLETE = [False]


@contextmanager
def accepting_incomplete(enabled: bool = True) -> Iterator[None]:
    """Within the block, :func:`load_model` accepts stopped/diverged checkpoints by default."""
    old = _ACCEPT_INCOMPLETE[0]
    _ACCEPT_INCOMPLETE[0] = enabled
    try:
        yield
    finally:
        _ACCEPT_INCOMPLETE[0] = old


@dataclass
class LoadedModel:
    """An HF causal LM with its tokenizer and what the toolkit knows about it."""

    model: PreTrainedModel
    tokenizer: object
    name: str
    path: Path | None = None
    meta: dict = field(default_factory=dict)

    @property
    def default_scoring(self) -> str:
        """``cloze`` for organisms (no symbol binding at this size), ``letter`` (lm-eval's
        ``wmdp_bio`` scoring) for everything else."""
        return self.meta.get("default_scoring", "letter")

    @property
    def world_dir(self) -> Path | None:
        w = self.meta.get("world_dir")
        if w is None or self.path is None:
            return None
        return (self.path / w).resolve()

    @property
    def eval_pool(self) -> str:
        """The organism's default MCQ pool: ``eval`` (held-out phrasings) for ``organism``;
        ``practice`` for the micro test organism, which has no time to generalise."""
        return self.meta.get("eval_pool", "eval")

    def mcq_path(self, domain: str, pool: str | None = None) -> Path:
        """The model's own MCQ file for ``forget``/``retain``: an organism's world set
        (default: its eval pool), a packaged real model's shipped real-knowledge set
        (:mod:`.packaged`; ``eval``, the scored questions, or ``practice``, a disjoint
        set for tuning and head selection)."""
        if self.world_dir is None and self.meta.get("real_set"):
            if pool not in (None, "eval", "practice"):
                raise ValueError(f"{self.name}'s real-knowledge sets have the pools 'eval' "
                                 f"and 'practice', not {pool!r}")
            from interp_unlearn.data.packaged import real_set_path
            name = domain if pool in (None, "eval") else f"{domain}-practice"
            return real_set_path(self.meta["real_set"], name)
        pool = pool or self.eval_pool
        if self.world_dir is None:
            raise ValueError(f"{self.name} carries no synthetic world ({META_FILE} has no "
                             f"world_dir); pass an MCQ JSONL file instead of {domain!r}")
        from interp_unlearn.data.world import mcq_path
        return mcq_path(self.world_dir, domain, pool)


def builtin_path(name: str) -> Path:
    if name not in BUILTIN:
        raise ValueError(f"unknown built-in model {name!r}; valid: {sorted(BUILTIN)}")
    org, which = BUILTIN[name]
    path = ASSETS / org / which
    if not path.is_dir():
        preset = org.split("-", 1)[1]
        raise CheckpointError(
            f"built-in {name!r} is not built at {path}; run "
            f"`interp-unlearn organism train --preset {preset} --out {ASSETS / org}`")
    return path


def check_checkpoint(path: Path) -> None:
    """Raise :class:`CheckpointError` naming the first missing file of an HF checkpoint."""
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {path}")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} is not an HF checkpoint: missing config.json")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        root = path.resolve()
        for shard in shards:
            target = (path / shard).resolve()
            if target.parent != root:
                raise CheckpointError(f"{index}: shard {shard!r} points outside the checkpoint "
                                      "directory; refusing to follow it")
            if not (path / shard).is_file():
                raise CheckpointError(f"{path}: missing weight shard {shard} "
                                      f"(listed in model.safetensors.index.json)")
    elif not (path / "model.safetensors").is_file():
        if list(path.glob("*.bin")):
            raise CheckpointError(f"{path}: only pickled *.bin weights found; interp_unlearn "
                                  f"loads safetensors only (convert with save_pretrained("
                                  f"safe_serialization=True))")
        raise CheckpointError(f"{path}: missing model.safetensors")
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer.model")):
        raise CheckpointError(f"{path}: missing tokenizer.json (or tokenizer.model)")
    for weights in sorted(path.glob("*.safetensors")):
        _check_safetensors_header(weights)
    verify_checksums(path)  # names a changed or truncated file (when checksums.json exists)


def _check_safetensors_header(f: Path) -> None:
    """A truncated safetensors file is named here, not by a bare error inside the loader."""
    size = f.stat().st_size
    try:
        with f.open("rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n)) if 0 < n <= size - 8 else None
    except (OSError, ValueError):
        header = None
    if not isinstance(header, dict):
        raise CheckpointError(f"{f}: not a readable safetensors file (truncated or corrupted "
                              "header)")
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"),
              default=0)
    if 8 + n + end > size:
        raise CheckpointError(f"{f}: truncated ({size} bytes, the header needs {8 + n + end})")


def hub_reachable(timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(HUB_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def _offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def resolve(name_or_path: str | os.PathLike) -> tuple[str, Path | None]:
    """Return ``(kind, path)`` with kind ``builtin``, ``packaged`` (a real model inside an
    installed PyPI package, :mod:`.packaged`), ``local`` or ``hub``."""
    s = str(name_or_path)
    if s in BUILTIN:
        return "builtin", builtin_path(s)
    from interp_unlearn.data.packaged import PACKAGED
    if s in PACKAGED:
        return "packaged", None
    p = Path(s).expanduser()
    if p.exists() or s.startswith((".", "/", "~")):
        return "local", p
    if s.startswith(("organism", "smollm")):
        raise ValueError(f"unknown built-in model {s!r}; valid: {_builtin_names()}")
    return "hub", None


def _builtin_names() -> list[str]:
    from interp_unlearn.data.packaged import PACKAGED
    return sorted([*BUILTIN, *PACKAGED])


def _refuse_weightless(path: Path) -> None:
    """An unlearning run that stopped and kept no weights: say so (not 'missing file')."""
    if not (path / META_FILE).is_file() or (path / "model.safetensors").is_file() \
            or (path / "model.safetensors.index.json").is_file():
        return
    run = read_meta(path).get("unlearn") or {}
    if run.get("status", "completed") != "completed":
        raise IncompleteCheckpointError(
            f"{path}: its unlearning run stopped (status {run['status']!r} at step "
            f"{run.get('stopped_at_step', '?')}) and kept no weights "
            f"({run.get('weights', 'none kept')}); its metrics.jsonl shows the run")


class VocabMismatchError(CheckpointError):
    """The tokenizer can produce token ids the model has no embedding row for."""


def check_vocab(tokenizer: Any, model: Any, where: str = "the checkpoint") -> None:
    """Raise :class:`VocabMismatchError` when ``tokenizer`` knows more tokens than
    ``model``'s input embedding has rows (those ids would fail deep inside a forward pass
    with a bare ``IndexError``). A larger embedding than tokenizer (padding rows) is fine."""
    get = getattr(model, "get_input_embeddings", None)
    embedding = get() if callable(get) else None
    rows = getattr(embedding, "num_embeddings", None)
    if rows is None:
        return
    n_tokens = len(tokenizer)
    if n_tokens > rows:
        raise VocabMismatchError(
            f"{where}: the tokenizer has {n_tokens} tokens but the model's input embedding "
            f"has {rows} rows; token ids {rows}..{n_tokens - 1} would fail. Use the tokenizer "
            "saved with this model, or resize the embedding "
            "(model.resize_token_embeddings(len(tokenizer))) and save both together")


def load_model(name_or_path: str | os.PathLike, device: str | torch.device = "auto",
               dtype: torch.dtype | str | None = None, device_map: str | dict | None = None,
               *, accept_incomplete: bool | None = None) -> LoadedModel:
    """Load a causal LM and its tokenizer from a built-in name, a local directory or the hub.

    ``device`` ``auto`` (default) is the GPU when one is visible, else the CPU; ``dtype``
    defaults to float32 (bf16 is the sensible choice for 7B models on a GPU);
    ``device_map`` (e.g. ``"auto"``) spreads a model larger than one GPU over devices.
    A checkpoint whose unlearning run did not complete (``interp_unlearn.json``
    ``unlearn.status`` is ``stopped_non_finite`` or ``diverged``) is refused with
    :class:`IncompleteCheckpointError` unless ``accept_incomplete=True`` (``None``: the
    process-wide default, which :func:`accepting_incomplete` switches on for a block -- the
    CLI's ``--accept-incomplete``): its scores would read as forgetting."""
    if accept_incomplete is None:
        accept_incomplete = _ACCEPT_INCOMPLETE[0]
    if device is None or str(device) == "auto":  # the GPU when one is visible
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(dtype, str):
        if not hasattr(torch, dtype):
            raise ValueError(f"unknown dtype {dtype!r}; e.g. float32, bfloat16, float16")
        dtype = getattr(torch, dtype)
    kind, path = resolve(name_or_path)
    name = str(name_or_path)
    kwargs: dict = {"dtype": dtype or torch.float32}
    if device_map is not None:
        kwargs["device_map"] = device_map
    if kind == "packaged":
        from interp_unlearn.data.packaged import load_packaged
        model, tokenizer, meta = load_packaged(name, **kwargs)
    elif kind == "hub":
        if _offline_env():
            raise OfflineError(
                f"{name!r} is neither a built-in model ({', '.join(_builtin_names())}) nor a "
                f"local directory, and HF_HUB_OFFLINE is set: nothing can be downloaded. "
                f"Pass a local checkpoint directory instead.")
        if not hub_reachable():
            raise OfflineError(f"{name!r} looks like a hub name but {HUB_HOST[0]} cannot be "
                               f"reached; pass a local checkpoint directory instead.")
        model = AutoModelForCausalLM.from_pretrained(name, use_safetensors=True, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(name)
        meta: dict = {}
    else:
        _refuse_weightless(path)  # type: ignore[arg-type]  # path is set for builtin/local
        check_checkpoint(path)  # type: ignore[arg-type]
        meta = read_meta(path)
        status = (meta.get("unlearn") or {}).get("status", "completed")
        if status != "completed" and not accept_incomplete:
            raise IncompleteCheckpointError(
                f"{path}: its unlearning run did not complete (status {status!r} at step "
                f"{(meta.get('unlearn') or {}).get('stopped_at_step', '?')}); its scores would "
                "read as forgetting. Pass accept_incomplete=True (CLI: --accept-incomplete) "
                "to use it anyway")
        model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True,
                                                     local_files_only=True, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    check_vocab(tokenizer, model, where=str(path) if path else name)
    if device_map is None:
        model.to(device)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, name, path.resolve() if path else None, meta)
