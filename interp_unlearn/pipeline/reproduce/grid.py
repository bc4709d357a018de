"""Run the reproduce grid: every cell of :func:`~.plan.build_plan`, resumably.

``run_reproduce(config, out)`` writes into ``out``:

``reproduce_config.json``  the resolved :class:`~.config.ReproduceConfig` (+ its hash);
``manifest.json``          versions, git commit, seeds, start/end of every invocation;
``plan.json``              the cells of this configuration (key, label, kind ...);
``results.jsonl``          the append-only store (:mod:`.store`); ``results.csv`` its tidy dump;
``localize/``              phase-1 output per seed (``seed{s}/scores.csv``,
                           ``selected_heads.json`` ...: seed ``s``'s ALMPU models use
                           ``seed{s}``'s heads) and ``stability.json`` across the seeds;
``checkpoints/``           one HF checkpoint per unlearned model and seed
                           (``{method}-{fingerprint}-seed{s}``: models with identical
                           method, heads, seed and overrides share one);
``floor/``                 :func:`~interp_unlearn.attacks.run_floor`'s own resumable cache
                           (the twin and the original are attacked once per ``N`` and seed
                           and reused by every method);
``tables/``, ``figures/``  written at the end (:mod:`.tables`, :mod:`.figures`).

Cells run in ``workers`` processes (:mod:`.parallel`; ``workers=0``: one per CPU core, one
on an accelerator), each cell once its inputs exist; this process alone writes the store.
Finished cells (found in the store) are skipped. An unlearned checkpoint is trained in
``checkpoints/.tmp-*`` and renamed into place only when complete, so a complete directory
is always reused and a partial one never is. A lock file keeps two runs off one ``out``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from interp_unlearn.data.loading import LoadedModel, load_model, resolve
from interp_unlearn.core.checkpoint import META_FILE, read_meta
from interp_unlearn.pipeline.reproduce.config import CONFIG_FILE, ReproduceConfig
from interp_unlearn.pipeline.reproduce.manifest import (now_utc, update_manifest,
                                                        update_session, versions)
from interp_unlearn.pipeline.reproduce.executors import (check_executor, execute,
                                                         plan_workers, prepare)
from interp_unlearn.pipeline.reproduce.plan import (REFERENCE_METHOD, Cell, build_plan,
                                                    model_method)
from interp_unlearn.pipeline.reproduce.shard import import_shards, parse_shard, shard_dir
from interp_unlearn.pipeline.reproduce.shard import shard_plan
from interp_unlearn.pipeline.reproduce.store import (CHECKPOINT_DIR, FLOOR_DIR, LOCALIZE_DIR,
                                                     PLAN_FILE, ResultsStore, load_results,
                                                     run_lock, short_hash)

__all__ = ["GridRunner", "run_reproduce"]


class GridRunner:
    """Runs (or resumes) the grid of ``config`` in ``out``; see the module docstring."""

    def __init__(self, config: ReproduceConfig, out: str | Path):
        if not isinstance(config, ReproduceConfig):
            raise TypeError(f"config must be a ReproduceConfig, got {type(config).__name__}")
        self.cfg = config
        self.out = Path(out)
        self.plan = build_plan(config)
        self.shard: str | None = None  # "i/n" when this runner runs one shard
        self._loc: dict[int, Any] = {}
        self._rmu_layer: int | None = None

    # ------------------------------------------------------------------ files
    def write_setup(self) -> None:
        """Write the resolved config and the plan (also what ``--dry-run`` does); callers
        hold the run lock (:func:`~.store.run_lock`), so a running grid's files stay."""
        self.out.mkdir(parents=True, exist_ok=True)
        old = self.out / CONFIG_FILE
        if old.is_file():
            prev = json.loads(old.read_text()).get("config_hash")
            if prev and prev != self.cfg.config_hash():
                warnings.warn(f"{self.out}: the configuration changed (hash {prev} -> "
                              f"{self.cfg.config_hash()}); finished cells whose inputs did not "
                              "change are reused", RuntimeWarning, stacklevel=3)
        self.cfg.save_json(old)
        tmp = self.out / (PLAN_FILE + ".tmp")
        tmp.write_text(json.dumps({"config_hash": self.cfg.config_hash(), "shard": self.shard,
                                   "cells": [c.to_dict() for c in self.plan]}, indent=1))
        tmp.replace(self.out / PLAN_FILE)

    # ----------------------------------------------------------------- the run
    def run(self) -> dict[str, Any]:
        """Run every unfinished cell, then write tables and figures; return a summary."""
        from tqdm.auto import tqdm

        with run_lock(self.out):  # before writing anything: a refused run changes nothing
            self.write_setup()
            return self._run_locked(tqdm)

    def _run_locked(self, tqdm: Any) -> dict[str, Any]:
        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        ver = versions()
        store = ResultsStore(self.out, {"config_hash": cfg.config_hash(),
                                        "package_version": ver["package_version"],
                                        "torch_version": ver["torch_version"]})
        prepare(self)  # cancel a killed run's jobs; remove what its killed cells left
        merged = 0 if self.shard else import_shards(self.out, store, self.plan)
        done = store.finished()
        todo = [c for c in self.plan if c.key not in done]
        workers = plan_workers(cfg, len(todo))
        start = now_utc()
        t0 = time.time()
        session = {"start": start, "end": None, "cells_planned": len(self.plan),
                   "cells_skipped": len(self.plan) - len(todo), "cells_run": 0,
                   "workers": workers, "pid": os.getpid(), "executor": cfg.executor,
                   "shard": self.shard, "cells_merged_from_shards": merged,
                   "threads": int(cfg.threads or 1) if workers > 1 else torch.get_num_threads()}
        idx = update_manifest(self.out, config=cfg, session=session)

        def write(cell: Any, rows: list[dict[str, Any]], seconds: float, cpu: float) -> None:
            store.write_cell(cell.key, rows, seconds=round(seconds, 3),
                             cpu_seconds=round(cpu, 3), **cell.columns())
            session["cells_run"] += 1
            update_session(self.out, session, idx)  # a killed run's entry stays true

        bar = tqdm(total=len(todo), desc="reproduce", disable=not cfg.progress, unit="cell")
        try:
            execute(self, todo, set(done), workers, session["threads"], write, bar)
        finally:
            bar.close()
        self.write_localize_stability()
        df = load_results(self.out)
        df.to_csv(self.out / "results.csv", index=False)
        outputs: dict[str, Any] = {}  # a shard's: none (its merge writes them, shard.py)
        from interp_unlearn.pipeline.reproduce.tables import write_tables
        if not self.shard:
            outputs["tables"] = [str(p) for p in write_tables(self.out)]
        if cfg.figures and not self.shard:
            from interp_unlearn.pipeline.reproduce.figures import draw_figures
            outputs["figures"] = draw_figures(self.out, formats=cfg.formats)
        session.update(end=now_utc(), seconds=round(time.time() - t0, 1))
        update_manifest(self.out, config=cfg, session=session, session_index=idx)
        return {"out": str(self.out), "cells": len(self.plan), "ran": session["cells_run"],
                "skipped": session["cells_skipped"], "seconds": session["seconds"], **outputs}

    def run_cell(self, cell: Cell) -> list[dict[str, Any]]:
        """Compute one cell's rows (not written; :meth:`run` writes them)."""
        from interp_unlearn.pipeline.reproduce.depth_cells import depth_rows
        fn = {"localize": self._localize, "unlearn": self._unlearn, "lens": self._lens,
              "depth": lambda c: depth_rows(self, c), "reference": self._reference,
              "attack": self._attack}[cell.kind]
        return fn(cell)

    # ------------------------------------------------------------ helpers
    def localize_dir(self, seed: int) -> Path:
        """Where seed ``seed``'s localization lives."""
        return self.out / LOCALIZE_DIR / f"seed{int(seed)}"

    def localization(self, seed: int) -> Any:
        """Seed ``seed``'s phase-1 result (written by its localize cell)."""
        from interp_unlearn.localize import LocalizationResult
        seed = int(seed)
        if seed not in self._loc:
            d = self.localize_dir(seed)
            if not (d / "scores.csv").is_file():
                raise FileNotFoundError(f"{d} has no scores.csv: the localize cell of seed "
                                        f"{seed} has not run")
            self._loc[seed] = LocalizationResult.load(d)
        return self._loc[seed]

    def write_localize_stability(self) -> Path | None:
        """``localize/stability.json`` over every seed localized so far (scale vs dither
        per seed; Spearman and top-K Jaccard across seeds); ``None`` if none ran."""
        from interp_unlearn.localize import STABILITY_FILE, stability_report, write_stability
        seeds = sorted({int(c.seed) for c in self.plan if c.kind == "localize"})
        runs = {s: self.localization(s) for s in seeds
                if (self.localize_dir(s) / "scores.csv").is_file()}
        if not runs:
            return None
        report = stability_report(runs, len(next(iter(runs.values())).selected))
        return write_stability(self.out / LOCALIZE_DIR / STABILITY_FILE, report)

    def meta_lm(self) -> LoadedModel:
        """The base model's name, path and metadata, without its weights."""
        _, path = resolve(self.cfg.model)
        meta = read_meta(path)
        return LoadedModel(None, None, self.cfg.model,  # type: ignore[arg-type]
                           Path(path).resolve() if path else None, meta)

    def rmu_layer(self) -> int:
        """ALMPU's RMU layer ℓ under this run's preset and overrides (read from the
        model's metadata and config; its weights are not loaded)."""
        from interp_unlearn.unlearn.config import UnlearnConfig, resolve_config
        if self._rmu_layer is None:
            over = self.cfg.unlearn_overrides("almpu")
            resolved, _ = resolve_config(UnlearnConfig.from_dict({**over, "method": "almpu"}),
                                         self.meta_lm())
            self._rmu_layer = int(resolved.params["layer"])
        return self._rmu_layer

    def heads(self, model_id: str, seed: int) -> list[tuple[int, int]] | None:
        """The heads an unlearned model perturbs (``None``: the method's default)."""
        from interp_unlearn.core.selection import select_heads
        if model_method(model_id) != "almpu":
            return None
        loc = self.localization(seed)
        if model_id == "almpu":
            return [tuple(h) for h in loc.selected]
        variant = model_id[len("almpu["):-1]
        scores = loc.scores
        if variant.startswith("layer-"):
            layer = self.rmu_layer()
            n_layer = int((scores["layer"] == layer).sum())
            if n_layer == 0:
                raise ValueError(f"the RMU layer {layer} is outside the model's "
                                 f"{int(scores['layer'].max()) + 1} layers")
            kind = variant[len("layer-"):]
            if kind == "top-k":
                return select_heads(scores, "top-k", k=min(len(loc.selected), n_layer),
                                    layers=[layer])
            if kind == "all":
                return select_heads(scores, "all", layers=[layer])
            pct = int(kind[len("random-"):-1])
            return select_heads(scores, "random", fraction=pct / 100, layers=[layer], seed=seed)
        return select_heads(scores, variant)

    def checkpoint(self, model_id: str, seed: int) -> Path:
        """Where the unlearned model lives (a fingerprint of method, heads, seed, overrides)."""
        method = model_method(model_id)
        heads = self.heads(model_id, seed)
        fp = short_hash({"model": self.cfg.model, "method": method, "heads": heads, "seed": seed,
                    "overrides": self.cfg.unlearn_overrides(method)})
        return self.out / CHECKPOINT_DIR / f"{method}-{fp}-seed{seed}"

    # ------------------------------------------------------------ cell kinds
    def _localize(self, cell: Cell) -> list[dict[str, Any]]:
        from interp_unlearn.localize import localize
        from interp_unlearn.localize.config import localize_config
        from interp_unlearn.data.corpora import load_corpus
        from interp_unlearn.data.packaged import own_forget_corpus
        cfg, seed = self.cfg, int(cell.seed)
        lm = load_model(cfg.model, device=cfg.device)
        # a real checkpoint: the given forget corpus; else the model's own (world, shipped)
        corpus = (load_corpus(cfg.forget_corpus) if cfg.forget_corpus is not None
                  else own_forget_corpus(lm))
        if corpus is None:
            raise ValueError(f"{cfg.model} carries no synthetic world: localization needs its "
                             "forget documents; pass --set forget_corpus=FILE.jsonl (and "
                             "retain_corpus=..., mcq={\"forget\": ..., \"retain\": ...})")
        # the family's defaults (the organism's K = 4), the run's overrides, this seed
        over = {**cfg.localize, "seed": seed, "seeds": None}
        if cfg.top_k is not None:
            over["top_k"] = cfg.top_k
        lcfg = localize_config(lm, **over)
        res = localize(lm.model, lm.tokenizer, corpus, lcfg,
                       progress=cfg.progress, model_name=cfg.model)
        res.save(self.localize_dir(seed))
        self._loc.pop(seed, None)
        sel = set(res.selected)
        rows = []
        for r in res.scores.itertuples():
            base = {"layer": int(r.layer), "head": int(r.head)}
            rows.append({**base, "metric": "score", "value": float(r.score)})
            rows.append({**base, "metric": "rank", "value": int(r.rank)})
            rows.append({**base, "metric": "selected",
                         "value": int((int(r.layer), int(r.head)) in sel)})
        rows.append({"metric": "seconds", "value": float(res.meta.get("seconds", 0.0))})
        return rows

    def _unlearn(self, cell: Cell) -> list[dict[str, Any]]:
        from interp_unlearn.unlearn import unlearn
        from interp_unlearn.unlearn.config import RESULT_FILE, UnlearnConfig
        cfg, seed, method = self.cfg, int(cell.seed), model_method(cell.model)
        heads = self.heads(cell.model, seed)
        final = self.checkpoint(cell.model, seed)
        if not (final / RESULT_FILE).is_file():
            tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            ucfg = UnlearnConfig.from_dict({**cfg.unlearn_overrides(method), "method": method,
                                            "seed": seed, "progress": False})
            lm = load_model(cfg.model, device=cfg.device)
            unlearn(lm, config=ucfg, heads=heads, out_dir=tmp)
            res = json.loads((tmp / RESULT_FILE).read_text())
            res.update(out_dir=str(final), checkpoint=str(final),
                       config_path=str(final / Path(res["config_path"]).name),
                       metrics_path=str(final / Path(res["metrics_path"]).name))
            (tmp / RESULT_FILE).write_text(json.dumps(res, indent=1))
            try:
                tmp.rename(final)
            except OSError:
                if not (final / RESULT_FILE).is_file():
                    raise
                shutil.rmtree(tmp)  # a complete twin of this model appeared meanwhile
        res = json.loads((final / RESULT_FILE).read_text())
        common = {"method": method, "checkpoint": str(final.relative_to(self.out)),
                  "heads": json.dumps(heads), "n_heads": len(heads) if heads else 0}
        rows = []
        for stage in ("before", "after"):
            for domain, acc in (res.get(stage) or {}).items():
                if acc is not None:
                    rows.append({**common, "stage": stage, "domain": domain,
                                 "metric": "accuracy", "value": float(acc)})
        rows.append({**common, "metric": "seconds", "value": float(res["seconds"])})
        rows.append({**common, "metric": "steps", "value": int(res["steps"])})
        return rows

    def _floor(self, target: str, cell: Cell, **kw: Any) -> Any:
        from interp_unlearn.attacks.floor import run_floor
        c = self.cfg
        data = c.attack_data(cell.data)
        return run_floor(target, c.attack, data=data, pool=c.pool, samples=[int(cell.N)],
                         seeds=[int(cell.seed)], out=self.out / FLOOR_DIR,
                         domains=tuple(c.attack_domains), mcq=c.mcq, scoring=c.scoring,
                         batch_size=c.eval_batch_size, progress=False, **kw,
                         **c.attack_kwargs())

    def _attack_rows(self, df: Any, cell: Cell) -> list[dict[str, Any]]:
        if df.empty:
            return []
        df = df.rename(columns={"data": "data_spec"})
        rows = []
        for r in df.to_dict("records"):
            r.pop("seed", None)
            r.pop("N", None)
            r.pop("cell", None)
            rows.append(r)
        return rows

    def _reference(self, cell: Cell) -> list[dict[str, Any]]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a missing twin: no rows for it
            df = self._floor(self.cfg.model, cell, roles=("twin", "original"))
        rows = self._attack_rows(df, cell)
        for r in rows:
            r["variant"] = REFERENCE_METHOD[r["role"]]
        return rows

    def _attack(self, cell: Cell) -> list[dict[str, Any]]:
        ckpt = self.checkpoint(cell.model, int(cell.seed))
        if not (ckpt / META_FILE).is_file():
            raise FileNotFoundError(f"{ckpt}: the unlearned model of {cell.label} is missing "
                                    "(its unlearn cell must run first)")
        df = self._floor(str(ckpt), cell, method=model_method(cell.model))
        df = df[df["role"] == "target"]
        return self._attack_rows(df, cell)

    def _lens(self, cell: Cell) -> list[dict[str, Any]]:
        from interp_unlearn.attacks.common import related_models, resolve_mcqs
        from interp_unlearn.evaluation.scoring import EvalConfig
        from interp_unlearn.evaluation.logit_lens import logit_lens
        from interp_unlearn.core.mcq import load_mcq
        cfg = self.cfg
        if cell.model in REFERENCE_METHOD:
            orig, twin = related_models(cfg.model)
            spec = orig if cell.model == "original" else twin
            if spec is None:
                return []
            method = REFERENCE_METHOD[cell.model]
        else:
            spec = str(self.checkpoint(cell.model, int(cell.seed)))
            method = model_method(cell.model)
        lm = load_model(spec, device=cfg.device)
        econf = EvalConfig(cfg.scoring or lm.default_scoring, cfg.eval_batch_size)
        rows = []
        for domain, items in resolve_mcqs(lm, cfg.mcq, tuple(cfg.lens_domains)).items():
            items = load_mcq(items) if isinstance(items, Path) else items
            df = logit_lens(lm.model, lm.tokenizer, items, econf)
            for r in df.to_dict("records"):
                base = {"method": method, "domain": domain, "block": int(r["block"]),
                        "n": int(r["n"]), "scoring": econf.scoring}
                for metric in ("accuracy", "ci95_low", "ci95_high"):
                    rows.append({**base, "metric": metric, "value": float(r[metric])})
        return rows


def run_reproduce(config: ReproduceConfig, out: str | Path, *, dry_run: bool = False,
                  shard: Any = None) -> dict[str, Any]:
    """Run (or resume) the grid of ``config`` in ``out``; with ``dry_run`` only write the
    config and the plan; with ``shard`` (``"i/n"`` or ``(i, n)``) only shard ``i`` of ``n``,
    in ``out/shards/{i}-of-{n}`` (:mod:`.shard`; a later run without it merges them).
    Returns a summary (cells, ran, skipped, seconds, outputs). A bad shard spec or an
    uninstalled executor raises before anything is written."""
    spec = parse_shard(shard)
    check_executor(config.executor)
    runner = GridRunner(config, out)
    if spec is not None:
        runner.plan = shard_plan(runner.plan, *spec)
        runner.shard = f"{spec[0]}/{spec[1]}"
        runner.out = out = shard_dir(out, *spec)
    if dry_run:
        with run_lock(out):  # a dry run must not rewrite a running grid's files either
            runner.write_setup()
        kinds: dict[str, int] = {}
        for c in runner.plan:
            kinds[c.kind] = kinds.get(c.kind, 0) + 1
        return {"out": str(out), "cells": len(runner.plan), "by_kind": kinds,
                "shard": runner.shard, "config": str(Path(out) / CONFIG_FILE), "dry_run": True}
    return runner.run()
