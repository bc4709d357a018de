"""Text corpora by their real names (``cais/wmdp-corpora`` subsets, ``wikitext``), a local
file in the same schema, or the organism's world: :func:`load_corpus` -> ``list[str]``.

The names, the filters and the offline behaviour are documented in
:mod:`interp_unlearn.data.datasets` (the MCQ half, which also holds the shared resolution
helpers).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from interp_unlearn.data.datasets import (_CORPUS_ALIASES, _GATED, _ORGANISM_CORPORA, CORPORA,
                                          CORPUS_SUFFIXES, GatedDatasetError, Source,
                                          _hub_dataset, _local_files,
                                          _looks_like_hub, _looks_like_path, _read_parquet,
                                          _check_limit, _split_organism, organism_world_dir)

__all__ = ["load_corpus", "resolve_corpus"]


def resolve_corpus(name_or_path: str | os.PathLike, split: str | None = None) -> Source:
    """Where :func:`load_corpus` would read ``name_or_path`` from (nothing is read)."""
    s = str(name_or_path)
    p = Path(s).expanduser()
    if p.exists():
        return Source("local", s, _local_files(p, split, CORPUS_SUFFIXES))
    if s in _GATED:
        raise GatedDatasetError(
            f"{s!r}: the WMDP bio forget corpus is gated (hub: cais/wmdp-bio-forget-corpus, "
            f"access on request from the WMDP authors) and is not loaded by name. Download it "
            f"and pass the local JSONL path, e.g. load_corpus('data/bio_remove_dataset.jsonl') "
            f"as in the WMDP repo ({{\"text\": ...}} per line).")
    org = _split_organism(s)
    if org is not None:
        prefix, what = org
        world = organism_world_dir(prefix)
        names = _ORGANISM_CORPORA.get(what, (what,))
        paths = tuple(world / "corpora" / f"{n}.jsonl" for n in names)
        for path in paths:
            if not path.is_file():
                avail = sorted(["forget", "retain"] + [f.stem for f in (world / "corpora").glob("*.jsonl")])
                raise FileNotFoundError(f"{s!r}: no corpus file {path}; valid after the colon: "
                                        f"{avail}")
        return Source("organism", s, paths)
    key = _CORPUS_ALIASES.get(s, s)
    if key in CORPORA:
        repo, config, default_split = CORPORA[key]
        return Source("hub", s, repo=repo, config=config, split=split or default_split)
    if _looks_like_path(s, CORPUS_SUFFIXES):
        raise FileNotFoundError(f"corpus file not found: {p}")
    if _looks_like_hub(s):
        repo, _, config = s.partition(":")
        return Source("hub", s, repo=repo, config=config or None, split=split or "train")
    raise ValueError(f"unknown corpus {s!r}; valid: {', '.join(CORPORA)}, bio-forget-corpus "
                     f"(local path only), organism:forget, organism:retain, organism:general, "
                     f"organism:forget-attack, an owner/name[:config] hub dataset, or a local "
                     f"{'/'.join(CORPUS_SUFFIXES)} file")


def _texts_from_records(records, where: str) -> list[str]:
    out = []
    for i, rec in enumerate(records):
        if isinstance(rec, str):
            out.append(rec)
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
            raise ValueError(f"{where}: row {i} (0-based): expected an object with a string "
                             f"'text' field")
        out.append(rec["text"])
    return out


def _read_jsonl_texts(path: Path) -> list[str]:
    out = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{i}: invalid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                raise ValueError(f"{path}:{i}: expected an object with a string 'text' field")
            out.append(rec["text"])
    return out


def _read_corpus_file(path: Path) -> list[str]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl_texts(path)
    if suffix in (".txt", ".raw"):
        text = path.read_text(encoding="utf-8")
        lines = text.split("\n")
        return lines[:-1] if text.endswith("\n") else lines
    if suffix == ".json":
        text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return _read_jsonl_texts(path)
        if isinstance(data, dict) and isinstance(data.get("text"), list):
            data = data["text"]
        elif isinstance(data, dict):
            data = [data]
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON array of texts or {{\"text\": ...}} objects")
        return _texts_from_records(data, str(path))
    df = _read_parquet(path)
    if "text" not in df.columns:
        raise ValueError(f"{path}: missing column 'text'; columns are {list(df.columns)}")
    return _texts_from_records(df["text"].tolist(), str(path))


def load_corpus(name_or_path: str | os.PathLike, limit: int | None = None, min_len: int = 0,
                split: str | None = None) -> list[str]:
    """Texts of a corpus by real name, local file or organism world (see the module
    docstring). Keeps texts with ``len(text) > min_len`` (the RMU reference's filter),
    then the first ``limit``. ``split`` overrides a hub dataset's default split
    (``train`` for ``cais/wmdp-corpora``, ``test`` for wikitext)."""
    _check_limit(limit)
    if isinstance(min_len, bool) or not isinstance(min_len, int) or min_len < 0:
        raise ValueError(f"min_len must be a non-negative int, got {min_len!r}")
    src = resolve_corpus(name_or_path, split)
    if src.kind == "hub":
        ds = _hub_dataset(src)
        if "text" not in ds.column_names:
            raise ValueError(f"{src.describe()}: no 'text' column; columns are {ds.column_names}")
        texts = _texts_from_records(ds["text"], src.describe())
    else:
        texts = [t for path in src.paths for t in _read_corpus_file(path)]
    texts = [t for t in texts if len(t) > min_len]
    if not texts:
        raise ValueError(f"{src.name!r} ({src.describe()}): no texts longer than min_len={min_len}")
    return texts if limit is None else texts[:limit]


