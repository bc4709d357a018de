"""The relearning floor: attack the target, the never-learned twin and the original alike.

An attack that raises an unlearned model's forget accuracy may be *teaching* rather than
*restoring*. Deeb & Roger's control separates the two: run the identical attack (same
samples, same seed, same hyper-parameters) on

* ``target``   -- the model under test (an unlearned checkpoint),
* ``twin``     -- the never-learned control: trained on the same world without the forget
  facts, so whatever it reaches under attack is what the attack itself teaches,
* ``original`` -- the model before unlearning: what full knowledge looks like under
  the same attack,

and score all three on the *target's* MCQ file with the target's scoring.

Rows (tidy, one per measurement): ``method, role, attack, data, pool, N, seed, domain,
metric, value`` plus ``model, scoring, mcq, n_questions, config, cell``. Metrics:

``accuracy``  fraction of questions answered correctly, in [0, 1];
``ue``        the ALMPU paper's unlearning efficacy, ``100 * (1 - accuracy)`` (percent);
``recovery``  target rows of the ``forget`` domain only (the twin differs from the
              original only there): ``(acc - twin_acc) / (orig_acc - twin_acc)`` with the twin
              and the original attacked identically in the same cell (same attack, config,
              data, pool, N, seed, domain): 0 = no better than never having learned the
              facts, 1 = as good as the original under the same attack. NaN when the
              original and the twin tie.
``accuracy_taught`` / ``accuracy_restored``, ``recovery_taught`` / ``recovery_restored``
              the same on the questions whose entity had a document in the attack sample
              ("taught") and on the others ("restored"; :mod:`.taught`). The three models
              see the same sample and questions, so the subsets are identical across roles.
              Counts: ``n_taught``, ``n_restored`` (questions), ``taught_entities``.

``N = 0`` is the unattacked model: its evaluation is deterministic, so it is computed once
per model and recorded under every seed. Attacks that use no data (``quantize``) are run
once, at ``N = 0`` and the first seed, per variant (``bits``).

Results are appended to ``out/results.jsonl`` as each cell (model x attack variant x N x
seed) finishes (flushed and fsynced), so an interrupted run keeps what it finished; a
rerun with the same ``out`` skips finished cells (the cell key covers the model, the
attack and its keyword arguments, the data, pool, N, seed, the domains, the scoring and
the MCQ files, and for the ``lora`` preset the lr its model family resolves to).
``out/results.csv`` (with recovery) and ``out/summary.csv`` (mean and 95 % t-interval over
seeds, :func:`summarize`; the interval is :func:`interp_unlearn.core.stats.t_interval`) are
rewritten at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from interp_unlearn.data.loading import LoadedModel, load_model, resolve
from interp_unlearn.core.checkpoint import read_meta
from interp_unlearn.core.stats import ROLES, summarize, t_interval
from interp_unlearn.attacks.common import ModelSpec, model_label, related_models, resolve_mcqs
from interp_unlearn.attacks.finetune import attack_lr, finetune_attack
from interp_unlearn.attacks.head_restore import head_restore_attack
from interp_unlearn.attacks.in_context import in_context_attack
from interp_unlearn.attacks.orthogonalize import orthogonalize_attack
from interp_unlearn.attacks.quantize import quantize_attack
from interp_unlearn.core.records import _append, parse_list, parse_seeds, read_results

__all__ = ["ATTACKS", "RESULTS_FILE", "ROLES", "SAMPLE_FREE", "add_recovery", "parse_list",
           "parse_seeds", "read_results", "run_attack", "run_floor", "summarize", "t_interval"]

ATTACKS: dict[str, Callable[..., Any]] = {
    "finetune": finetune_attack,
    "quantize": quantize_attack,
    "orthogonalize": orthogonalize_attack,
    "head-restore": head_restore_attack,
    "in-context": in_context_attack,
}
SAMPLE_FREE = {"quantize"}
RESULTS_FILE = "results.jsonl"
_GROUP = ["attack", "config", "data", "pool", "N", "seed", "domain"]


# ------------------------------------------------------------------------------ stats


RECOVERED = {"accuracy": "recovery", "accuracy_taught": "recovery_taught",
             "accuracy_restored": "recovery_restored"}


def add_recovery(df: pd.DataFrame, unavailable: str | None = None) -> pd.DataFrame:
    """Append ``recovery`` (and ``recovery_taught`` / ``recovery_restored``) rows for the
    target (see the module docstring).

    ``unavailable``: why the twin or the original is missing (e.g. a real model has no
    never-learned twin): each target forget row then gets a recovery row with value NaN
    and ``info`` ``{"unavailable": reason}`` -- reported as unavailable, not dropped."""
    df = df[~df["metric"].isin(list(RECOVERED.values()))]
    new = []
    for acc_metric, rec_metric in RECOVERED.items():
        acc = df[(df["metric"] == acc_metric) & (df["domain"] == "forget")]
        if unavailable is not None:
            for _, row in acc[acc["role"] == "target"].iterrows():
                out = {**row.to_dict(), "metric": rec_metric, "value": float("nan"),
                       "info": json.dumps({"unavailable": unavailable})}
                for col in ("correct_bits", "entity_ids"):
                    out.pop(col, None)
                new.append(out)
            continue
        if acc.empty or not {"target", "twin", "original"} <= set(acc["role"]):
            continue
        ref = {role: acc[acc["role"] == role].set_index(_GROUP)["value"]
               for role in ("twin", "original")}
        ref = {r: s[~s.index.duplicated()] for r, s in ref.items()}
        for _, row in acc[acc["role"] == "target"].iterrows():
            k = tuple(row[c] for c in _GROUP)
            if k not in ref["twin"].index or k not in ref["original"].index:
                continue
            tw, orig = float(ref["twin"][k]), float(ref["original"][k])
            denom = orig - tw
            value = (float(row["value"]) - tw) / denom if abs(denom) > 1e-12 else float("nan")
            out = {**row.to_dict(), "metric": rec_metric, "value": value}
            for col in ("correct_bits", "entity_ids"):
                out.pop(col, None)
            new.append(out)
    return (pd.concat([df, pd.DataFrame(new)], ignore_index=True) if new
            else df.reset_index(drop=True))


# ---------------------------------------------------------------------------- helpers


class _Describe:
    """What the floor needs to know about a checkpoint without loading its weights."""

    def __init__(self, spec: ModelSpec):
        if isinstance(spec, LoadedModel):
            self.lm = spec
            return
        _, path = resolve(spec)
        meta = read_meta(path)
        self.lm = LoadedModel(None, None, str(spec), Path(path).resolve() if path else None, meta)  # type: ignore[arg-type]


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str, sort_keys=True))


def _cell_key(**parts: Any) -> str:
    s = json.dumps(_jsonable(parts), sort_keys=True)
    return hashlib.sha1(s.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------- floor


def run_floor(target: ModelSpec, attack: str = "finetune", *, data: str = "forget",
              pool: str = "attack", samples: Any = (0, 5, 10), seeds: Any = 3,
              original: ModelSpec | None = None, twin: ModelSpec | None = None,
              roles: Sequence[str] = ROLES, method: str | None = None,
              out: str | os.PathLike | None = None, domains: Sequence[str] = ("forget",),
              mcq: Any = None, scoring: str | None = None, batch_size: int = 32,
              variants: Sequence[dict[str, Any]] | None = None, progress: bool = True,
              **attack_kw: Any) -> pd.DataFrame:
    """Run ``attack`` on the target, its twin and its original (see the module docstring).

    Args:
        target: the checkpoint under test (name, directory or ``LoadedModel``).
        attack: one of :data:`ATTACKS` (``finetune``, ``quantize``, ``orthogonalize``,
            ``head-restore``, ``in-context``).
        data, pool: attack data (``forget``/``unrelated``/JSONL path; ``attack``/``same``).
        samples: the ``N`` values (``0`` = unattacked). seeds: a count or a list.
        original, twin: default: derived (:func:`~interp_unlearn.attacks.common.related_models`);
            a role that cannot be derived is skipped with a warning.
        roles: which of ``target``, ``twin``, ``original`` to run.
        method: label for the target rows (default: the checkpoint's recorded unlearning
            method, else ``target``).
        out: directory for ``results.jsonl`` / ``results.csv`` / ``summary.csv`` (resumable).
        domains, mcq, scoring, batch_size: what to score (default: the target's own forget
            pool and scoring; the twin and the original are scored on the same questions).
        variants: keyword sets, each run as its own attack variant (default for
            ``quantize``: ``bits`` None / 8 / 4 from ``attack_kw["bits"]`` if a list).
        attack_kw: passed to the attack function (e.g. ``config="full"``, ``heads=...``).
    """
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; valid: {sorted(ATTACKS)}")
    bad = set(roles) - set(ROLES)
    if bad:
        raise ValueError(f"unknown roles {sorted(bad)}; valid: {ROLES}")
    fn = ATTACKS[attack]
    samples_l = sorted({int(n) for n in parse_list(samples)})
    if not samples_l or min(samples_l) < 0:
        raise ValueError(f"samples must be non-negative ints, got {samples!r}")
    seeds_l = parse_seeds(seeds)
    if attack in SAMPLE_FREE:
        samples_l, seeds_l = [0], seeds_l[:1]
    if variants is None:
        if attack == "quantize":
            bits = attack_kw.pop("bits", (None, 8, 4))
            variants = [{"bits": b} for b in (bits if isinstance(bits, (list, tuple)) else [bits])]
        else:
            variants = [{}]

    desc = _Describe(target)
    tlm = desc.lm
    derived_orig, derived_twin = related_models(target)
    specs: dict[str, ModelSpec] = {"target": target}
    missing = []
    for role, given, derived in (("twin", twin, derived_twin), ("original", original, derived_orig)):
        if role not in roles:
            continue
        spec = given if given is not None else derived
        if spec is None:
            missing.append(role)
            warnings.warn(f"cannot derive the {role} of {tlm.name}; pass {role}= (running "
                          "without it: recovery is reported as unavailable, NaN)",
                          RuntimeWarning, stacklevel=2)
            continue
        specs[role] = spec
    unavailable = None
    if missing and "target" in roles:
        what = {"twin": "no never-learned twin", "original": "no original model"}
        unavailable = " and ".join(what[r] for r in missing) + f" for {tlm.name}"
    if "target" not in roles:
        specs.pop("target")
    labels = {role: model_label(spec) for role, spec in specs.items()}

    mcqs = resolve_mcqs(tlm, mcq, domains)
    scoring = scoring or tlm.default_scoring
    common_kw = dict(attack_kw)
    if attack == "orthogonalize" and "original" not in common_kw:
        orig_spec = specs.get("original", original if original is not None else derived_orig)
        if orig_spec is not None:
            common_kw["original"] = orig_spec
    if attack == "head-restore" and common_kw.get("heads") is None:
        heads = (tlm.meta.get("unlearn") or {}).get("heads")
        if heads:
            common_kw["heads"] = heads
    method_label = method or (tlm.meta.get("unlearn") or {}).get("method") or "target"
    role_method = {"target": method_label, "twin": "never-learned", "original": "original"}

    results_path = Path(out) / RESULTS_FILE if out is not None else None
    previous = read_results(results_path) if results_path is not None else []
    done: dict[str, list[dict]] = {}
    for r in previous:
        done.setdefault(r.get("cell", ""), []).append(r)
    needed = {(d, m) for d in mcqs for m in ("accuracy", "ue")}
    done = {k: v for k, v in done.items() if {(r["domain"], r["metric"]) for r in v} >= needed}

    kw_for_key = {k: v for k, v in common_kw.items() if k not in ("progress",)}
    if attack == "finetune" and common_kw.get("lr") is None:
        from interp_unlearn.attacks.finetune import FinetuneAttackConfig
        cfg = common_kw.get("config")
        preset_lr = (FinetuneAttackConfig.preset(cfg or "lora").lr  # None: the lora preset
                     if isinstance(cfg, str) or cfg is None else cfg.lr)
        if preset_lr is None:  # the family's ATTACK_LR: a changed default is a new cell
            kw_for_key["_lr_resolved"] = attack_lr(tlm)[0]
    mcq_names = {d: (str(v) if isinstance(v, Path) else f"<{len(v)} questions>")
                 for d, v in mcqs.items()}

    data_, pool_ = (("none", "none") if attack in SAMPLE_FREE else (data, pool))

    def key(label: str, variant: dict, n: int, seed: int) -> str:
        return _cell_key(model=label, attack=attack, variant=variant, kw=kw_for_key, data=str(data_),
                         pool=pool_, N=n, seed=seed, domains=sorted(mcqs), scoring=scoring,
                         mcq=mcq_names)

    # distinct models, in role order (a role aliasing another -- e.g. the target is the
    # original itself -- is run once)
    unique_labels: dict[str, str] = {}
    for role in ROLES:
        if role in labels and labels[role] not in unique_labels:
            unique_labels[labels[role]] = role
    plan = []
    for label, role in unique_labels.items():
        for variant in variants:
            for n in samples_l:
                for seed in seeds_l:
                    plan.append((label, role, variant, n, seed))
    todo = [p for p in plan if key(p[0], p[2], p[3], p[4]) not in done]

    from tqdm.auto import tqdm
    new_rows: dict[str, list[dict]] = {}
    loaded: tuple[str, LoadedModel] | None = None
    zero_cache: dict[tuple[str, str], list[dict]] = {}
    bar = tqdm(todo, desc=f"attack {attack}", disable=not progress)
    for label, role, variant, n, seed in bar:
        bar.set_postfix(model=role, N=n, seed=seed)
        k = key(label, variant, n, seed)
        vkey = json.dumps(_jsonable(variant), sort_keys=True)
        if n == 0 and (label, vkey) in zero_cache and attack not in SAMPLE_FREE:
            rows = [{**r, "seed": seed, "cell": k} for r in zero_cache[(label, vkey)]]
        else:
            if loaded is None or loaded[0] != label:
                loaded = None
                loaded = (label, load_model(specs[role]) if not isinstance(specs[role], LoadedModel)
                          else specs[role])
            res = fn(loaded[1], n, seed, data=data_, pool=pool_, mcq=mcqs, scoring=scoring,
                     domains=tuple(mcqs), batch_size=batch_size, **variant, **common_kw)
            rows = res.rows(role=role, method=role_method[role], cell=k,
                            info=json.dumps(_jsonable(res.info)))
            for r in rows:
                r["model"] = label
            if n == 0:
                zero_cache[(label, vkey)] = rows
        if results_path is not None:
            _append(results_path, rows)
        new_rows[k] = rows
    bar.close()

    # assemble this run's table; roles are assigned by model label (aliases get copies)
    all_rows = {**done, **new_rows}
    table = []
    for label, role0, variant, n, seed in plan:
        rows = all_rows.get(key(label, variant, n, seed), [])
        for role, lab in labels.items():
            if lab == label:
                table += [{**r, "role": role, "method": role_method[role]} for r in rows]
    df = pd.DataFrame(table)
    if df.empty:
        return df
    df = add_recovery(df, unavailable)
    front = ["method", "role", "attack", "data", "pool", "N", "seed", "domain", "metric", "value"]
    df = df[front + [c for c in df.columns if c not in front]]
    df.attrs["unavailable"] = unavailable
    if out is not None:
        d = Path(out)
        for name, table in (("results.csv", df), ("summary.csv", summarize(df))):
            tmp = d / f".{name}.{os.getpid()}.tmp"  # whole files even with concurrent writers
            table.to_csv(tmp, index=False)
            tmp.replace(d / name)
    return df


def run_attack(model: ModelSpec, kind: str, data: str = "forget", samples: Any = (0, 5, 10),
               seeds: Any = 3, out: str | os.PathLike | None = None, *, floor: bool = True,
               threads: int | None = None, **kw: Any) -> pd.DataFrame:
    """The ``interp-unlearn attack`` command.

    ``kind``: ``finetune | quantize | orthogonalize | head-restore | in-context``;
    ``data``: ``forget | unrelated`` (or a JSONL corpus); ``samples``: ``"0,5,10"`` or a
    list; ``seeds``: a count (``3`` = seeds 0, 1, 2) or a list; ``out``: result directory
    (resumable). With ``floor`` (default) the twin and the original are attacked alike
    (derived from the checkpoint when not given as ``twin=`` / ``original=``) and
    ``recovery`` rows are added; ``floor=False`` runs the target only. Other keywords go
    to :func:`run_floor` and on to the attack (``pool="same"``, ``config="full"``,
    ``bits=4``, ``heads=...``, ``mode=...``, ``domains=("forget", "retain")``)."""
    if threads:
        torch.set_num_threads(int(threads))
    if kind == "head_restore":
        kind = "head-restore"
    if kind == "in_context":
        kind = "in-context"
    roles = ROLES if floor else ("target",)
    return run_floor(model, kind, data=data, samples=samples, seeds=seeds, out=out, roles=roles,
                     **kw)
