""":func:`run_localize`: load -> phase 1 (one seed or several) -> save -> heatmap, and
:func:`run_attribution`, the same for ablation attribution (the CLI's ``localize``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from interp_unlearn.core.mcq import load_mcq
from interp_unlearn.data.world import World
from interp_unlearn.localize.attribution import (AttributionConfig, AttributionResult,
                                                 attribution_pools, head_attribution)
from interp_unlearn.localize.config import LocalizeConfig
from interp_unlearn.localize.core import LocalizationResult
from interp_unlearn.localize.stability import STABILITY_FILE, localize_seeds, write_stability

__all__ = ["FIGURE_STEM", "run_attribution", "run_localize"]

FIGURE_STEM = "head_sensitivity"


def run_localize(model_name: Any, top_k: int | None, out_dir: str | Path,
                 config: LocalizeConfig | None = None, *, texts: Sequence[str] | None = None,
                 formats: Sequence[str] = ("html", "png", "svg"), device: str = "cpu",
                 progress: bool = True, backend: str | None = None,
                 dtype: str | None = None, seeds: Any = None,
                 overrides: Mapping[str, Any] | None = None) -> LocalizationResult:
    """Load -> localize (every seed) -> select top-K -> save -> heatmap export.

    Args:
        model_name: Built-in organism, local checkpoint directory or hub name
            (:func:`interp_unlearn.data.loading.load_model`), or a loaded model.
        top_k: Heads to select (``1..n_layers*n_heads``); ``None``: the config's.
        out_dir: Receives ``scores.csv``, ``selected_heads.json``, ``localize_config.json``,
            ``loss_history.csv``, ``stability.json`` and ``head_sensitivity.{html,png,svg}``;
            with several seeds also ``seed{s}/`` per seed, and the top-level files hold the
            aggregate (mean score over seeds, its top-K).
        config: :class:`LocalizeConfig`; ``None``: the model family's defaults
            (:func:`interp_unlearn.localize.config.localize_config`: K = 4 and the organism
            objective for the shipped organism).
        texts: Training texts (documents; Q/A lines for ``answer-ce``); ``None``: the
            model's synthetic world (organisms) or its shipped forget corpus (a packaged
            real model, :mod:`interp_unlearn.data.packaged`).
        formats: Heatmap formats for :func:`interp_unlearn.plotting.save_figure`. PNG/SVG
            need Chromium; the results are saved before the figure, so a failed static
            export (``StaticExportError``) loses nothing else.
        device: Where to run.
        backend: ``tl`` | ``nnsight``; overrides ``config.backend``.
        seeds: A count (3 = seeds 0,1,2) or a list; overrides ``config.seeds``. (The
            command line's ``--seeds`` is always a list: ``3`` there is seed 3 alone.)
        overrides: Further :class:`LocalizeConfig` fields, applied last.

    Every option is validated before the model is loaded (``top_k`` against the model's
    heads before the first training step).

    Returns:
        The aggregate :class:`LocalizationResult` (the single run with one seed);
        ``meta["figures"]`` lists the figure files, ``meta["stability"]`` the record
        written to ``stability.json``.
    """
    from interp_unlearn.data.loading import load_model
    from interp_unlearn.plotting import save_figure, sensitivity_heatmap
    from interp_unlearn.localize.config import localize_config

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
    from interp_unlearn.data.loading import LoadedModel

    loaded = (model_name if isinstance(model_name, LoadedModel)
              else load_model(model_name, device=device, dtype=dtype))
    if config is None:
        config = localize_config(loaded, **extra)
    label = loaded.name
    from interp_unlearn.data.packaged import own_forget_corpus
    corpus: World | Sequence[str] | None = (list(texts) if texts is not None
                                            else own_forget_corpus(loaded))
    if corpus is None:
        raise ValueError(f"{label} carries no synthetic world or shipped corpus; pass the "
                         "forget texts (texts=...; CLI: --texts FILE)")
    net = loaded.model
    if config.backend != "nnsight":
        from interp_unlearn.core.bridge import to_bridge
        net = to_bridge(loaded.model, loaded.tokenizer)
    multi = localize_seeds(net, loaded.tokenizer, corpus, config, progress=progress,
                           model_name=label)
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
        title=(f"{label}: head sensitivity ‖A[l,h]‖₂, {what}<br><sup>{cfg.objective}, "
               f"λ = {cfg.l1_lambda:g}; top-{len(result.selected)} starred</sup>"))
    paths = save_figure(fig, out / FIGURE_STEM, formats)
    result.meta["figures"] = {k: str(v) for k, v in paths.items()}
    return result


def run_attribution(model_name: str, top_k: int | None, out_dir: str | Path,
                    config: AttributionConfig | None = None, *,
                    forget: Any = None, retain: Any = None,
                    formats: Sequence[str] = ("html", "png", "svg"), device: str = "cpu",
                    progress: bool = True, dtype: str | None = None) -> AttributionResult:
    """Load -> attribute -> select top-K -> save -> heatmap (``localize --score ablation``).

    Data default to the organism's world: held-out MCQ pools
    (:func:`attribution_pools`) for ``signal="mcq"``; all forget and all retain corpus
    documents for ``signal="text"``. A packaged real model uses its shipped sets: the
    ``practice`` MCQ pools (never the scored ``eval`` questions) or the corpora.
    """
    from interp_unlearn.data.loading import load_model
    from interp_unlearn.plotting import save_figure, sensitivity_heatmap
    from interp_unlearn.data.world import read_texts

    config = AttributionConfig() if config is None else config
    if top_k is not None:
        config = dataclasses.replace(config, top_k=top_k)
    from interp_unlearn.data.loading import LoadedModel

    loaded = (model_name if isinstance(model_name, LoadedModel)
              else load_model(model_name, device=device, dtype=dtype))
    if config.scoring is None:
        config = dataclasses.replace(config, scoring=loaded.default_scoring)
    real_set = loaded.meta.get("real_set") if loaded.world_dir is None else None
    if (forget is None or retain is None) and real_set and config.signal == "mcq":
        # never the scored questions: the shipped sets' practice pools
        forget = load_mcq(loaded.mcq_path("forget", "practice")) if forget is None else forget
        retain = load_mcq(loaded.mcq_path("retain", "practice")) if retain is None else retain
    elif (forget is None or retain is None) and real_set:
        from interp_unlearn.data.packaged import real_set_path
        forget = (read_texts(real_set_path(real_set, "forget", "corpora"))
                  if forget is None else forget)
        retain = (read_texts(real_set_path(real_set, "retain", "corpora"))
                  if retain is None else retain)
    elif forget is None or retain is None:
        if loaded.world_dir is None:
            raise ValueError(f"{loaded.name} carries no synthetic world or shipped sets; pass "
                             "forget= and retain=")
        if config.signal == "mcq":
            pools = attribution_pools(loaded.eval_pool)
            forget = load_mcq(loaded.mcq_path("forget", pools["forget"])) if forget is None else forget
            retain = load_mcq(loaded.mcq_path("retain", pools["retain"])) if retain is None else retain
        else:
            corpora = Path(loaded.world_dir) / "corpora"
            if forget is None:
                forget = [t for p in sorted(corpora.glob("forget-*.jsonl")) if p.stem != "forget-qa"
                          for t in read_texts(p)]
            if retain is None:
                retain = [t for p in sorted(corpora.glob("retain-*.jsonl")) if p.stem != "retain-qa"
                          for t in read_texts(p)]
    elif config.signal == "mcq":
        forget = load_mcq(forget) if isinstance(forget, (str, Path)) else forget
        retain = load_mcq(retain) if isinstance(retain, (str, Path)) else retain
    result = head_attribution(loaded.model, loaded.tokenizer, forget, retain, config,
                              progress=progress, model_name=loaded.name)
    out = Path(out_dir)
    result.save(out)
    label = "d_forget − d_retain" if config.score == "contrast" else "d_forget"
    fig = sensitivity_heatmap(result.scores, result.selected,
                              title=f"{loaded.name}: ablation attribution ({label}) "
                                    f"(top-{len(result.selected)} starred)")
    paths = save_figure(fig, out / "head_attribution", formats)
    result.meta["figures"] = {k: str(v) for k, v in paths.items()}
    return result
