"""Small helpers of the floor: list/seed parsing and its append-only ``results.jsonl``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["parse_list", "parse_seeds", "read_results"]


def parse_list(value: Any, cast: Callable[[str], Any] = int) -> list[Any]:
    """``"0,5,10"`` / ``[0, 5, 10]`` / ``5`` -> a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [cast(v.strip()) for v in value.split(",") if v.strip()]
    if isinstance(value, Iterable):
        return list(value)
    return [value]


def parse_seeds(seeds: Any) -> list[int]:
    """An int ``k`` (or the string ``"k"``) means seeds ``0..k-1``; ``"0,3"`` or a list is
    taken as is; repeats are an error."""
    if isinstance(seeds, bool):
        raise TypeError("seeds must be an int count or a list of ints, not a bool")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {seeds}")
        return list(range(seeds))
    if isinstance(seeds, str) and seeds.strip().isdigit():
        return parse_seeds(int(seeds.strip()))
    out = [int(s) for s in parse_list(seeds)]
    if not out:
        raise ValueError("no seeds given")
    if len(set(out)) != len(out):
        raise ValueError(f"seeds repeat: {out}")
    return out


def read_results(path: str | os.PathLike) -> list[dict]:
    """Every complete JSON object line of ``path`` (missing file: ``[]``; lines cut by an
    interruption are skipped)."""
    path = Path(path)
    rows: list[dict] = []
    if not path.is_file():
        return rows
    with path.open() as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by an interruption
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def _append(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cut = False
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            cut = f.read(1) != b"\n"  # a write cut by a kill: end that line first
    with path.open("a") as f:
        if cut:
            f.write("\n")
        f.write("".join(json.dumps(r, default=str) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())
