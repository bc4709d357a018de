"""interp_unlearn: find where a model keeps knowledge, remove it, and attack the removal.

The curated public API (loaded on first use, so ``import interp_unlearn`` stays fast)::

    import interp_unlearn as iu
    lm = iu.load("organism")              # or "smollm2-135m", a checkpoint dir, a hub name
    iu.evaluate(lm, "forget")             # EvalResult; scoring follows the model
    loc = iu.localize(lm, top_k=4)        # ALMPU phase 1 -> runs/localize-organism
    out = iu.unlearn("organism", "almpu", heads=loc.selected, out_dir="runs/almpu")
    iu.attack(out.checkpoint, "finetune", samples=[0, 10, 50], seeds=[0, 1, 2])
    iu.lens(out.checkpoint)               # per-block accuracy, forget and retain
    iu.depth(out.checkpoint)              # unlearning depth (UDS) against the twin

The verbs (:mod:`interp_unlearn.pipeline.front`) take loaded models or names; the
lower-level functions below take HF models and tokenizers.

The package is layered (imports point only down): ``core`` (shared helpers) ->
``interventions``, ``data`` -> ``evaluation`` -> the stages ``localize``, ``unlearn``,
``attacks`` (which never import each other) -> ``plotting`` (``core`` only) ->
``pipeline`` (CLI, run directories, ``reproduce``). Old module paths of 0.1 still import,
with a ``DeprecationWarning``, until 0.2 (:mod:`interp_unlearn._compat`).
"""

from __future__ import annotations

from typing import Any

from interp_unlearn import _compat

__version__ = "0.1.0"

_compat.install()

#: public name -> the module that defines it
_API: dict[str, str] = {
    # data
    "LoadedModel": "interp_unlearn.data.loading", "load_model": "interp_unlearn.data.loading",
    "World": "interp_unlearn.data.world", "load_mcq_dataset": "interp_unlearn.data.datasets",
    "load_corpus": "interp_unlearn.data.corpora", "export_hf": "interp_unlearn.data.export",
    "detect_family": "interp_unlearn.data.families",
    # core
    "MCQ": "interp_unlearn.core.mcq", "load_mcq": "interp_unlearn.core.mcq",
    "to_bridge": "interp_unlearn.core.bridge", "select_heads": "interp_unlearn.core.selection",
    "load_heads": "interp_unlearn.core.selection", "write_heads": "interp_unlearn.core.selection",
    "paired_difference": "interp_unlearn.core.stats", "t_interval": "interp_unlearn.core.stats",
    # interventions
    "HeadScale": "interp_unlearn.interventions", "HeadPerturbation": "interp_unlearn.interventions",
    "HeadAblation": "interp_unlearn.interventions", "attach": "interp_unlearn.interventions",
    "HeadAdversary": "interp_unlearn.interventions",
    "ResidualAdversary": "interp_unlearn.interventions",
    # evaluation
    "EvalConfig": "interp_unlearn.evaluation.scoring",
    "EvalResult": "interp_unlearn.evaluation.scoring",
    "evaluate_mcq": "interp_unlearn.evaluation.scoring",
    "logit_lens": "interp_unlearn.evaluation.logit_lens",
    "run_logit_lens": "interp_unlearn.evaluation.logit_lens",
    "ablation_table": "interp_unlearn.evaluation.causal",
    # the front door's verbs (taking loaded models or names; interp_unlearn.pipeline.front);
    # ``localize`` and ``unlearn`` are the subpackages, callable as the verbs
    "load": "interp_unlearn.pipeline.front", "evaluate": "interp_unlearn.pipeline.front",
    "attack": "interp_unlearn.pipeline.front", "lens": "interp_unlearn.pipeline.front",
    "depth": "interp_unlearn.pipeline.front",
    "localize": "", "unlearn": "",
    # stages
    "LocalizeConfig": "interp_unlearn.localize", "UnlearnConfig": "interp_unlearn.unlearn",
    "Trainer": "interp_unlearn.unlearn", "available_methods": "interp_unlearn.unlearn",
    "run_attack": "interp_unlearn.attacks", "run_floor": "interp_unlearn.attacks",
    "finetune_attack": "interp_unlearn.attacks", "summarize": "interp_unlearn.attacks",
    "add_recovery": "interp_unlearn.attacks",
    # pipeline
    "run_localize": "interp_unlearn.pipeline.localize_run",
    "ReproduceConfig": "interp_unlearn.pipeline.reproduce",
    "run_reproduce": "interp_unlearn.pipeline.reproduce",
    "load_results": "interp_unlearn.pipeline.reproduce",
}

__all__ = ["__version__", *sorted(_API)]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'interp_unlearn' has no attribute {name!r}")
    import importlib

    if not module:  # a callable subpackage (interp_unlearn._compat.make_callable)
        return importlib.import_module(f"{__name__}.{name}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
