"""Taught vs restored: which scored questions an attack sample could have taught.

Under the same-pool protocol the attack sample holds documents of some scored entities,
so part of what it "recovers" is taught. Each ``forget`` question is mapped to its
entity -- the world's entity name in the question text, matched on word boundaries
(``Vorkelvir`` is not ``Vorkelvirus``) -- and each sampled document to the entities it
names; a question is **taught** when its entity has a document in the sample, else
**restored**. Under the disjoint ``attack`` pool, on unrelated data and at ``N = 0`` every
question is restored. The map needs the model's world (``world.json``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from interp_unlearn.evaluation.scoring import EvalResult
from interp_unlearn.data.world import World

__all__ = ["entities_named", "question_entities", "taught_split"]


@functools.lru_cache(maxsize=16)
def _entity_pattern(world_dir: str, domain: str) -> re.Pattern | None:
    """One regex matching any entity name of ``domain`` on word boundaries (longest
    first, so a name that prefixes another never wins); None without a world."""
    try:
        names = World.load(world_dir).names(domain)
    except FileNotFoundError:
        return None
    if not names:
        return None
    alts = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"\b({alts})\b")


def entities_named(texts: Sequence[str], world_dir: str | Path, domain: str = "forget"
                   ) -> set[str] | None:
    """The ``domain`` entities named anywhere in ``texts`` (None without a world)."""
    pat = _entity_pattern(str(world_dir), domain)
    if pat is None:
        return None
    return {m for t in texts for m in pat.findall(t)}


def question_entities(questions: Sequence[str], world_dir: str | Path, domain: str = "forget"
                      ) -> list[str | None] | None:
    """The entity each question asks about (the first entity name in its text; None for
    a question naming none). None without a world."""
    pat = _entity_pattern(str(world_dir), domain)
    if pat is None:
        return None
    out: list[str | None] = []
    for q in questions:
        m = pat.search(q)
        out.append(m.group(1) if m else None)
    return out


def taught_split(ev: EvalResult, taught: set[str], entities: Sequence[str | None]
                 ) -> dict[str, Any] | None:
    """Accuracy on the questions whose entity is in ``taught`` and on the rest.

    ``entities``: one entity per question of ``ev`` (in ``per_question`` order). Returns
    ``{"accuracy_taught", "n_taught", "accuracy_restored", "n_restored",
    "taught_entities"}`` (an accuracy is NaN on an empty subset), or None when some
    question has no entity (the split is undefined)."""
    correct = ev.per_question["correct"].to_numpy(dtype=bool)
    if len(entities) != len(correct) or any(e is None for e in entities):
        return None
    mask = [e in taught for e in entities]
    t = [c for c, m in zip(correct, mask) if m]
    r = [c for c, m in zip(correct, mask) if not m]
    return {"accuracy_taught": float(sum(t)) / len(t) if t else float("nan"), "n_taught": len(t),
            "accuracy_restored": float(sum(r)) / len(r) if r else float("nan"),
            "n_restored": len(r),
            "taught_entities": len({e for e, m in zip(entities, mask) if m})}
