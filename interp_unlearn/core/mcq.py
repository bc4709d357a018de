"""Multiple-choice questions in the ``cais/wmdp`` schema.

One JSON object per line::

    {"question": "...", "choices": ["...", "...", "...", "..."], "answer": 0}

``answer`` is the 0-based index of the correct choice. Extra keys in a record are
allowed and ignored. :func:`load_mcq` never skips a malformed record silently: every
problem raises :class:`MCQFormatError` naming the file, the 1-based line number and
what is wrong. Files are UTF-8, with or without a leading byte-order mark. Repeated
questions (same question text and same choices) are allowed but draw one
``UserWarning`` per file.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Hashable, Iterable
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


def _file_record_problem(record: Any) -> str | None:
    """:func:`_record_problem` plus the checks made on records read from data: no empty
    or whitespace-only choice. (The :class:`MCQ` constructor does not make this check,
    so code that builds questions in memory is unaffected.)"""
    problem = _record_problem(record)
    if problem is not None:
        return problem
    for i, choice in enumerate(record["choices"]):
        if not choice.strip():
            return f"'choices'[{i}] is empty" + (" (whitespace only)" if choice else "")
    return None


def _read_text(path: Path) -> str:
    """A UTF-8 text file's contents with any leading byte-order mark removed; a byte
    that is not UTF-8 raises :class:`MCQFormatError` naming the file and 1-based line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        before = e.object[:e.start]  # e.object has the BOM already stripped
        lineno = before.count(b"\n") + 1
        col = e.start - (before.rfind(b"\n") + 1) + 1
        bad = e.object[e.start:e.end]
        raise MCQFormatError(
            f"{path}:{lineno}: not valid UTF-8 (byte {bad.hex(' ')} at byte column {col}: "
            f"{e.reason}); save the file as UTF-8") from e


def _warn_duplicates(keys: Iterable[tuple[Hashable, Any]], where: str,
                     place: Callable[[Any], str] = lambda n: f"line {n}") -> None:
    """One ``UserWarning`` when the ``(key, location)`` pairs in ``keys`` repeat a key: it
    names ``where``, how many records repeat an earlier one and the first such pair
    (``place`` renders a location, e.g. ``line 7``)."""
    first_seen: dict[Hashable, Any] = {}
    n_dup = 0
    pair = None
    for key, loc in keys:
        if key in first_seen:
            n_dup += 1
            if pair is None:
                pair = (first_seen[key], loc)
        else:
            first_seen[key] = loc
    if n_dup:
        a, b = pair
        warnings.warn(
            f"{where}: {n_dup} duplicate question(s) (same question and choices as an earlier "
            f"record); the first: {place(b)} repeats {place(a)}", UserWarning, stacklevel=3)


def load_mcq(path: str | Path) -> list[MCQ]:
    """Read a JSONL file of ``cais/wmdp`` records.

    Blank (whitespace-only) lines are skipped and a leading UTF-8 byte-order mark is
    ignored. Raises :class:`MCQFormatError` (naming the file and 1-based line number)
    for bytes that are not UTF-8, invalid JSON, a non-object, a missing field, a field
    of the wrong type, ``choices`` not exactly four strings or holding an empty
    (whitespace-only) string, an ``answer`` that is not an int (bools are rejected) or
    outside 0..3, and for a file with no records. Records repeating an earlier record's
    question and choices are kept, with one ``UserWarning`` naming the file, the count
    and the line numbers of the first repeat.
    """
    path = Path(path)
    text = _read_text(path)
    items: list[MCQ] = []
    linenos: list[int] = []
    # split("\n") rather than splitlines(): JSON strings may not hold raw line breaks,
    # but exotic separators (\u2028, \x0c) inside them are legal and must not split.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise MCQFormatError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from e
        problem = _file_record_problem(record)
        if problem is not None:
            raise MCQFormatError(f"{path}:{lineno}: {problem}")
        items.append(MCQ(question=record["question"], choices=tuple(record["choices"]),
                         answer=record["answer"]))
        linenos.append(lineno)
    if not items:
        raise MCQFormatError(f"{path}: no records (the file is empty or only blank lines)")
    _warn_duplicates((((it.question, it.choices), n) for it, n in zip(items, linenos)),
                     str(path))
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
