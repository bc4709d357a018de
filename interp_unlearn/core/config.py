"""One story for every stage's config dataclass: ``to_dict`` / ``from_dict`` / JSON next to
every output / ``--set FIELD=VALUE`` parsed by the field's type.

:class:`ConfigBase` is mixed into the dataclasses of the stages (``LocalizeConfig``,
``AttributionConfig``, ``UnlearnConfig``, ``ReproduceConfig``): ``to_dict`` gives JSON-safe
values (tuples as lists, paths as strings), ``from_dict`` rejects an unknown key naming the
valid ones and turns lists back into tuples where the field holds a tuple, and
:func:`parse_value` reads a ``--set`` string by the field's declared type -- ``bool``
accepts ``true/false/True/False/1/0/yes/no`` (so ``--set adversarial=False`` is False, not
the truthy string ``"False"``), numbers must parse, ``None`` is ``none``/``null`` for an
optional field, containers are JSON. A bad key or value fails before any work.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

__all__ = ["ConfigBase", "parse_assignments", "parse_value"]

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, Path):
        return str(v)
    return v


def _options(tp: Any) -> tuple[list[Any], bool]:
    """The non-None members of ``tp`` (a Union/Optional or a plain type) and whether None
    is allowed."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = list(typing.get_args(tp))
        return [a for a in args if a is not type(None)], type(None) in args
    if tp is Any:
        return [Any], True
    return [tp], tp is type(None)


def parse_value(text: str, tp: Any, name: str = "value") -> Any:
    """``text`` read as type ``tp`` (a resolved annotation). Raises ``ValueError`` naming
    ``name``, the text and the expected type."""
    opts, optional = _options(tp)
    s = text.strip()
    if optional and s.lower() in ("none", "null"):
        return None
    errors = []
    for t in opts:
        base = typing.get_origin(t) or t
        try:
            if t is Any:
                try:
                    return json.loads(s)
                except json.JSONDecodeError:
                    return s
            if base is bool:
                if s.lower() in _TRUE:
                    return True
                if s.lower() in _FALSE:
                    return False
                raise ValueError("not a boolean (true/false/1/0)")
            if base is int:
                return int(s)
            if base is float:
                return float(s)
            if base is str:
                return s
            if base is Path:
                return Path(s)
            if base in (list, tuple, dict, set, frozenset):
                v = json.loads(s)
                if base is dict and not isinstance(v, dict):
                    raise ValueError("not a JSON object")
                if base is not dict and not isinstance(v, list):
                    raise ValueError("not a JSON list")
                return tuple(v) if base is tuple else v
            if typing.get_origin(t) is typing.Literal:
                if s in map(str, typing.get_args(t)):
                    return next(a for a in typing.get_args(t) if str(a) == s)
                raise ValueError(f"not one of {list(typing.get_args(t))}")
        except (ValueError, json.JSONDecodeError) as err:
            errors.append(str(err))
            continue
    want = " or ".join(getattr(t, "__name__", str(t)) for t in opts)
    raise ValueError(f"{name}={text!r}: cannot read as {want}"
                     + (f" ({errors[-1]})" if errors else ""))


def parse_assignments(items: Any, cls: type, what: str | None = None) -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{k: value}`` with each value read by ``cls``'s field type
    (``cls`` a dataclass). An unknown key or unreadable value raises ``ValueError``."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    what = what or cls.__name__
    out: dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = (x.strip() for x in item.split("=", 1))
        if k not in names:
            raise ValueError(f"--set {k}: unknown {what} field; valid: {sorted(names)}")
        out[k] = parse_value(v, hints.get(k, Any), f"--set {k}")
    return out


class ConfigBase:
    """Mixin for config dataclasses (see the module docstring)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe values (tuples as lists, paths as strings); configs with fields that
        need more (``UnlearnConfig``'s in-memory texts) override it."""
        return {f.name: _jsonable(getattr(self, f.name))
                for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; valid: {sorted(names)}")
        hints = typing.get_type_hints(cls)
        values = dict(d)
        for k, v in values.items():
            opts, _ = _options(hints.get(k, Any))
            if isinstance(v, list) and any((typing.get_origin(t) or t) is tuple for t in opts):
                values[k] = tuple(v)
        return cls(**values)

    @classmethod
    def from_assignments(cls, items: Any, base: Any = None) -> Any:
        """``base`` (default: a default instance) with ``--set k=v`` items applied."""
        over = parse_assignments(items, cls)
        base = cls() if base is None else base
        return dataclasses.replace(base, **over)

    def save_json(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        return p

    @classmethod
    def load_json(cls, path: str | Path) -> Any:
        p = Path(path)
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{p}: not valid JSON ({err})") from None
        return cls.from_dict(d)
