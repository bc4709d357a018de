"""``unlearn(model, method, ...)``: load (by name or a LoadedModel), train, save -- one call."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from interp_unlearn.data.loading import LoadedModel, load_model
from interp_unlearn.unlearn.config import UnlearnConfig
from interp_unlearn.unlearn.context import UnlearnResult
from interp_unlearn.unlearn.trainer import Trainer

__all__ = ["unlearn"]


def unlearn(model: str | os.PathLike | LoadedModel, method: str | None = None,
            config: UnlearnConfig | dict | None = None, heads: Any = None,
            out_dir: str | Path | None = None, overwrite: bool = False,
            **overrides: Any) -> UnlearnResult:
    """Unlearn with one method and save the result as an HF checkpoint in ``out_dir``.

    Args:
        model: built-in name (``organism``, ``organism-micro``), checkpoint directory, hub
            name, or a :class:`~interp_unlearn.data.loading.LoadedModel` (trained in place).
        method: registry name; overrides ``config.method``.
        config: an :class:`UnlearnConfig` or a dict of its fields.
        heads: ``[(layer, head), ...]``, ``"2.1,3.0"`` or a selected-heads JSON file
            (ALMPU: required; GA-MP: default all heads; others: not used).
        out_dir: output directory (default ``runs/unlearn/<model>-<method>-seed<seed>``);
            never the input model; a non-empty one only with ``overwrite=True``.
        **overrides: UnlearnConfig fields (``steps`` means ``max_num_batches``).

    Returns:
        :class:`UnlearnResult`: paths and forget/retain accuracy before and after.
    """
    if isinstance(config, dict):
        config = UnlearnConfig.from_dict(config)
    config = copy.deepcopy(config) if config is not None else UnlearnConfig()
    if method is not None:
        config.method = method
    if "steps" in overrides:
        overrides["max_num_batches"] = overrides.pop("steps")
    for k, v in overrides.items():
        if not hasattr(config, k) or k == "steps":
            raise ValueError(f"unknown UnlearnConfig field {k!r}")
        setattr(config, k, v)
    lm = model if isinstance(model, LoadedModel) else load_model(model)
    return Trainer(lm, config, heads=heads, out_dir=out_dir, overwrite=overwrite).run()


