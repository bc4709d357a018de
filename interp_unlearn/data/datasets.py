"""Datasets by their real names and schemas, a local file in the same schema, or the
organism's synthetic world -- one interface for all three.

MCQ sets (:func:`load_mcq_dataset`) -> ``list[MCQ]``; ``cais/wmdp`` schema
``{"question": str, "choices": [4 str], "answer": int}``:

=================================  ===========================================================
``wmdp-bio`` ``wmdp-cyber``        ``cais/wmdp`` subsets (split ``test``: 1,273 / 1,987 / 408
``wmdp-chem``                      questions); also ``cais/wmdp:wmdp-bio``, ``wmdp_bio``
``owner/name[:config]``            any other hub dataset in the same schema (e.g.
                                   ``cais/mmlu:college_biology``)
``organism:forget``                the built-in organism's MCQs of its default pool (``eval``;
``organism:retain``                ``practice`` for ``organism-micro``); ``organism:forget-attack``
                                   etc. name a pool; any built-in name or organism/world/
                                   checkpoint directory may stand before the colon
``path.jsonl|.json|.parquet``      a local file in the same schema (parquet is how the hub
                                   stores ``cais/wmdp``: ``wmdp-bio/test-00000-of-00001.parquet``);
                                   a directory of such files (``split``-prefixed ones preferred)
=================================  ===========================================================

Text corpora (:func:`load_corpus`) -> ``list[str]`` (field ``text``):

=================================  ===========================================================
``bio-retain-corpus``              ``cais/wmdp-corpora`` subsets (split ``train``); also
``cyber-forget-corpus``            ``cais/wmdp-corpora:cyber-forget-corpus``
``cyber-retain-corpus``
``bio-forget-corpus``              gated: raises :class:`GatedDatasetError`; pass the JSONL the
                                   WMDP authors share on request as a local path (the WMDP
                                   repo's ``data/bio_remove_dataset.jsonl``)
``wikitext``                       ``wikitext-2-raw-v1``, split ``test`` (the RMU reference's
                                   retain set); hub repo ``Salesforce/wikitext`` (``wikitext``
                                   redirects there)
``organism:forget``                declarative documents of every forget-domain pool (eval +
                                   practice + attack): the bio-forget-corpus stand-in
``organism:retain``                declarative documents of every retain-domain pool
``organism:general``               general filler text: the wikitext stand-in
``organism:forget-attack``         the attack pool's documents (what fine-tuning attacks
                                   draw); any world corpus file name works
                                   (``forget-eval``, ``forget-qa``, ``retain-practice`` ...)
``path.jsonl|.json|.parquet``      local ``{"text": ...}`` records; ``.txt``/``.raw``: one
``path.txt|.raw``                  text per line (line break removed)
=================================  ===========================================================

Texts are kept when ``len(text) > min_len``, the RMU reference's filter
(``rmu/utils.py:get_data``); ``min_len=0`` drops exactly the empty lines of wikitext,
``min_len=50`` is the reference's default. (The reference reads the cyber and retain
``.jsonl`` files as raw lines, JSON syntax included; we parse them and take ``text``.)

Hub names go through ``datasets.load_dataset`` with the real repository, config and
split. With ``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE`` set, or the hub unreachable, a hub
name fails at once with :class:`~interp_unlearn.data.loading.OfflineError` saying to pass a
local path; the HF datasets cache is not consulted.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp_unlearn.core.checkpoint import META_FILE, read_meta
from interp_unlearn.core.mcq import (MCQ, MCQFormatError, _file_record_problem, _read_text,
                                     _warn_duplicates, load_mcq)

# ``interp_unlearn.data.loading`` imports torch and transformers; it is imported where needed
# so that reading data stays light.

__all__ = [
    "CORPORA",
    "GatedDatasetError",
    "MCQ_DATASETS",
    "Source",
    "load_mcq_dataset",
    "offline",
    "organism_world_dir",
    "resolve_mcq",
]

MCQ_SUFFIXES = (".jsonl", ".json", ".parquet")
CORPUS_SUFFIXES = (".jsonl", ".json", ".parquet", ".txt", ".raw")

# name -> (hub repository, config, default split)
MCQ_DATASETS: dict[str, tuple[str, str, str]] = {
    "wmdp-bio": ("cais/wmdp", "wmdp-bio", "test"),
    "wmdp-cyber": ("cais/wmdp", "wmdp-cyber", "test"),
    "wmdp-chem": ("cais/wmdp", "wmdp-chem", "test"),
}
CORPORA: dict[str, tuple[str, str, str]] = {
    "bio-retain-corpus": ("cais/wmdp-corpora", "bio-retain-corpus", "train"),
    "cyber-forget-corpus": ("cais/wmdp-corpora", "cyber-forget-corpus", "train"),
    "cyber-retain-corpus": ("cais/wmdp-corpora", "cyber-retain-corpus", "train"),
    "wikitext": ("Salesforce/wikitext", "wikitext-2-raw-v1", "test"),
}
_MCQ_ALIASES = {**{f"cais/wmdp:{k}": k for k in MCQ_DATASETS},
                **{k.replace("-", "_"): k for k in MCQ_DATASETS}}
_CORPUS_ALIASES = {**{f"cais/wmdp-corpora:{k}": k for k in CORPORA if k != "wikitext"},
                   "wikitext-2-raw-v1": "wikitext", "wikitext:wikitext-2-raw-v1": "wikitext",
                   "Salesforce/wikitext": "wikitext",
                   "Salesforce/wikitext:wikitext-2-raw-v1": "wikitext"}
_GATED = ("bio-forget-corpus", "cais/wmdp-corpora:bio-forget-corpus",
          "cais/wmdp-bio-forget-corpus", "bio_remove_dataset")

# organism corpus shorthands -> world corpus files (corpora/<name>.jsonl)
_ORGANISM_CORPORA = {
    "forget": ("forget-eval", "forget-practice", "forget-attack"),
    "retain": ("retain-eval", "retain-practice"),
}


class GatedDatasetError(ValueError):
    """The dataset is gated on the hub and must be given as a local file."""


@dataclass(frozen=True)
class Source:
    """Where a dataset name resolves to: ``kind`` is ``local`` (``paths``), ``hub``
    (``repo``, ``config``, ``split``) or ``organism`` (``paths`` inside its world)."""

    kind: str
    name: str
    paths: tuple[Path, ...] = ()
    repo: str | None = None
    config: str | None = None
    split: str | None = None

    def describe(self) -> str:
        if self.kind == "hub":
            return f"{self.repo}:{self.config} (split {self.split})" if self.config \
                else f"{self.repo} (split {self.split})"
        return ", ".join(str(p) for p in self.paths)


# ------------------------------------------------------------------------ resolution


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE`` is set to a true value."""
    return any(os.environ.get(v, "0").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _looks_like_path(s: str, suffixes: tuple[str, ...]) -> bool:
    if s.startswith((".", "/", "~")) or s.lower().endswith(suffixes):
        return True
    return ("/" in s or os.sep in s) and not _looks_like_hub(s)


def _looks_like_hub(s: str) -> bool:
    repo = s.split(":", 1)[0]
    parts = repo.split("/")
    return len(parts) == 2 and all(parts) and not s.startswith((".", "/", "~"))


def organism_world_dir(name_or_path: str | os.PathLike) -> Path:
    """The synthetic world of a built-in organism (``organism``, ``organism-micro``, twins
    included) or of a directory: a world directory (``world.json``), an organism directory
    (``world/``) or a checkpoint directory whose ``interp_unlearn.json`` names its
    ``world_dir``. No weights are loaded."""
    from interp_unlearn.data.loading import BUILTIN, builtin_path

    s = str(name_or_path)
    if s in BUILTIN:
        d = builtin_path(s)
    else:
        d = Path(s).expanduser()
        if not d.is_dir():
            raise ValueError(f"{s!r} is neither a built-in organism ({', '.join(sorted(BUILTIN))}) "
                             f"nor a directory")
    if (d / "world.json").is_file():
        return d.resolve()
    if (d / "world" / "world.json").is_file():
        return (d / "world").resolve()
    meta_file = d / META_FILE
    if meta_file.is_file():
        world = read_meta(d).get("world_dir")
        if world is not None:
            w = (d / world).resolve()
            if not (w / "world.json").is_file():
                raise FileNotFoundError(f"{meta_file} names world_dir {world!r}, but there is no "
                                        f"world.json at {w}")
            return w
    raise ValueError(f"{d} carries no synthetic world (no world.json, no world/ and no "
                     f"world_dir in {META_FILE})")


def _organism_default_pool(prefix: str) -> str:
    """The MCQ pool ``organism:forget`` means: the checkpoint's ``eval_pool``."""
    from interp_unlearn.data.loading import BUILTIN, builtin_path

    d = builtin_path(prefix) if prefix in BUILTIN else Path(prefix).expanduser()
    if (d / META_FILE).is_file():
        return read_meta(d).get("eval_pool", "eval")
    if (d / "model" / META_FILE).is_file():  # an organism directory
        return read_meta(d / "model").get("eval_pool", "eval")
    return "eval"


def _split_organism(s: str) -> tuple[str, str] | None:
    """``prefix:what`` where prefix is a built-in organism or an existing directory."""
    if ":" not in s:
        return None
    prefix, what = s.rsplit(":", 1)
    if prefix.startswith("organism") and "/" not in prefix:  # built-in names
        return prefix, what
    if Path(prefix).expanduser().is_dir():
        return prefix, what
    return None


def _local_files(path: Path, split: str | None, suffixes: tuple[str, ...]) -> tuple[Path, ...]:
    if path.is_file():
        if not path.name.lower().endswith(suffixes):
            raise ValueError(f"{path}: unsupported file type; expected one of {', '.join(suffixes)}")
        return (path,)
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(suffixes))
    if split:
        chosen = [p for p in files if p.name.startswith((f"{split}-", f"{split}.", f"{split}_"))]
        files = chosen or files
    if not files:
        raise FileNotFoundError(f"{path}: directory holds no {'/'.join(suffixes)} files")
    return tuple(files)


def resolve_mcq(name_or_path: str | os.PathLike, split: str | None = "test") -> Source:
    """Where :func:`load_mcq_dataset` would read ``name_or_path`` from (nothing is read)."""
    s = str(name_or_path)
    p = Path(s).expanduser()
    if p.exists():
        return Source("local", s, _local_files(p, split, MCQ_SUFFIXES))
    org = _split_organism(s)
    if org is not None:
        prefix, what = org
        if what in ("forget", "retain"):
            what = f"{what}-{_organism_default_pool(prefix)}"
        domain, _, pool = what.partition("-")
        if domain not in ("forget", "retain") or not pool:
            raise ValueError(f"{s!r}: after the colon give forget, retain or <domain>-<pool> "
                             f"(e.g. forget-eval, forget-practice, forget-attack, retain-eval)")
        path = organism_world_dir(prefix) / "mcq" / f"{what}.jsonl"
        if not path.is_file():
            avail = sorted(f.stem for f in path.parent.glob("*.jsonl"))
            raise FileNotFoundError(f"{s!r}: no MCQ file {path}; available: {avail}")
        return Source("organism", s, (path,))
    key = _MCQ_ALIASES.get(s, s)
    if key in MCQ_DATASETS:
        repo, config, default_split = MCQ_DATASETS[key]
        return Source("hub", s, repo=repo, config=config, split=split or default_split)
    if _looks_like_path(s, MCQ_SUFFIXES):
        raise FileNotFoundError(f"MCQ file not found: {p}")
    if _looks_like_hub(s):
        repo, _, config = s.partition(":")
        return Source("hub", s, repo=repo, config=config or None, split=split or "test")
    raise ValueError(f"unknown MCQ dataset {s!r}; valid: {', '.join(MCQ_DATASETS)}, "
                     f"organism:forget, organism:retain, an owner/name[:config] hub dataset, "
                     f"or a local {'/'.join(MCQ_SUFFIXES)} file")


def _hub_dataset(src: Source):
    """``datasets.load_dataset`` for a hub source; fails at once when offline."""
    from interp_unlearn.data.loading import OfflineError, hub_reachable

    if offline():
        raise OfflineError(
            f"{src.name!r} is a hub dataset ({src.describe()}) and HF_HUB_OFFLINE / "
            f"HF_DATASETS_OFFLINE is set: nothing can be downloaded. Pass a local path instead "
            f"(a .jsonl/.json/.parquet file in the same schema, e.g. the hub's own parquet file).")
    if not hub_reachable():
        raise OfflineError(f"{src.name!r} is a hub dataset ({src.describe()}) but huggingface.co "
                           f"cannot be reached; pass a local path instead.")
    import datasets

    return datasets.load_dataset(src.repo, src.config, split=src.split)


# ----------------------------------------------------------------------- MCQ loading


def _to_python(value: Any) -> Any:
    """numpy / pyarrow scalars and arrays (parquet via pandas) -> plain Python."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return value.tolist()
    return value


def _records_to_mcq(records, where: str) -> list[MCQ]:
    items = []
    for i, rec in enumerate(records):
        if isinstance(rec, dict):
            rec = {k: _to_python(v) for k, v in rec.items()}
        problem = _file_record_problem(rec)
        if problem is not None:
            raise MCQFormatError(f"{where}: row {i} (0-based): {problem}")
        items.append(MCQ(rec["question"], tuple(rec["choices"]), rec["answer"]))
    if not items:
        raise MCQFormatError(f"{where}: no records")
    _warn_duplicates((((it.question, it.choices), i) for i, it in enumerate(items)),
                     where, lambda i: f"row {i} (0-based)")
    return items


def _read_parquet(path: Path):
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except Exception as err:  # pyarrow raises its own types
        raise ValueError(f"{path}: cannot read as parquet ({type(err).__name__}: {err})") from err


def _columns_to_records(df, path: Path, needed: tuple[str, ...]) -> list[dict]:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise MCQFormatError(f"{path}: missing column(s) {missing}; columns are {list(df.columns)}")
    return df[list(needed)].to_dict(orient="records")


def _mcq_from_json(path: Path) -> list[MCQ]:
    """A ``.json`` file: a JSON array of records, a dict of columns, a single record, or
    (as the ``json`` dataset builder also accepts) JSON lines. UTF-8, a leading
    byte-order mark allowed."""
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return load_mcq(path)  # JSON lines: errors name the line
    if isinstance(data, dict) and "question" in data and isinstance(data["question"], list):
        keys = ("question", "choices", "answer")
        if any(not isinstance(data.get(k), list) for k in keys) or \
                len({len(data[k]) for k in keys}) != 1:
            raise MCQFormatError(f"{path}: a dict of columns needs lists 'question', 'choices', "
                                 f"'answer' of equal length")
        data = [dict(zip(keys, row)) for row in zip(*(data[k] for k in keys))]
    elif isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise MCQFormatError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
    return _records_to_mcq(data, str(path))


def _read_mcq_file(path: Path) -> list[MCQ]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return load_mcq(path)
    if suffix == ".json":
        return _mcq_from_json(path)
    df = _read_parquet(path)
    return _records_to_mcq(_columns_to_records(df, path, ("question", "choices", "answer")),
                           str(path))


def load_mcq_dataset(name_or_path: str | os.PathLike, split: str = "test",
                     limit: int | None = None) -> list[MCQ]:
    """Multiple-choice questions in the ``cais/wmdp`` schema from a real dataset name, a
    local file or the organism's world (see the module docstring for the names).
    ``split`` applies to hub datasets and to directories of split files; ``limit`` keeps
    the first ``limit`` questions. Malformed data raise :class:`MCQFormatError` naming the
    file and line (JSONL) or row (parquet / JSON array / hub)."""
    _check_limit(limit)
    src = resolve_mcq(name_or_path, split)
    if src.kind == "hub":
        ds = _hub_dataset(src)
        items = _records_to_mcq(ds, src.describe())
    else:
        items = [item for path in src.paths for item in _read_mcq_file(path)]
    return items if limit is None else items[:limit]


# -------------------------------------------------------------------- corpus loading


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be None or a positive int, got {limit!r}")
