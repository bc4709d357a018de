"""What every attack shares: the attack data, the model copy, the evaluation, the result.

* **Attack data** (:func:`attack_corpus`, :func:`sample_texts`). ``data="forget"`` draws
  forget-domain documents; ``pool="attack"`` (default) takes only the world's *attack
  pool* (``corpora/forget-attack.jsonl``: entities that are never scored), so an attack
  trains on some entities' text and is scored on others (Deeb & Roger's disjoint-facts
  protocol). ``pool="same"`` is the ALMPU paper's protocol: forget documents of *every*
  pool, the scored (eval/practice) entities included (``forget-eval.jsonl`` +
  ``forget-practice.jsonl`` + ``forget-attack.jsonl``). ``data="unrelated"`` draws from
  ``general.jsonl`` (the wikitext stand-in; recorded with ``pool="general"``). A path to
  a ``{"text": ...}`` JSONL file is also accepted (``pool="file"``). ``N`` samples are
  drawn with ``random.Random(seed)`` without replacement; ``N`` larger than the corpus is
  an error unless repetition is allowed (``repeat=True``): then whole shuffled passes are
  concatenated (each document used ``N // len`` or one more times, ``N / len`` effective
  epochs) and a warning says so.
* **Never touching the input.** An attack given a name or a path loads its own copy from
  disk and never saves anything; given a :class:`~interp_unlearn.data.loading.LoadedModel`, it
  deep-copies the model before changing any weight. :func:`checkpoint_digest` hashes a
  checkpoint directory so tests can show it is unchanged.
* **Evaluation** (:func:`evaluate_domains`): :func:`interp_unlearn.evaluation.scoring.evaluate_mcq`
  with the model's own default scoring (cloze for organisms, lm-eval's letter scoring
  otherwise) on the model's own MCQ pool (``lm.mcq_path(domain)``), unless an explicit
  MCQ file / scoring is passed (the floor passes the *target's* files to the twin and the
  original so all three are scored on identical questions).
* **Taught vs restored** (:mod:`.taught`): :func:`run_eval_for` splits the ``forget``
  questions by whether the attack sample held a document of their entity ("taught") or
  not ("restored"), and keeps every question's outcome and entity for the bootstrap.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from interp_unlearn.core.checkpoint import read_meta as _read_meta
from interp_unlearn.evaluation.domains import evaluate_domains, mcq_name, resolve_mcqs
from interp_unlearn.evaluation.scoring import EvalResult
from interp_unlearn.data.loading import LoadedModel, load_model
from interp_unlearn.data.world import FORGET_POOLS, corpus_path, read_texts
from interp_unlearn.attacks.taught import entities_named, question_entities, taught_split

__all__ = [
    "DATA_KINDS",
    "POOLS",
    "AttackResult",
    "ModelSpec",
    "attack_corpus",
    "checkpoint_digest",
    "evaluate_domains",
    "load_attack_target",
    "model_label",
    "resolve_mcqs",
    "sample_texts",
    "taught_split",
]

DATA_KINDS = ("forget", "unrelated")
#: ``attack``: the attack pool only (default); ``same``: forget documents of every pool.
POOLS = ("attack", "same")

ModelSpec = str | os.PathLike | LoadedModel


# ------------------------------------------------------------------------ attack data


def attack_corpus(world_dir: str | Path | None, data: str = "forget", pool: str = "attack",
                  real_set: str | Path | None = None) -> tuple[list[str], str, list[str]]:
    """``(texts, pool_label, corpus_files)`` for an attack's training / prompt data.

    ``data``: ``forget`` | ``unrelated`` | a path to a ``{"text": ...}`` JSONL file.
    ``pool`` (``data="forget"`` only): ``attack`` | ``same``. The returned ``pool_label``
    is what output rows record (``attack``, ``same``, ``general`` or ``file``). An
    unknown ``pool`` is an error whatever ``data`` is."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    if data not in DATA_KINDS:
        p = Path(str(data))
        if p.suffix in (".jsonl", ".json") or p.is_file():
            return read_texts(p), "file", [str(p)]
        raise ValueError(f"data must be one of {DATA_KINDS} or a JSONL corpus path, got {data!r}")
    if world_dir is None and real_set is not None:
        return _real_set_corpus(real_set, data, pool)
    if world_dir is None:
        raise ValueError(f"data={data!r} needs the model's synthetic world (its "
                         "interp_unlearn.json has no world_dir); pass a JSONL corpus path")
    if data == "unrelated":
        path = corpus_path(world_dir, "general")
        return read_texts(path), "general", [path.name]
    names = ["forget-attack"] if pool == "attack" else [f"forget-{p}" for p in FORGET_POOLS]
    texts: list[str] = []
    for name in names:
        texts += read_texts(corpus_path(world_dir, name))
    return texts, pool, [f"{n}.jsonl" for n in names]


def _real_set_corpus(real_set: str | Path, data: str, pool: str
                     ) -> tuple[list[str], str, list[str]]:
    """A packaged real model's shipped corpora (:mod:`interp_unlearn.data.packaged`): the
    forget corpus covers the scored facts (no disjoint attack pool: only ``pool="same"``);
    ``unrelated`` is the retain corpus (geography and history, unrelated to the forget
    domain), recorded with its file name."""
    from interp_unlearn.data.packaged import real_set_path

    if data == "unrelated":
        path = real_set_path(real_set, "retain", "corpora")
        return read_texts(path), "general", [path.name]
    if pool != "same":
        raise ValueError("the shipped real-knowledge set has no disjoint attack pool (its "
                         "forget corpus states the scored facts): use pool='same' (CLI: "
                         "--pool same, the ALMPU paper's protocol) or pass a corpus file")
    path = real_set_path(real_set, "forget", "corpora")
    return read_texts(path), "same", [path.name]


def sample_texts(texts: Sequence[str], n: int, seed: int, *, repeat: bool = False) -> list[str]:
    """``n`` texts drawn with ``random.Random(seed)`` without replacement.

    ``n`` larger than the corpus raises a ``ValueError`` unless ``repeat``: then whole
    shuffled passes over the corpus are concatenated (a warning says so; ``n / len``
    effective epochs)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"the number of samples must be an int >= 0, got {n!r}")
    if n == 0:
        return []
    if not texts:
        raise ValueError("cannot sample from an empty corpus")
    rng = random.Random(seed)
    if n <= len(texts):
        return rng.sample(list(texts), n)
    if not repeat:
        raise ValueError(f"N = {n} samples requested from a corpus of {len(texts)} documents: "
                         f"N must be in 0..{len(texts)} unless repetition is allowed "
                         "(repeat=True: whole shuffled passes, N/len effective epochs)")
    warnings.warn(f"{n} samples requested from a corpus of {len(texts)} documents: documents "
                  f"are repeated (whole shuffled passes, {n / len(texts):.2f} effective epochs)",
                  RuntimeWarning, stacklevel=2)
    out: list[str] = []
    while len(out) < n:
        perm = list(texts)
        rng.shuffle(perm)
        out += perm[: n - len(out)]
    return out


# ----------------------------------------------------------------------------- models


def load_attack_target(model: ModelSpec, *, copy_weights: bool = True) -> LoadedModel:
    """A :class:`LoadedModel` the attack may modify freely.

    A name or path is loaded fresh from disk (the checkpoint is only read). A
    ``LoadedModel`` is deep-copied when ``copy_weights`` (the caller's object is never
    modified); attacks that only add hooks pass ``copy_weights=False``."""
    if isinstance(model, LoadedModel):
        if not copy_weights:
            return model
        return LoadedModel(copy.deepcopy(model.model), model.tokenizer, model.name, model.path,
                           dict(model.meta))
    return load_model(model)


def model_label(model: ModelSpec) -> str:
    """A stable identity for output rows and resume keys: the resolved checkpoint path
    when there is one, else the name."""
    if isinstance(model, LoadedModel):
        return str(model.path) if model.path is not None else model.name
    from interp_unlearn.data.loading import resolve
    try:
        _, path = resolve(model)
    except Exception:  # noqa: BLE001 - unknown names are reported when loading
        path = None
    return str(Path(path).resolve()) if path is not None else str(model)


def checkpoint_digest(path: str | os.PathLike) -> dict[str, str]:
    """SHA-256 of every file under a checkpoint directory (relative path -> hex digest),
    plus its size and mtime so any rewrite shows."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"not a directory: {root}")
    out = {}
    for f in sorted(root.rglob("*")):
        if f.is_file():
            h = hashlib.sha256(f.read_bytes()).hexdigest()
            st = f.stat()
            out[str(f.relative_to(root))] = f"{h}:{st.st_size}:{st.st_mtime_ns}"
    return out


# ------------------------------------------------------------------------- evaluation


# ----------------------------------------------------------------------------- result


@dataclass
class AttackResult:
    """One attacked model's scores.

    ``attack`` is the attack label (``finetune-lora``, ``quantize-4bit`` ...), ``n`` the
    number of attack samples (0: unattacked), ``evals`` one
    :class:`~interp_unlearn.evaluation.scoring.EvalResult` per domain, ``config`` the attack's
    hyper-parameters (JSON-able), ``info`` what happened (steps, losses, timings).
    ``split`` is :func:`taught_split` per domain where it is defined (``forget`` with a
    world), ``entities`` the entity of every scored question per domain (the bootstrap's
    clusters), ``corpus_docs`` the size of the corpus the sample was drawn from."""

    attack: str
    model: str
    data: str
    pool: str
    n: int
    seed: int
    scoring: str
    evals: dict[str, EvalResult]
    mcq: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    attacked_model: Any = None  # the modified model when requested (keep_model=True)
    split: dict[str, dict[str, Any]] = field(default_factory=dict)
    entities: dict[str, list[str]] = field(default_factory=dict)
    corpus_docs: int | None = None

    def accuracy(self, domain: str = "forget") -> float:
        return self.evals[domain].accuracy

    def rows(self, **extra: Any) -> list[dict[str, Any]]:
        """Tidy rows: one per (domain, metric). Metrics: ``accuracy`` (fraction in [0, 1])
        and ``ue`` (the paper's unlearning efficacy, ``100 * (1 - accuracy)``, percent);
        where the taught/restored split is defined also ``accuracy_taught`` /
        ``accuracy_restored`` (each only when its subset is not empty; ``n_questions`` is
        the subset's size) and the counts ``n_taught`` / ``n_restored`` (questions) and
        ``taught_entities``. The ``accuracy`` row carries the per-question outcomes,
        ``correct_bits`` (``"0110..."`` in MCQ order), and where the entities are known
        ``entity_ids`` (``"0,0,0,0,0,1,..."``, entities numbered by first appearance)."""
        out = []
        for domain, ev in self.evals.items():
            base = {"attack": self.attack, "data": self.data, "pool": self.pool, "N": self.n,
                    "seed": self.seed, "model": self.model, "domain": domain,
                    "scoring": self.scoring, "mcq": self.mcq.get(domain, ""),
                    "n_questions": ev.n, "config": json.dumps(self.config, sort_keys=True),
                    "corpus_docs": self.corpus_docs, **extra}
            bits = "".join("1" if c else "0" for c in ev.per_question["correct"].tolist())
            acc = {**base, "metric": "accuracy", "value": float(ev.accuracy), "correct_bits": bits}
            ents = self.entities.get(domain)
            if ents is not None and len(ents) == ev.n:
                ids: dict[str, int] = {}
                acc["entity_ids"] = ",".join(str(ids.setdefault(e, len(ids))) for e in ents)
            out.append(acc)
            out.append({**base, "metric": "ue", "value": 100.0 * (1.0 - float(ev.accuracy))})
            sp = self.split.get(domain)
            if sp is not None:
                for part in ("taught", "restored"):
                    if sp[f"n_{part}"]:
                        out.append({**base, "n_questions": sp[f"n_{part}"],
                                    "metric": f"accuracy_{part}",
                                    "value": float(sp[f"accuracy_{part}"])})
                for metric in ("n_taught", "n_restored", "taught_entities"):
                    out.append({**base, "metric": metric, "value": float(sp[metric])})
        return out


def _sample_for(lm: LoadedModel, data: str, pool: str, n: int, seed: int
                ) -> tuple[list[str] | None, int | None]:
    """Re-draw the sample an attack drew with :func:`attack_corpus` + :func:`sample_texts`
    (deterministic in ``seed``): ``(sample, corpus size)``, ``(None, None)`` when it
    cannot be re-drawn (no world, texts given directly, no data)."""
    if pool not in POOLS and pool not in ("general", "file"):
        return None, None
    kind = "unrelated" if pool == "general" else data
    try:
        corpus, _, _ = attack_corpus(lm.world_dir, kind, pool if pool in POOLS else "attack",
                                     real_set=lm.meta.get("real_set"))
    except (ValueError, FileNotFoundError):
        return None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return sample_texts(corpus, n, seed, repeat=True), len(corpus)


def run_eval_for(lm: LoadedModel, model: Any, *, attack: str, data: str, pool: str, n: int,
                 seed: int, mcq: Any, scoring: str | None, domains: Sequence[str],
                 batch_size: int, config: dict[str, Any], info: dict[str, Any],
                 evaluate: Any = None, keep_model: bool = False,
                 sample: Sequence[str] | None = None, corpus_docs: int | None = None
                 ) -> AttackResult:
    """Evaluate ``model`` (the attacked copy of ``lm``) and wrap the result.

    ``sample``: the attack's documents, for the taught/restored split (None: re-drawn
    from ``data``/``pool``/``n``/``seed`` as every attack here draws them)."""
    mcqs = resolve_mcqs(lm, mcq, domains)
    scoring = scoring or lm.default_scoring
    was_training = model.training if isinstance(model, torch.nn.Module) else False
    if isinstance(model, torch.nn.Module):
        model.eval()
    evals = evaluate_domains(model, lm.tokenizer, mcqs, scoring, batch_size, evaluate)
    if was_training:
        model.train()
    split: dict[str, dict[str, Any]] = {}
    entities: dict[str, list[str]] = {}
    if lm.world_dir is not None and "forget" in evals:
        ev = evals["forget"]
        ents = question_entities(ev.per_question["question"].tolist(), lm.world_dir)
        if ents is not None and all(e is not None for e in ents):
            entities["forget"] = ents  # type: ignore[assignment]
            if sample is None and n > 0:
                sample, docs = _sample_for(lm, data, pool, n, seed)
                corpus_docs = corpus_docs if corpus_docs is not None else docs
            if sample is not None or n == 0:
                taught = entities_named(sample or [], lm.world_dir) or set()
                sp = taught_split(ev, taught, ents)
                if sp is not None:
                    split["forget"] = sp
    return AttackResult(attack=attack, model=model_label(lm), data=data, pool=pool, n=n,
                        seed=seed, scoring=scoring, evals=evals,
                        mcq={d: mcq_name(v) for d, v in mcqs.items()}, config=config, info=info,
                        attacked_model=model if keep_model else None, split=split,
                        entities=entities, corpus_docs=corpus_docs)


# ------------------------------------------------------------------ related checkpoints


def related_models(model: ModelSpec) -> tuple[str | None, str | None]:
    """``(original, twin)`` of a checkpoint, where they can be derived (else None).

    * built-in ``organism[-micro]`` -> itself and ``organism[-micro]-twin``; a built-in twin
      -> the organism and itself;
    * an unlearned checkpoint (its ``interp_unlearn.json`` has ``unlearn.source_model``)
      -> that source model, and the source's twin;
    * an organism checkpoint directory (``kind: organism``) -> itself and the sibling
      ``twin`` directory (``kind: organism-twin`` -> the sibling ``model``)."""
    from interp_unlearn.data.loading import BUILTIN

    name = model.name if isinstance(model, LoadedModel) else str(model)
    if name in BUILTIN:
        base = name[: -len("-twin")] if BUILTIN[name][1] == "twin" else name
        return base, f"{base}-twin"
    if isinstance(model, LoadedModel):
        path, meta = model.path, model.meta
    else:
        path = Path(name).expanduser()
        meta = _read_meta(path) if path.is_dir() else {}
    source = (meta.get("unlearn") or {}).get("source_model")
    if source:
        src_orig, src_twin = related_models(source)
        return src_orig or source, src_twin
    if path is None:
        return None, None
    path = Path(path).resolve()
    kind = meta.get("kind")
    if kind == "organism":
        twin = path.parent / "twin"
        return str(path), str(twin) if twin.is_dir() else None
    if kind == "organism-twin":
        orig = path.parent / "model"
        return (str(orig) if orig.is_dir() else None), str(path)
    return None, None


# residual-stream access lives in core.arch; re-exported for the attacks that import it here
from interp_unlearn.core.arch import (decoder_layers, decoder_of, final_norm,  # noqa: E402,F401
                                      layer_output, replace_layer_output)
