"""Split a shipped real-knowledge MCQ set into its ``eval`` and ``practice`` pools.

    python notes/scripts/real_sets_split.py interp_unlearn/assets/real-knowledge/mcq/forget.jsonl

The written set (every record with ``topic`` and ``source``) is replaced by its eval pool
(``forget.jsonl``: 50 questions per answer position) and ``forget-practice.jsonl`` (the
rest: ~10 per position), drawn per answer position with a fixed seed, so both pools keep
the answer positions balanced. Practice questions are for tuning and head selection and
are never scored in reported results. Idempotent: a set already split is left alone.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

PER_POSITION_EVAL = 50


def split(path: Path, seed: int = 0) -> None:
    practice = path.with_name(f"{path.stem}-practice.jsonl")
    if practice.exists():
        print(f"{path}: already split ({practice.name} exists)")
        return
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
               if line.strip()]
    rng = random.Random(seed)
    eval_ids: set[int] = set()
    for pos in range(4):
        ids = [i for i, r in enumerate(records) if r["answer"] == pos]
        if len(ids) < PER_POSITION_EVAL:
            raise SystemExit(f"{path}: only {len(ids)} questions with answer {pos}")
        eval_ids |= set(rng.sample(ids, PER_POSITION_EVAL))
    for name, keep in ((path, True), (practice, False)):
        rows = [r for i, r in enumerate(records) if (i in eval_ids) == keep]
        name.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                        encoding="utf-8")
        print(f"{name}: {len(rows)} questions")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        split(Path(arg))
