"""Train the model organism with the evaluator plugged in (``interp-unlearn organism
train``); also the old ``interp_unlearn.data.organism`` namespace.

:mod:`interp_unlearn.data.organism` holds the recipe and the training loop; it takes the
scorer as an argument because evaluation sits one layer above data. Here it gets the
default one: cloze scoring, as the organism's checkpoints declare.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from interp_unlearn.data import organism as _organism
from interp_unlearn.data.organism import *  # noqa: F401,F403 - the old organism namespace
from interp_unlearn.data.organism import ASSETS, META_FILE, OrganismConfig  # noqa: F401
from interp_unlearn.evaluation.scoring import EvalConfig, evaluate_mcq

__all__ = ["cloze_accuracy", "train_lm", "train_organism"]


def cloze_accuracy(model: Any, tokenizer: Any, questions: Sequence) -> float:
    """The organism's own scoring (cloze) -- the evaluator its training logs with."""
    return evaluate_mcq(model, tokenizer, questions, EvalConfig(scoring="cloze")).accuracy


def train_lm(*args: Any, evaluate: Any = cloze_accuracy, **kwargs: Any):
    """:func:`interp_unlearn.data.organism.train_lm` with :func:`cloze_accuracy`."""
    return _organism.train_lm(*args, evaluate=evaluate, **kwargs)


def train_organism(cfg: OrganismConfig, out_dir: str | Path,
                   members: tuple[str, ...] = ("model", "twin"), progress: bool = True, *,
                   evaluate: Any = cloze_accuracy) -> dict:
    """:func:`interp_unlearn.data.organism.train_organism` with :func:`cloze_accuracy`."""
    return _organism.train_organism(cfg, out_dir, members, progress, evaluate=evaluate)
