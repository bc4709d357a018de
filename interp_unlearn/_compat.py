"""Old import paths, kept working for one release (0.2) with a ``DeprecationWarning``.

Issue 17 moved the flat modules into layers (``core/``, ``data/``, ``evaluation/``,
``pipeline/`` ...). As TransformerLens did when it split ``utils.py``, every old module
path still imports -- ``import interp_unlearn.evaluate`` gives the module now at
``interp_unlearn.evaluation.scoring`` (the same module object) and warns once -- and the few
names that moved out of a package (``interp_unlearn.localize.run_localize``, ...) are
served by that package's ``__getattr__``. This is the only module that may point anywhere
in the package; the import-graph test exempts it.

It also makes the subpackages ``localize`` and ``unlearn`` callable as the front door's
verbs (:func:`make_callable`): Python binds an imported subpackage to its parent's
attribute of the same name, so a function ``interp_unlearn.localize`` would be replaced by
the module the first time anything imports ``interp_unlearn.localize.*``; instead the
module's class becomes :class:`VerbModule`, whose ``__call__`` looks the verb up in
:mod:`interp_unlearn.pipeline.front` lazily, by name (as ``interp_unlearn.__init__`` does
for the public API). The same holds for the old module path ``interp_unlearn.evaluate``:
importing it rebinds ``iu.evaluate`` to the module it aliases, which is therefore made
callable as the verb too.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings
from typing import Any

__all__ = ["FRONT_VERBS", "MODULE_ALIASES", "NAME_MOVES", "VerbModule", "install", "make_callable",
           "moved_getattr", "moved_name"]

_P = "interp_unlearn"
_METHODS = ("rmu", "almpu", "ga", "ga_mp", "npo", "npo_sam", "dpo", "rmu_lat", "adaptive_rmu")

#: old module -> new module (old paths of whole modules)
MODULE_ALIASES: dict[str, str] = {f"{_P}.{a}": f"{_P}.{b}" for a, b in {
    "bridge": "core.bridge", "mcq": "core.mcq", "stats": "core.stats",
    "selection": "core.selection", "attacks.store_io": "core.records",
    "attacks.residual": "core.arch",
    "evaluate": "evaluation.scoring", "causal": "evaluation.causal",
    "logit_lens": "evaluation.logit_lens", "lm_eval_model": "evaluation.lm_eval_model",
    "lm_eval_task": "evaluation.lm_eval_task", "lm_eval_cli": "evaluation.lm_eval_cli",
    "nnsight_backend": "interventions.nnsight_backend",
    "world": "data.world", "tokenizer": "data.tokenizer", "organism": "pipeline.organism",
    "loading": "data.loading", "export": "data.export",
    "presets": "pipeline.presets", "attribution": "localize.attribution",
    "localize.run": "pipeline.localize_run", "unlearn.command": "pipeline.unlearn_command",
    "cli": "pipeline.cli", "reproduce": "pipeline.reproduce",
    **{f"reproduce.{m}": f"pipeline.reproduce.{m}" for m in (
        "config", "figures", "grid", "manifest", "paired", "parallel", "plan", "store",
        "tables", "_render")},
    **{f"unlearn.{m}": f"unlearn.methods.{m}" for m in _METHODS},
}.items()}

#: the front door's verbs (:mod:`interp_unlearn.pipeline.front`)
FRONT_VERBS = ("load", "evaluate", "localize", "unlearn", "attack", "lens", "depth")

#: (package, name) -> the module that now holds ``name`` (names that left a package)
NAME_MOVES: dict[tuple[str, str], str] = {
    (f"{_P}.localize", "run_localize"): f"{_P}.pipeline.localize_run",
    (f"{_P}.localize", "FIGURE_STEM"): f"{_P}.pipeline.localize_run",
    (f"{_P}.unlearn", "add_unlearn_arguments"): f"{_P}.pipeline.unlearn_command",
    (f"{_P}.unlearn", "run_unlearn"): f"{_P}.pipeline.unlearn_command",
    (f"{_P}.unlearn.trainer", "add_unlearn_arguments"): f"{_P}.pipeline.unlearn_command",
    (f"{_P}.unlearn.trainer", "run_unlearn"): f"{_P}.pipeline.unlearn_command",
    (f"{_P}.localize.attribution", "run_attribution"): f"{_P}.pipeline.localize_run",
    (f"{_P}.unlearn.trainer", "unlearn"): f"{_P}.unlearn.api",
}


def _warn(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}; the old path works until interp_unlearn 0.2",
                  DeprecationWarning, stacklevel=3)


def moved_name(package: str, name: str) -> Any:
    """For a package's ``__getattr__``: the moved ``name``, with a warning; else
    ``AttributeError`` as Python would raise it."""
    target = NAME_MOVES.get((package, name))
    if target is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    _warn(f"{package}.{name}", f"{target}.{name}")
    return getattr(importlib.import_module(target), name)


def moved_getattr(package: str):
    """A module ``__getattr__`` serving the names that left ``package`` (:data:`NAME_MOVES`):
    ``__getattr__ = moved_getattr(__name__)``."""
    def __getattr__(name: str) -> Any:
        return moved_name(package, name)
    return __getattr__


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: Any) -> Any:
        _warn(spec.name, self.new)
        module = importlib.import_module(self.new)
        self._real_spec = module.__spec__
        short = spec.name[len(_P) + 1:]
        if short in FRONT_VERBS:  # the old module path interp_unlearn.evaluate is also the
            make_callable(self.new, short)  # verb iu.evaluate: Python rebinds iu.evaluate
        return module

    def exec_module(self, module: Any) -> None:
        # the real module is already executed; importlib has just stamped the alias spec
        # on it -- give it its own back
        module.__spec__ = self._real_spec


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        new = MODULE_ALIASES.get(fullname)
        if new is None:
            return None
        is_pkg = importlib.util.find_spec(new) is not None and bool(
            getattr(importlib.util.find_spec(new), "submodule_search_locations", None))
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new), is_package=is_pkg)


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())


class VerbModule(types.ModuleType):
    """A module that, called, calls ``interp_unlearn.pipeline.front.<__verb__>``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        front = importlib.import_module(f"{_P}.pipeline.front")
        return getattr(front, self.__dict__["__verb__"])(*args, **kwargs)


def make_callable(module_name: str, verb: str) -> None:
    """Make the already-imported module ``module_name`` callable as the front-door verb."""
    module = sys.modules[module_name]
    module.__verb__ = verb
    module.__class__ = VerbModule
