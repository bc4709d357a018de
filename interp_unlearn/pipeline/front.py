"""The Python front door: ``import interp_unlearn as iu`` and the main verbs.

    import interp_unlearn as iu
    lm = iu.load("smollm2-135m")                    # or "organism", a checkpoint dir, a hub name
    iu.evaluate(lm, "forget")                        # EvalResult; scoring follows the model
    loc = iu.localize(lm, top_k=9)                   # LocalizationResult (heads + scores)
    res = iu.unlearn(lm, "almpu", heads=loc.selected, out_dir="runs/almpu")
    iu.attack(res.checkpoint, "finetune", samples=[0, 10])   # tidy DataFrame, with the floor
    iu.lens(res.checkpoint, "forget")                 # per-block accuracy DataFrame
    iu.depth("runs/almpu-organism")                   # UDS per layer (needs a twin)

Every verb takes a loaded model (:class:`~interp_unlearn.data.loading.LoadedModel`) or a
name (built-in, local checkpoint directory, hub name) and does what the command of the
same name does, without printing. ``iu.localize`` and ``iu.unlearn`` are also the
subpackages :mod:`interp_unlearn.localize` / :mod:`interp_unlearn.unlearn`: calling the
module calls the verb here (:func:`interp_unlearn._compat.make_callable`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from interp_unlearn.data.loading import LoadedModel, load_model

__all__ = ["attack", "depth", "evaluate", "lens", "load", "localize", "unlearn"]

ModelLike = str | os.PathLike | LoadedModel


def load(model: ModelLike, *, device: str = "auto", dtype: str | None = None,
         accept_incomplete: bool | None = None) -> LoadedModel:
    """A model and its tokenizer (a :class:`LoadedModel` is returned as it is).

    ``device`` ``auto`` is the GPU when one is visible; ``dtype`` e.g. ``bfloat16``."""
    if isinstance(model, LoadedModel):
        return model
    return load_model(model, device=device, dtype=dtype, accept_incomplete=accept_incomplete)


def _mcq_items(lm: LoadedModel, mcq: Any, pool: str | None) -> Any:
    """``forget``/``retain`` -> the model's own set; a path or a list of MCQ as given."""
    if isinstance(mcq, str) and mcq in ("forget", "retain"):
        return lm.mcq_path(mcq, pool)
    if pool is not None:
        raise ValueError(f"pool={pool!r} applies to the model's own sets ('forget', "
                         f"'retain'), not to {mcq!r}")
    return mcq


def evaluate(model: Any, mcq: Any = "forget", *, tokenizer: Any = None,
             scoring: str | None = None, pool: str | None = None, batch_size: int = 32,
             device: str = "auto", dtype: str | None = None, progress: bool = False) -> Any:
    """Accuracy on one MCQ set (:class:`~interp_unlearn.evaluation.scoring.EvalResult`).

    ``model``: a name, a :class:`LoadedModel`, a TransformerLens bridge (its own
    tokenizer) or an HF model with ``tokenizer=``. ``mcq``: ``forget`` / ``retain`` (the
    model's own set, of ``pool``), a JSONL file or a list of MCQ. ``scoring`` ``None``
    follows the model (cloze for organisms, letter -- lm-eval's ``wmdp_bio`` -- otherwise)."""
    from interp_unlearn.evaluation.scoring import EvalConfig, evaluate_mcq

    if isinstance(model, (str, os.PathLike, LoadedModel)):
        lm = load(model, device=device, dtype=dtype)
        net, tok, items = lm, lm.tokenizer, _mcq_items(lm, mcq, pool)
    else:
        net = model
        tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        if tok is None:
            raise ValueError("evaluate(model, ...) on a bare model needs tokenizer=")
        if isinstance(mcq, str) and mcq in ("forget", "retain"):
            raise ValueError(f"{mcq!r} names a loaded model's own set; for a bare model "
                             "pass an MCQ file or a list of MCQ")
        items = mcq
    if isinstance(net, LoadedModel):
        cfg = EvalConfig(scoring=scoring or net.default_scoring, batch_size=batch_size)
        return evaluate_mcq(net.model, tok, items, cfg, progress=progress)
    return evaluate_mcq(net, tok, items, EvalConfig(scoring=scoring, batch_size=batch_size),
                        progress=progress)


def _out(command: str, lm: LoadedModel, out_dir: Any, *parts: str) -> Path:
    if out_dir is not None:
        return Path(out_dir)
    from interp_unlearn.pipeline.cli_common import default_out
    return default_out(command, lm.path or lm.name, *parts)


def localize(model: ModelLike, *, top_k: int | None = None, texts: Sequence[str] | None = None,
             out_dir: str | os.PathLike | None = None, seeds: Any = None,
             score: str = "scale", device: str = "auto", dtype: str | None = None,
             progress: bool = True, formats: Sequence[str] = ("html", "png"),
             **overrides: Any) -> Any:
    """Find the heads that carry the forget knowledge; saves the run in ``out_dir``
    (default ``runs/localize-<model>``).

    ``score`` ``scale`` (default): ALMPU phase 1, the learnable ``(1+A)*z`` scales
    (:func:`interp_unlearn.pipeline.localize_run.run_localize`; ``overrides`` are
    :class:`~interp_unlearn.localize.LocalizeConfig` fields); ``ablation``: mean-ablation
    attribution (:func:`~interp_unlearn.pipeline.localize_run.run_attribution`;
    ``overrides`` are ``AttributionConfig`` fields). ``texts`` default: the model's own
    forget data (an organism's world, a packaged model's shipped corpus)."""
    from interp_unlearn.pipeline.localize_run import run_attribution, run_localize

    lm = load(model, device=device, dtype=dtype)
    out = _out("localize", lm, out_dir)
    if score == "ablation":
        import dataclasses

        from interp_unlearn.localize.attribution import AttributionConfig
        if texts is not None or seeds is not None:
            raise ValueError("score='ablation' takes no texts= or seeds= (forget=/retain= "
                             "go in overrides)")
        data = {k: overrides.pop(k) for k in ("forget", "retain") if k in overrides}
        cfg = dataclasses.replace(AttributionConfig(), **overrides)
        return run_attribution(lm, top_k, out, cfg, formats=formats, progress=progress, **data)
    if score != "scale":
        raise ValueError(f"score must be 'scale' or 'ablation', got {score!r}")
    return run_localize(lm, top_k, out, texts=texts, seeds=seeds, formats=formats,
                        progress=progress, overrides=overrides)


def unlearn(model: ModelLike, method: str | None = None, *, heads: Any = None,
            out_dir: str | os.PathLike | None = None, overwrite: bool = False,
            device: str = "auto", dtype: str | None = None, **overrides: Any) -> Any:
    """Unlearn with one method (``rmu``, ``almpu``, ...; see
    :func:`interp_unlearn.unlearn.available_methods`) and save the checkpoint;
    ``overrides`` are :class:`~interp_unlearn.unlearn.UnlearnConfig` fields. A loaded
    model is trained **in place**. Returns :class:`~interp_unlearn.unlearn.UnlearnResult`."""
    from interp_unlearn.unlearn.api import unlearn as _unlearn

    lm = load(model, device=device, dtype=dtype)
    return _unlearn(lm, method, heads=heads, out_dir=out_dir, overwrite=overwrite, **overrides)


def attack(model: ModelLike, kind: str = "finetune", *, samples: Any = (0, 5, 10),
           seeds: Any = 3, out_dir: str | os.PathLike | None = None, floor: bool = True,
           **kw: Any) -> Any:
    """Run a recovery attack on the model -- and, with ``floor``, on its never-learned twin
    and its original alike (:func:`interp_unlearn.attacks.floor.run_attack`); the tidy
    result table, with ``recovery`` rows (NaN, ``df.attrs["unavailable"]`` saying why,
    where no twin exists). ``out_dir`` makes the run resumable."""
    from interp_unlearn.attacks.floor import run_attack

    return run_attack(model, kind, samples=samples, seeds=seeds, out=out_dir, floor=floor,
                      **kw)


def lens(model: ModelLike, mcq: Any = ("forget", "retain"), *, scoring: str | None = None,
         out_dir: str | os.PathLike | None = None, device: str = "auto",
         dtype: str | None = None, progress: bool = False) -> Any:
    """The logit lens: MCQ accuracy read from the residual stream after every block, as a
    tidy DataFrame (``domain, block, accuracy, ci95_low, ci95_high, n, ...``).

    ``mcq``: a domain name, a file, or a sequence of them (names: the model's own sets)."""
    from interp_unlearn.evaluation.logit_lens import run_logit_lens

    lm = load(model, device=device, dtype=dtype)
    names = [mcq] if isinstance(mcq, (str, os.PathLike)) else list(mcq)
    mapping: dict[str, Any] = {}
    for m in names:
        if str(m) in ("forget", "retain"):
            mapping[str(m)] = None
        else:
            mapping[Path(m).stem] = Path(m)
    return run_logit_lens(lm, out_dir, mcq=mapping, domains=tuple(mapping), scoring=scoring,
                          progress=progress)


def depth(model: ModelLike, mcq: Any = "forget", *, full: ModelLike | None = None,
          reference: ModelLike | None = None, heads: bool = False,
          out_dir: str | os.PathLike | None = None, device: str = "auto",
          dtype: str | None = None, progress: bool = False,
          formats: Sequence[str] = ("html", "png"), **config: Any) -> Any:
    """The unlearning depth (UDS) of ``model``: the per-layer table
    (``df.attrs["summary"]["uds"]``; with ``heads``, ``df.attrs["heads"]``, the per-head
    map). ``full``/``reference`` default to the checkpoint's original and never-learned
    twin; ``config``: :class:`~interp_unlearn.evaluation.depth.DepthConfig` fields
    (``tau``, ``max_questions`` ...). See :mod:`interp_unlearn.evaluation.depth`."""
    from interp_unlearn.evaluation.depth import DepthConfig
    from interp_unlearn.pipeline.depth_run import run_depth

    return run_depth(model, out_dir, full=full, reference=reference, mcq=mcq,
                     config=DepthConfig(heads=heads, **config), device=device, dtype=dtype,
                     progress=progress, formats=formats)
