"""``diagnostics.json``: what the trainer writes at the end of a run for a method whose
:meth:`~.registry.UnlearnMethod.diagnostics` returns anything (ALMPU, GA-MP, RMU-LAT: the
adversary's ‖δ‖/ε, its gain and ``adversary_alive``), and the loud warning for an inert
adversary."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

__all__ = ["DIAGNOSTICS_FILE", "EDIT_THRESHOLDS", "edit_effect", "warn_if_inert",
           "write_diagnostics"]

#: an edit is INERT when its forget objective fell by less than ``objective_drop_rel``
#: (relative, first vs last fifth of the steps) *and* forget accuracy by less than ``forget_drop``
EDIT_THRESHOLDS = {"objective_drop_rel": 0.05, "forget_drop": 0.02}

DIAGNOSTICS_FILE = "diagnostics.json"


def write_diagnostics(out_dir: Path, method: str, step: int, diag: dict[str, Any]) -> Path:
    """Write ``out_dir/diagnostics.json``; when ``adversary_alive`` is false, issue a
    ``RuntimeWarning`` and print one line starting ``!!!!!`` on stderr. Returns the path."""
    path = Path(out_dir) / DIAGNOSTICS_FILE
    path.write_text(json.dumps({"method": method, "step": step, **diag}, indent=1))
    if diag.get("adversary_alive") is False:
        msg = (f"{method}: the adversary is INERT (median ‖δ‖/ε "
               f"{diag.get('delta_over_eps_median')}, answer log-prob gain "
               f"{diag.get('adversary_gain_logprob')}; thresholds {diag.get('thresholds')}): "
               f"θ was not trained against a live perturbation -- see {path}")
        _loud(msg)
    return path


def _loud(msg: str) -> None:
    """A ``RuntimeWarning`` (attributed to the trainer's caller) and a ``!!!!!`` line on
    stderr, which survives warning filters."""
    warnings.warn(msg, RuntimeWarning, stacklevel=4)
    print(f"!!!!! {msg}", file=sys.stderr, flush=True)


def edit_effect(totals: list[float], before: dict[str, Any], after: dict[str, Any]
                ) -> dict[str, Any]:
    """Did the unlearning edit move anything? The forget term of the objective (``totals``:
    its value per step, mean of the first vs the last fifth of the steps) and the forget accuracy before vs after; ``edit_alive``
    false when both moved less than :data:`EDIT_THRESHOLDS` (a preset too weak for the
    model, e.g. Zephyr's RMU recipe on another family)."""
    out: dict[str, Any] = {"thresholds": dict(EDIT_THRESHOLDS)}
    if totals:
        k = max(1, len(totals) // 5)
        first, last = sum(totals[:k]) / k, sum(totals[-k:]) / k
        out.update(objective_first=first, objective_last=last,
                   objective_drop_rel=(first - last) / max(abs(first), 1e-12))
    f0, f1 = (before or {}).get("forget"), (after or {}).get("forget")
    if f0 is not None and f1 is not None:
        out["forget_drop"] = f0 - f1
    checks = [out[k] < EDIT_THRESHOLDS[k] for k in EDIT_THRESHOLDS if k in out]
    out["edit_alive"] = not (checks and all(checks))
    return out


def warn_if_inert(method: str, edit: dict[str, Any], where: Any) -> None:
    """A ``RuntimeWarning`` and a ``!!!!!`` line on stderr when ``edit_alive`` is false."""
    if edit.get("edit_alive") is not False:
        return
    obj = (f"objective {edit['objective_first']:.4g} -> {edit['objective_last']:.4g}"
           if "objective_first" in edit else "no objective logged")
    msg = (f"{method}: the unlearning edit is INERT ({obj}, forget accuracy drop "
           f"{edit.get('forget_drop', float('nan')):.3f}; thresholds {edit['thresholds']}): "
           f"the preset does not move this model -- tune it on practice questions "
           f"(--set / --lr); see {where}")
    _loud(msg)
