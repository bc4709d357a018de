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

__all__ = ["DIAGNOSTICS_FILE", "write_diagnostics"]

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
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        print(f"!!!!! {msg}", file=sys.stderr, flush=True)
    return path
