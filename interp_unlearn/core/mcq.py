"""Multiple-choice questions in the ``cais/wmdp`` schema.

One JSON object per line::

    {"question": "...", "choices": ["...", "...", "...", "..."], "answer": 0}

``answer`` is the 0-based index of the correct choice. Extra keys in a record are
allowed and ignored. :func:`load_mcq` never skips a malformed record silently: every
problem raises :class:`MCQFormatError` naming the file, the 1-based line number and
what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MCQ", "MCQFormatError", "N_CHOICES", "load_mcq", "write_mcq"]

N_CHOICES = 4


class MCQFormatError(ValueError):
    """A multiple-choice file or record does not follow the ``cais/wmdp`` schema."""


@dataclass(frozen=True)
class MCQ:
    """One four-way multiple-choice question; ``answer`` indexes ``choices``."""

    question: str
    choices: tuple[str, str, str, str]
    answer: int

    def __post_init__(self) -> None:
        problem = _record_problem(
            {"question": self.question, "choices": list(self.choices)
             if isinstance(self.choices, (list, tuple)) else self.choices,
             "answer": self.answer})
        if problem is not None:
            raise MCQFormatError(f"invalid MCQ: {problem}")
        if not isinstance(self.choices, tuple):  # accept a list, store a tuple
            object.__setattr__(self, "choices", tuple(self.choices))

    def to_record(self) -> dict[str, Any]:
        """The ``cais/wmdp`` record for this question."""
        return {"question": self.question, "choices": list(self.choices), "answer": self.answer}


def _record_problem(record: Any) -> str | None:
    """What is wrong with ``record`` as a ``cais/wmdp`` record, or None if nothing."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    for key in ("question", "choices", "answer"):
        if key not in record:
            return f"missing field {key!r}"
    question, choices, answer = record["question"], record["choices"], record["answer"]
    if not isinstance(question, str):
        return f"'question' must be a string, got {type(question).__name__}"
    if not isinstance(choices, list):
        return f"'choices' must be a list of {N_CHOICES} strings, got {type(choices).__name__}"
    if len(choices) != N_CHOICES:
        return f"'choices' must have exactly {N_CHOICES} entries, got {len(choices)}"
    for i, choice in enumerate(choices):
        if not isinstance(choice, str):
            return f"'choices'[{i}] must be a string, got {type(choice).__name__}"
    # bool is a subclass of int in Python; true/false is not an answer index.
    if isinstance(answer, bool) or not isinstance(answer, int):
        return f"'answer' must be an integer, got {type(answer).__name__} {answer!r}"
    if not 0 <= answer < N_CHOICES:
        return f"'answer' must be in 0..{N_CHOICES - 1}, got {answer}"
    return None


def load_mcq(path: str | Path) -> list[MCQ]:
    """Read a JSONL file of ``cais/wmdp`` records.

    Blank (whitespace-only) lines are skipped. Raises :class:`MCQFormatError` (naming the
    file and 1-based line number) for invalid JSON, a non-object, a missing field, a
    field of the wrong type, ``choices`` not exactly four strings, an ``answer`` that is
    not an int (bools are rejected) or outside 0..3, and for a file with no records.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise MCQFormatError(f"{path}: not valid UTF-8 ({e})") from e
    items: list[MCQ] = []
    # split("\n") rather than splitlines(): JSON strings may not hold raw line breaks,
    # but exotic separators (\u2028, \x0c) inside them are legal and must not split.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise MCQFormatError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from e
        problem = _record_problem(record)
        if problem is not None:
            raise MCQFormatError(f"{path}:{lineno}: {problem}")
        items.append(MCQ(question=record["question"], choices=tuple(record["choices"]),
                         answer=record["answer"]))
    if not items:
        raise MCQFormatError(f"{path}: no records (the file is empty or only blank lines)")
    return items


def write_mcq(path: str | Path, items: Iterable[MCQ]) -> Path:
    """Write ``items`` as ``cais/wmdp`` JSONL (one record a line, UTF-8); returns the path."""
    path = Path(path)
    items = list(items)
    for i, item in enumerate(items):
        if not isinstance(item, MCQ):
            raise TypeError(f"items[{i}] is a {type(item).__name__}, expected MCQ")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item.to_record(), ensure_ascii=False) + "\n")
    return path
