"""What the trainer hands a method (:class:`MethodContext`), what a run returns
(:class:`UnlearnResult`) and how a non-finite loss stops it (:class:`NonFiniteLossError`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from interp_unlearn.evaluation.scoring import EvalConfig
from interp_unlearn.unlearn.config import UnlearnConfig

__all__ = ["MethodContext", "NonFiniteLossError", "UnlearnResult"]


@dataclass
class MethodContext:
    """What a method gets from the trainer."""

    model: nn.Module
    tokenizer: Any
    config: UnlearnConfig
    params: Any
    heads: list[tuple[int, int]] | None
    reference: nn.Module | None
    device: torch.device
    world_dir: Path | None
    eval_pool: str | None = None      # the pool the run is scored on (organisms)
    eval_config: EvalConfig | None = None
    forget_texts: list[str] | None = None  # the trainer's resolved forget corpus
    practice_mcq: Path | None = None       # held-out forget questions (a packaged model's)


class NonFiniteLossError(FloatingPointError):
    """A loss term (or the gradient) became NaN/inf. ``step`` and ``term`` name it;
    ``checkpoint`` is where the last good weights (from before that step) were saved."""

    def __init__(self, method: str, step: int, term: str, value: float,
                 checkpoint: Path | None):
        self.method, self.step, self.term, self.value = method, step, term, value
        self.checkpoint = checkpoint
        where = (f"; the last good weights (before step {step}) are saved at {checkpoint}"
                 if checkpoint else "")
        super().__init__(f"unlearning ({method}) stopped at step {step}: loss term "
                         f"{term!r} is {value}{where}")


@dataclass
class UnlearnResult:
    """What :func:`unlearn` returns (also written as ``unlearn_result.json``)."""

    method: str
    out_dir: Path
    checkpoint: Path
    config_path: Path
    metrics_path: Path
    before: dict[str, float | None]
    after: dict[str, float | None]
    steps: int
    seconds: float
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "out_dir": str(self.out_dir),
                "checkpoint": str(self.checkpoint), "config_path": str(self.config_path),
                "metrics_path": str(self.metrics_path), "before": self.before,
                "after": self.after, "steps": self.steps, "seconds": self.seconds,
                "config": self.config}
