"""The run manifest, ``RUN/manifest.json``: what produced the results, and when.

Holds the package, torch, transformers and Python versions, the git commit of the
source tree (and whether it had uncommitted changes) when it is a git checkout, the
seeds, the config hash, and one entry per invocation (``sessions``: start and end time
in UTC, cells run and skipped, seconds, threads, host). Rewritten atomically (temp file
+ rename) at the start and the end of every invocation, and the invocation's entry after
every finished cell (:func:`update_session`), so a killed run's entry still says how many
cells it finished.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["MANIFEST_FILE", "git_commit", "now_utc", "update_manifest", "update_session",
           "versions"]

MANIFEST_FILE = "manifest.json"


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """Versions of the package and the libraries that decide the numbers."""
    import torch
    import transformers

    from interp_unlearn import __version__

    out = {"package_version": __version__, "torch_version": torch.__version__,
           "transformers_version": transformers.__version__,
           "python_version": platform.python_version()}
    try:
        import peft
        out["peft_version"] = peft.__version__
    except ImportError:  # pragma: no cover - peft is a dependency
        pass
    return out


def git_commit(path: str | Path | None = None) -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the git checkout holding ``path`` (default:
    this package's source), or ``None`` outside a checkout or without git."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                             text=True, timeout=10)
        if sha.returncode != 0:
            return None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=where, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": sha.stdout.strip(),
            "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(path)


def update_manifest(run_dir: str | Path, *, config: Any, session: dict[str, Any],
                    session_index: int | None = None, extra: dict[str, Any] | None = None
                    ) -> int:
    """Create or update ``manifest.json``: refresh the provenance and record ``session``
    (appended, or replacing entry ``session_index``). Returns the session's index."""
    path = Path(run_dir) / MANIFEST_FILE
    old = json.loads(path.read_text()) if path.is_file() else {}
    sessions = list(old.get("sessions", []))
    if session_index is None:
        sessions.append(session)
        session_index = len(sessions) - 1
    else:
        sessions[session_index] = session
    data = {
        **versions(),
        "git": git_commit(),
        "model": config.model,
        "quick": config.quick,
        "seeds": list(config.seeds),
        "ablation_seeds": config.all_ablation_seeds,
        "config_hash": config.config_hash(),
        "created": old.get("created", session.get("start")),
        "command": " ".join(sys.argv),
        "host": {"name": socket.gethostname(), "platform": platform.platform(),
                 "cpus": os.cpu_count()},
        **(extra or {}),
        "sessions": sessions,
    }
    _write_atomic(path, data)
    return session_index


def update_session(run_dir: str | Path, session: dict[str, Any], session_index: int) -> None:
    """Rewrite only entry ``session_index`` of ``manifest.json``'s sessions (cheap: no
    version or git look-up); the manifest must exist (:func:`update_manifest`)."""
    path = Path(run_dir) / MANIFEST_FILE
    data = json.loads(path.read_text())
    data["sessions"][session_index] = session
    _write_atomic(path, data)
