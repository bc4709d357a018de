"""Data: the synthetic world, the organism's tokenizer and training recipe, model loading,
model families, export, and datasets by their real names (``cais/wmdp`` ...).

The dataset functions of the old ``interp_unlearn.data`` module (``load_mcq_dataset``,
``load_corpus`` ...) live in :mod:`.datasets` and :mod:`.corpora` and stay importable from here (loaded on
first use, so that ``import interp_unlearn.data.world`` stays light).
"""

from __future__ import annotations

from typing import Any

_DATASETS = ("CORPORA", "GatedDatasetError", "MCQ_DATASETS", "Source", "load_corpus",
             "load_mcq_dataset", "offline", "organism_world_dir", "resolve_corpus",
             "resolve_mcq")

__all__ = list(_DATASETS)


def __getattr__(name: str) -> Any:
    if name in ("load_corpus", "resolve_corpus"):
        from interp_unlearn.data import corpora
        return getattr(corpora, name)
    if name in _DATASETS:
        from interp_unlearn.data import datasets
        return getattr(datasets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
