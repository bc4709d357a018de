"""Unlearning methods on one shared trainer: RMU, ALMPU (phase 2), GA, GA-MP, NPO, DPO.

    from interp_unlearn.unlearn import unlearn
    res = unlearn("organism", "rmu", out_dir="runs/rmu")         # organism preset
    res = unlearn("organism", "almpu", heads="heads.json", out_dir="runs/almpu")
    res.before, res.after                                        # forget/retain accuracy

See :mod:`.trainer` for the config and the run, :mod:`.registry` for the method interface.
"""

from interp_unlearn.unlearn.registry import (UnlearnMethod, available_methods, get_method,
                                             register)
from interp_unlearn.unlearn.trainer import (NonFiniteLossError, Trainer, UnlearnConfig,
                                            UnlearnResult, parse_heads)
from interp_unlearn.unlearn.api import unlearn
from interp_unlearn._compat import moved_getattr

__all__ = [
    "NonFiniteLossError",
    "Trainer",
    "UnlearnConfig",
    "UnlearnMethod",
    "UnlearnResult",
    "available_methods",
    "get_method",
    "parse_heads",
    "register",
    "unlearn",
]


__getattr__ = moved_getattr(__name__)  # the command line moved to the pipeline (issue 17)

# ``iu.unlearn(model, ...)``: calling this subpackage calls the front door's verb
from interp_unlearn._compat import make_callable  # noqa: E402

make_callable(__name__, "unlearn")
