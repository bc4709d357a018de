"""Unlearning methods on one shared trainer: RMU, ALMPU (phase 2), GA, GA-MP, NPO, DPO.

    from interp_unlearn.unlearn import unlearn
    res = unlearn("organism", "rmu", out_dir="runs/rmu")         # organism preset
    res = unlearn("organism", "almpu", heads="heads.json", out_dir="runs/almpu")
    res.before, res.after                                        # forget/retain accuracy

See :mod:`.trainer` for the config and the run, :mod:`.registry` for the method interface.
"""

from .registry import UnlearnMethod, available_methods, get_method, register
from .trainer import (NonFiniteLossError, Trainer, UnlearnConfig, UnlearnResult,
                      add_unlearn_arguments, parse_heads, run_unlearn, unlearn)

__all__ = [
    "NonFiniteLossError",
    "Trainer",
    "UnlearnConfig",
    "UnlearnMethod",
    "UnlearnResult",
    "add_unlearn_arguments",
    "available_methods",
    "get_method",
    "parse_heads",
    "register",
    "run_unlearn",
    "unlearn",
]
