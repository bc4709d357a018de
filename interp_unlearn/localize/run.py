""":func:`run_localize`: load -> phase 1 (one seed or several) -> save -> heatmap (the CLI)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..world import World
from .config import LocalizeConfig
from .core import LocalizationResult
from .stability import STABILITY_FILE, localize_seeds, write_stability

__all__ = ["FIGURE_STEM", "run_localize"]

FIGURE_STEM = "head_sensitivity"


def run_localize(model_name: str, top_k: int | None, out_dir: str | Path,
                 config: LocalizeConfig | None = None, *, texts: Sequence[str] | None = None,
                 formats: Sequence[str] = ("html", "png", "svg"), device: str = "cpu",
                 progress: bool = True, backend: str | None = None,
                 dtype: str | None = None, seeds: Any = None,
                 overrides: Mapping[str, Any] | None = None) -> LocalizationResult:
    """Load -> localize (every seed) -> select top-K -> save -> heatmap export.

    Args:
        model_name: Built-in organism, local checkpoint directory or hub name
            (:func:`interp_unlearn.loading.load_model`).
        top_k: Heads to select (``1..n_layers*n_heads``); ``None``: the config's.
        out_dir: Receives ``scores.csv``, ``selected_heads.json``, ``localize_config.json``,
            ``loss_history.csv``, ``stability.json`` and ``head_sensitivity.{html,png,svg}``;
            with several seeds also ``seed{s}/`` per seed, and the top-level files hold the
            aggregate (mean score over seeds, its top-K).
        config: :class:`LocalizeConfig`; ``None``: the model family's defaults
            (:func:`interp_unlearn.presets.localize_config`: K = 4 and the organism
            objective for the shipped organism).
        texts: Training texts (documents; Q/A lines for ``answer-ce``); ``None``: the
            model's synthetic world (organisms).
        formats: Heatmap formats for :func:`interp_unlearn.plotting.save_figure`. PNG/SVG
            need Chromium; the results are saved before the figure, so a failed static
            export (``StaticExportError``) loses nothing else.
        device: Where to run.
        backend: ``tl`` | ``nnsight``; overrides ``config.backend``.
        seeds: A count (3 = seeds 0,1,2) or a list; overrides ``config.seeds``.
        overrides: Further :class:`LocalizeConfig` fields, applied last.

    Every option is validated before the model is loaded (``top_k`` against the model's
    heads before the first training step).

    Returns:
        The aggregate :class:`LocalizationResult` (the single run with one seed);
        ``meta["figures"]`` lists the figure files, ``meta["stability"]`` the record
        written to ``stability.json``.
    """
    from ..loading import load_model
    from ..plotting import save_figure, sensitivity_heatmap
    from ..presets import localize_config

    extra = dict(overrides or {})
    for name, value in (("top_k", top_k), ("backend", backend), ("seeds", seeds)):
        if value is not None:
            extra[name] = value
    if config is not None and not isinstance(config, LocalizeConfig):
        raise TypeError(f"config must be a LocalizeConfig, got {type(config).__name__}")
    if config is not None:
        config = dataclasses.replace(config, **extra)
    else:
        LocalizeConfig(**extra)  # validate before loading the model
    loaded = load_model(model_name, device=device, dtype=dtype)
    if config is None:
        config = localize_config(loaded, **extra)
    if texts is None:
        if loaded.world_dir is None:
            raise ValueError(f"{model_name} carries no synthetic world; pass the forget texts "
                             "(texts=...)")
        corpus: World | Sequence[str] = World.load(loaded.world_dir)
    else:
        corpus = list(texts)
    net = loaded.model
    if config.backend != "nnsight":
        from ..bridge import to_bridge
        net = to_bridge(loaded.model, loaded.tokenizer)
    multi = localize_seeds(net, loaded.tokenizer, corpus, config, progress=progress,
                           model_name=model_name)
    out = Path(out_dir)
    if config.seeds is None:
        result = next(iter(multi.runs.values()))
        result.save(out)
        write_stability(out / STABILITY_FILE, multi.stability)
    else:
        multi.save(out)
        result = multi.result
    result.meta["stability"] = multi.stability
    cfg = result.config
    what = (f"mean of {len(multi.runs)} seeds" if config.seeds is not None
            else f"seed {cfg.seed}")
    fig = sensitivity_heatmap(
        result.scores, result.selected,
        title=(f"{model_name}: head sensitivity ‖A[l,h]‖₂, {what}<br><sup>{cfg.objective}, "
               f"λ = {cfg.l1_lambda:g}; top-{len(result.selected)} starred</sup>"))
    paths = save_figure(fig, out / FIGURE_STEM, formats)
    result.meta["figures"] = {k: str(v) for k, v in paths.items()}
    return result
