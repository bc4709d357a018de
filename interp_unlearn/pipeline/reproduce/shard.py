"""``reproduce --shard i/n``: split the grid into ``n`` self-contained parts, run each
anywhere, merge them into the run directory.

**Which cells go together.** A cell reads other cells' outputs (:func:`~.parallel.dependencies`:
an ALMPU model reads its seed's localization, an attack reads its unlearned model and the
reference attacks of its ``N``). The shards follow the dependency graph's connected
components -- in practice one component per seed (every method's attacks of a seed share
that seed's reference cells) plus the original's and the twin's logit lens -- so each shard
reads nothing another shard writes: shards run at the same time or one after another, on
one machine or several, with no shared locks and no waiting. The components are dealt
largest first to the shard with the fewest cells (ties: the lowest shard), in plan order,
so the split is deterministic and the shards partition the plan. A grid with ``K``
components has at most ``K`` shards (``n > K`` is refused before any work); for finer
parallelism run every cell as its own cluster job (``--executor submitit``).

**Where they go.** Shard ``i`` of ``n`` of ``--out RUN`` is a complete run directory,
``RUN/shards/{i}-of-{n}/`` (its own lock, ``plan.json`` listing only its cells, store,
checkpoints, floor cache; no tables or figures). A later ``reproduce --out RUN`` without ``--shard``
(same configuration) merges them: every finished shard cell of the full plan is copied
into ``RUN/results.jsonl`` (skipping cells already there), the shards' localizations and
checkpoints are moved into ``RUN`` (where absent), the cells no shard finished run, and
the tables and figures are written from the merged store. A shard still running (its lock
held) stops the merge with an error before anything is copied.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path
from typing import Any

from interp_unlearn.pipeline.reproduce.parallel import dependencies
from interp_unlearn.pipeline.reproduce.plan import Cell
from interp_unlearn.pipeline.reproduce.store import (CHECKPOINT_DIR, LOCALIZE_DIR, ResultsStore,
                                                     run_lock)

__all__ = ["SHARDS_DIR", "ShardError", "components", "import_shards", "parse_shard",
           "saved_config", "shard_dir", "shard_plan"]

SHARDS_DIR = "shards"
_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


class ShardError(ValueError):
    """A malformed or out-of-range ``--shard`` spec."""


def parse_shard(spec: Any) -> tuple[int, int] | None:
    """``"2/4"`` -> ``(2, 4)`` (1-based); ``None`` -> ``None``. Raises :class:`ShardError`
    unless ``spec`` is ``i/n`` with integers ``1 <= i <= n``."""
    if spec is None:
        return None
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        spec = f"{spec[0]}/{spec[1]}"
    m = _SPEC.fullmatch(str(spec))
    if not m:
        raise ShardError(f"--shard must be i/n with integers 1 <= i <= n (e.g. 1/2), "
                         f"got {spec!r}")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= i <= n:
        raise ShardError(f"--shard {i}/{n} is out of range: i must be in 1..n and n >= 1")
    return i, n


def components(plan: list[Cell]) -> list[list[Cell]]:
    """The connected components of ``plan``'s dependency graph, each in plan order, the
    components ordered by their first cell."""
    parent = {c.key: c.key for c in plan}

    def find(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for key, deps in dependencies(plan).items():
        for d in deps:
            a, b = find(key), find(d)
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups: dict[str, list[Cell]] = {}
    for c in plan:
        groups.setdefault(find(c.key), []).append(c)
    return list(groups.values())


def shard_plan(plan: list[Cell], i: int, n: int) -> list[Cell]:
    """The cells of shard ``i`` of ``n`` (1-based), in plan order (module docstring)."""
    i, n = parse_shard((i, n))  # type: ignore[misc]
    comps = components(plan)
    if n > len(comps):
        raise ShardError(f"--shard {i}/{n}: this plan splits into at most {len(comps)} "
                         f"self-contained shards (one per seed, plus the reference logit "
                         f"lens); use n <= {len(comps)}")
    load = [0] * n
    owner: dict[str, int] = {}
    for comp in sorted(comps, key=len, reverse=True):  # stable: plan order among equals
        s = min(range(n), key=lambda j: (load[j], j))
        load[s] += len(comp)
        for c in comp:
            owner[c.key] = s + 1
    return [c for c in plan if owner[c.key] == i]


def shard_dir(out: str | Path, i: int, n: int) -> Path:
    """``RUN/shards/{i}-of-{n}``: where shard ``i`` of ``n`` of the run ``out`` lives."""
    return Path(out) / SHARDS_DIR / f"{int(i)}-of-{int(n)}"


def saved_config(out: str | Path, shard: tuple[int, int] | None) -> Path:
    """The config ``--resume`` reads: shard ``i/n``'s own, else ``out``'s, else (merging
    shards that alone ran) the first shard's."""
    from interp_unlearn.pipeline.reproduce.config import CONFIG_FILE

    if shard is not None:
        return shard_dir(out, *shard) / CONFIG_FILE
    path = Path(out) / CONFIG_FILE
    root = Path(out) / SHARDS_DIR
    if not path.is_file() and root.is_dir():
        found = sorted(root.glob(f"*/{CONFIG_FILE}"))
        if found:
            return found[0]
    return path


def _move_absent(src: Path, dst: Path) -> None:
    """Move every entry of ``src`` into ``dst`` that ``dst`` lacks (temp dirs excluded)."""
    if not src.is_dir():
        return
    dst.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        if entry.name.startswith(".") or (dst / entry.name).exists():
            continue
        try:
            entry.rename(dst / entry.name)
        except OSError:  # another filesystem: copy
            (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, dst / entry.name)


def import_shards(run_dir: str | Path, store: ResultsStore, plan: list[Cell]) -> int:
    """Merge ``run_dir/shards/*`` into ``run_dir`` (module docstring); returns the number of
    cells copied into ``store``. Raises ``RuntimeError`` naming a shard still running."""
    root = Path(run_dir) / SHARDS_DIR
    if not root.is_dir():
        return 0
    wanted = {c.key: c for c in plan}
    have = set(store.finished())
    copied = 0
    sdirs = sorted(p for p in root.iterdir() if p.is_dir())
    with contextlib.ExitStack() as locks:
        for sdir in sdirs:  # a running shard: RuntimeError naming it, before any copy
            locks.enter_context(run_lock(sdir))
        for sdir in sdirs:
            for key, (rows, marker) in ResultsStore(sdir).finished().items():
                if key not in wanted or key in have:
                    continue
                clean = [{k: v for k, v in r.items()
                          if k not in ("cell", "attempt", "written_at")} for r in rows]
                store.write_cell(key, clean, seconds=float(marker.get("value") or 0.0),
                                 cpu_seconds=marker.get("cpu_seconds"),
                                 merged_from=str(sdir.relative_to(run_dir)))
                have.add(key)
                copied += 1
            for sub in (LOCALIZE_DIR, CHECKPOINT_DIR):
                _move_absent(sdir / sub, Path(run_dir) / sub)
    return copied
