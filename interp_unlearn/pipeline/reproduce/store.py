"""The append-only results store of a reproduce run: ``RUN/results.jsonl``.

One JSON object per line, one line per measured value (tidy: ``metric`` and ``value``
plus the columns that say what was measured). A grid cell's rows are written with a
single ``write`` followed by ``flush`` and ``fsync``, and end with a marker line
(``metric == "_cell_done"``, carrying the cell's run time in ``value``). Every line of
one write carries the same ``attempt`` id, and only rows whose attempt has its marker
count; so a process killed at any moment leaves either a finished cell or rows that are
ignored (a line cut in half is skipped too), and a rerun redoes at most the cell that
was in flight. If a cell was ever written twice, the last finished attempt wins.

Every row also records ``cell`` (the cell's key), ``config_hash``, ``seed``,
``package_version``, ``torch_version`` and ``written_at`` (UTC, ISO 8601).

:func:`load_results` reads a run directory back as one DataFrame (by default only the
cells of the run's current plan, ``plan.json``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from interp_unlearn.attacks.floor import read_results

__all__ = ["DONE_METRIC", "LOCK_FILE", "PLAN_FILE", "RESULTS_FILE", "ResultsStore",
           "load_results", "read_results", "run_lock"]

RESULTS_FILE = "results.jsonl"
#: a run directory's localizations and unlearned checkpoints (:mod:`.grid`)
LOCALIZE_DIR, CHECKPOINT_DIR, FLOOR_DIR = "localize", "checkpoints", "floor"
PLAN_FILE = "plan.json"
DONE_METRIC = "_cell_done"
LOCK_FILE = ".lock"


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Any:
    """Hold the exclusive run lock of ``run_dir`` (``RUN/.lock``, an ``flock``; created
    with the directory if missing) for the ``with`` block. Raises ``RuntimeError`` at once,
    having written nothing else, if another run (any process) holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another reproduce run is using {run_dir} (lock {path}); "
                               "wait for it or pick another --out") from None
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _finished(rows: list[dict[str, Any]]) -> dict[str, tuple[list[dict], dict]]:
    """``{cell: (rows, marker)}`` of the last finished attempt of every cell."""
    markers = {r["attempt"]: r for r in rows if r.get("metric") == DONE_METRIC and "attempt" in r}
    by_attempt: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("metric") != DONE_METRIC and r.get("attempt") in markers:
            by_attempt.setdefault(r["attempt"], []).append(r)
    out: dict[str, tuple[list[dict], dict]] = {}
    for attempt, marker in markers.items():  # file order: later attempts overwrite
        got = by_attempt.get(attempt, [])
        if len(got) == int(marker.get("n_rows", -1)):
            out[marker["cell"]] = (got, marker)
    return out


class ResultsStore:
    """Append-only, crash-safe rows of one run directory (see the module docstring).

    Args:
        run_dir: the run directory (created).
        provenance: columns added to every row (``config_hash``, versions ...).
    """

    def __init__(self, run_dir: str | Path, provenance: dict[str, Any] | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / RESULTS_FILE
        self.provenance = dict(provenance or {})

    def finished(self) -> dict[str, tuple[list[dict], dict]]:
        """``{cell key: (rows, done marker)}`` of every finished cell."""
        return _finished(read_results(self.path))

    def write_cell(self, cell: str, rows: list[dict[str, Any]], *, seconds: float,
                   cpu_seconds: float | None = None, **common: Any) -> None:
        """Append ``rows`` (each a dict with at least ``metric`` and ``value``) and the
        cell's done marker (``value``: wall seconds; ``cpu_seconds``: process CPU time) in
        one fsynced write. ``common`` is added to every row."""
        for i, r in enumerate(rows):
            if "metric" not in r or "value" not in r:
                raise ValueError(f"row {i} of cell {cell!r} lacks 'metric' or 'value': {r}")
        attempt = uuid.uuid4().hex
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        base = {**self.provenance, **common, "cell": cell, "attempt": attempt,
                "written_at": stamp}
        lines = [{**base, **r} for r in rows]
        lines.append({**base, "metric": DONE_METRIC, "value": float(seconds),
                      "cpu_seconds": cpu_seconds, "n_rows": len(rows)})
        text = "".join(json.dumps(_plain(x), sort_keys=True) + "\n" for x in lines)
        new = not self.path.exists()
        # a cut last line (killed mid-write) must not swallow the next write's first line
        if not new and self.path.stat().st_size > 0:
            with self.path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    text = "\n" + text
        with self.path.open("a") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if new:  # make the new directory entry durable too
            fd = os.open(self.run_dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _plain(v: Any) -> Any:
    """JSON-safe: numpy scalars -> Python, NaN -> None, tuples -> lists."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "item") and callable(v.item):
        try:
            v = v.item()
        except (ValueError, TypeError):
            return str(v)
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, Path):
        return str(v)
    return v


def load_results(run_dir: str | Path, *, plan_only: bool = True,
                 markers: bool = False) -> pd.DataFrame:
    """All finished rows of a reproduce run as one tidy DataFrame.

    Args:
        run_dir: the ``--out`` directory of ``interp-unlearn reproduce``.
        plan_only: keep only the cells of the run's plan (``plan.json``, written by the
            latest run), dropping rows of cells a changed configuration no longer uses.
        markers: also return the ``_cell_done`` marker rows (``value`` = seconds).

    Columns include ``cell, kind, table, variant, method, role, seed, data, pool, N,
    domain, metric, value`` (lens rows: ``block``; localization rows: ``layer, head``;
    unlearning rows: ``stage``), ``config_hash`` and the versions. Rows of one cell keep
    the order they were written in.
    """
    run_dir = Path(run_dir)
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a reproduce run directory, or "
                                "nothing finished yet")
    done = _finished(read_results(path))
    keep = None
    if plan_only and (run_dir / PLAN_FILE).is_file():
        keep = {c["key"] for c in json.loads((run_dir / PLAN_FILE).read_text())["cells"]}
    rows: list[dict] = []
    for cell, (got, marker) in done.items():
        if keep is not None and cell not in keep:
            continue
        rows += got
        if markers:
            rows.append(marker)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    front = [c for c in ("cell", "kind", "table", "variant", "method", "role", "seed", "data",
                         "pool", "N", "domain", "metric", "value") if c in df.columns]
    return df[front + [c for c in df.columns if c not in front]]


def repair_tail(path: Path) -> None:
    """End ``path`` with a newline, so a line cut by a kill does not merge with the next."""
    if path.is_file() and path.stat().st_size:
        with path.open("rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")


def short_hash(obj: Any, n: int = 10) -> str:
    """The first ``n`` hex digits of the SHA-1 of ``obj`` as sorted JSON."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]
