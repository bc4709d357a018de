"""The command line's commands: one function per (sub)command, each taking the parsed
arguments (shared flags filled in) and returning a :class:`CommandResult`;
:func:`interp_unlearn.pipeline.cli.main` prints it. torch and the toolkit load inside the
functions, so importing this module is free.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from interp_unlearn.pipeline.cli_common import UsageError, default_out, one_seed

__all__ = ["CommandResult", "DOMAIN_NAMES", "HANDLERS", "logit_lens_run", "organism_report"]

DOMAIN_NAMES = ("forget", "retain")


@dataclass
class CommandResult:
    """What a command hands back to ``main``: its results directory, its data (a dict, or
    a list of rows) for ``--json``, and its human-readable text."""
    out: Path
    data: Any
    text: str = ""


def _formats(text: str | None) -> tuple[str, ...]:
    return tuple(f for f in (text or "").split(",") if f)


def _cmd_reproduce(args) -> CommandResult:
    from interp_unlearn.pipeline.reproduce.config import (ReproduceConfig,
                                                          parse_overrides)
    from interp_unlearn.pipeline.reproduce.config import default_out as reproduce_out
    from interp_unlearn.pipeline.reproduce.grid import run_reproduce
    from interp_unlearn.pipeline.reproduce_flags import cluster_overrides

    over = parse_overrides(args.set)
    shard = cluster_overrides(args, over)  # a bad --shard fails here, before any work
    for key, value in (("seeds", args.seeds), ("threads", args.threads or None),
                       ("workers", args.workers),
                       ("methods", args.methods.split(",") if args.methods else None),
                       ("formats", args.formats.split(",") if args.formats else None)):
        if value is not None:
            over[key] = value
    if args.device != "cpu":
        over["device"] = args.device
    if args.no_figures:
        over["figures"] = False
    if args.quiet or args.json:
        over["progress"] = False
    out = args.out or reproduce_out(args.model, args.quick)
    if args.resume:
        from interp_unlearn.pipeline.reproduce.shard import saved_config
        saved = ReproduceConfig.load_json(saved_config(out, shard)).to_dict()
        cfg = ReproduceConfig.from_dict({**saved, **over})
    else:
        cfg = ReproduceConfig.preset(args.model, quick=args.quick, **over)
    res = run_reproduce(cfg, out, dry_run=args.dry_run, shard=shard)
    text = "\n".join(f"{k}: {v}" for k, v in res.items() if k not in ("figures", "tables"))
    return CommandResult(Path(res["out"]), res, text)


def _cmd_figures(args) -> CommandResult:
    if not args.run.is_dir():
        raise UsageError(f"argument --run: no such run directory: {args.run}")
    from interp_unlearn.pipeline.reproduce.figures import draw_figures
    from interp_unlearn.pipeline.reproduce.tables import write_tables

    out = args.out or args.run
    tables = write_tables(args.run, out / "tables")
    figs = draw_figures(args.run, out / "figures", formats=_formats(args.formats))
    res = {"run": str(args.run), "tables": [str(p) for p in tables], **figs}
    text = (f"{len(tables)} table files, {sum(len(v) for v in figs['files'].values())} figure "
            f"files" + (f" (static formats skipped: {figs['static_skipped']})"
                        if figs["static_skipped"] else ""))
    return CommandResult(out, res, text)


def _load_kw(args) -> dict[str, Any]:
    return {"device": args.device, "dtype": args.dtype}


def _cmd_attack(args) -> CommandResult:
    from interp_unlearn.attacks.floor import run_attack
    from interp_unlearn.core.distributed import ShardedEngineError

    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        # every process would write the same result files and resume from them on its own
        raise ShardedEngineError(
            "the attack command runs on one process, not under accelerate launch / torchrun "
            "(its fine-tuning loop attacks.finetune.train_on_texts is process-aware under "
            "ddp.yaml when called from Python)")
    if args.kind == "worst-case":
        from interp_unlearn.pipeline.worst_case_run import worst_case_command

        return CommandResult(*worst_case_command(args, formats=_formats(args.formats)))
    given_ws = [f for f, v in (("--trials", args.trials), ("--families", args.families),
                               ("--retain-margin", args.retain_margin)) if v is not None]
    if given_ws:
        raise ValueError(f"{', '.join(given_ws)} only apply to --kind worst-case")
    args.samples = args.samples if args.samples is not None else "0,5,10"
    kw: dict[str, Any] = {"pool": args.pool, "progress": not (args.quiet or args.json)}
    if args.kind == "finetune":
        kw["config"] = args.config
    if args.lr is not None:
        if not args.lr > 0:
            raise ValueError(f"--lr must be > 0, got {args.lr}")
        kw["lr"] = args.lr
    head_opts = {"heads": args.heads, "mode": args.mode, "kappa": args.kappa,
                 "epsilon": args.epsilon}
    given = {k: v for k, v in head_opts.items() if v is not None}
    if given and args.kind != "head-restore":
        raise ValueError(f"--{'/--'.join(given)} only apply to --kind head-restore")
    if "heads" in given:  # THE heads parser: "l.h,l.h", a JSON/.npy file or a run directory
        from interp_unlearn.core.heads import parse_heads

        given["heads"] = parse_heads(given["heads"])  # the layer/head ranges: once loaded
    kw.update(given)
    if args.forget_mcq is not None or args.retain_mcq is not None:
        from interp_unlearn.core.mcq import load_mcq

        for f in (args.forget_mcq, args.retain_mcq):  # read (and so checked) before loading
            if f is not None:
                load_mcq(f)
        kw["mcq"] = {"forget": args.forget_mcq}  # None: the model's own set
        if args.retain_mcq is not None:
            kw["mcq"]["retain"] = args.retain_mcq
        kw["domains"] = tuple(kw["mcq"])
    if args.scoring is not None:
        kw["scoring"] = args.scoring
    for role in ("twin", "original"):
        if getattr(args, role) is not None:
            if args.no_floor:
                raise ValueError(f"--{role} has no use with --no-floor")
            kw[role] = getattr(args, role)
    target: Any = args.model
    if args.device != "cpu" or args.dtype not in (None, "float32"):
        # run_floor loads names on the CPU in float32: hand it the models loaded here
        from interp_unlearn.attacks.common import related_models
        from interp_unlearn.data.loading import load_model

        target = load_model(args.model, **_load_kw(args))
        if not args.no_floor:
            original, twin = related_models(args.model)
            for role, spec in (("original", kw.get("original", original)),
                               ("twin", kw.get("twin", twin))):
                if spec is not None:
                    kw[role] = (target if str(spec) == str(args.model)
                                else load_model(spec, **_load_kw(args)))
    out = args.out or default_out("attack", args.model, args.kind)
    df = run_attack(target, args.kind, data=args.data, samples=args.samples, seeds=args.seeds,
                    out=out, floor=not args.no_floor, **kw)
    text = df.to_string(index=False)
    if df.attrs.get("unavailable"):
        text += f"\nrecovery: unavailable ({df.attrs['unavailable']}; pass --twin)"
    return CommandResult(out, json.loads(df.to_json(orient="records")), text)


def _cmd_logit_lens(args) -> CommandResult:
    out = args.out or default_out("logit-lens", args.model)
    df = logit_lens_run(args.model, out, device=args.device, dtype=args.dtype,
                        progress=not (args.quiet or args.json),
                        mcq=getattr(args, "mcq", None), scoring=getattr(args, "scoring", None))
    return CommandResult(out, json.loads(df.to_json(orient="records")),
                         df.to_string(index=False))


def logit_lens_run(model: str, out: str | Path, *, device: str = "auto",
                   dtype: str | None = None, progress: bool = True,
                   mcq: list[str] | None = None, scoring: str | None = None):
    """The ``logit-lens`` command: :func:`interp_unlearn.evaluation.logit_lens.run_logit_lens`
    on ``mcq`` (names ``forget``/``retain`` -- the model's own sets -- or JSONL files;
    default both domains of the model's own pool), its own scoring unless ``scoring``,
    loaded on ``device`` in ``dtype``; writes ``out/logit_lens.csv`` and
    ``out/logit_lens.json``. MCQ files are read (and so checked) before the model loads."""
    from interp_unlearn.core.mcq import load_mcq
    from interp_unlearn.evaluation.logit_lens import run_logit_lens

    sets: dict[str, Any] | None = None
    if mcq:
        sets = {}
        for spec in mcq:
            if spec in DOMAIN_NAMES:
                sets[spec] = None  # the model's own: resolved once it is loaded
            else:
                path = Path(spec)
                load_mcq(path)
                name = path.stem
                if name in sets:
                    raise ValueError(f"--mcq: two sets named {name!r}; rename one file")
                sets[name] = path
    return run_logit_lens(model, out, domains=DOMAIN_NAMES if sets is None else tuple(sets),
                          mcq=sets, progress=progress, device=device, dtype=dtype,
                          scoring=scoring)


def _cmd_localize(args) -> CommandResult:
    from interp_unlearn.localize import LocalizeConfig
    from interp_unlearn.pipeline.localize_run import run_localize

    out_dir = args.out or default_out("localize", args.model)
    progress = not (args.quiet or args.json)
    if args.score == "ablation":
        from interp_unlearn.data.families import detect_family
        from interp_unlearn.localize.attribution import AttributionConfig
        from interp_unlearn.pipeline.localize_run import run_attribution

        if args.seeds is not None:
            raise UsageError("argument --seeds: --score ablation runs one seed (--seed)")
        k = args.top_k if args.top_k is not None else detect_family(args.model).localize.get("top_k")
        res = run_attribution(args.model, k, out_dir,
                              AttributionConfig(seed=args.seed or 0), device=args.device,
                              dtype=args.dtype, formats=_formats(args.formats),
                              progress=progress)
        data = {"out": str(out_dir), "score": "ablation",
                "selected_heads": [list(h) for h in res.selected]}
        return CommandResult(out_dir, data,
                             f"selected heads (layer, head): {data['selected_heads']}")
    if args.seed is not None and args.seeds is not None:
        raise ValueError("give --seed (one run) or --seeds (several), not both")
    qa_pools = (None if args.qa_pools is None
                else tuple(p.strip() for p in args.qa_pools.split(",") if p.strip()))
    overrides = {k: v for k, v in {"epochs": args.epochs, "steps": args.steps,
                                   "batch_size": args.batch_size, "lr": args.lr,
                                   "l1_lambda": args.l1, "sigma_A": args.sigma,
                                   "seed": args.seed, "objective": args.objective,
                                   "qa_pools": qa_pools}.items() if v is not None}
    LocalizeConfig(**overrides, seeds=args.seeds, top_k=args.top_k)  # fail before loading
    texts = None
    if args.forget_corpus is not None:
        from interp_unlearn.data.corpora import load_corpus
        texts = load_corpus(args.forget_corpus, limit=args.max_texts)
    res = run_localize(args.model, args.top_k, out_dir, None, device=args.device,
                       formats=_formats(args.formats), progress=progress,
                       backend=args.backend, texts=texts, dtype=args.dtype, seeds=args.seeds,
                       overrides=overrides)
    stab = res.meta.get("stability", {})
    data = {"out": str(out_dir), "selected_heads": [list(h) for h in res.selected],
            "objective": res.config.objective, "seeds": stab.get("seeds"),
            "spearman_mean": stab.get("spearman", {}).get("mean"),
            "jaccard_top_k_mean": stab.get("jaccard_top_k", {}).get("mean")}
    return CommandResult(out_dir, data,
                         f"selected heads (layer, head): {data['selected_heads']} "
                         f"({data['objective']}, seeds {data['seeds']})")


def _cmd_unlearn(args) -> CommandResult:
    from interp_unlearn.pipeline.unlearn_command import unlearn_from_args, unlearn_summary

    res, out = unlearn_from_args(args)
    return CommandResult(out, res.to_dict(), unlearn_summary(res))


def _cmd_evaluate(args) -> CommandResult:
    # the question file and the output paths are checked before the model is loaded
    items = None
    if args.mcq not in DOMAIN_NAMES:
        from interp_unlearn.core.mcq import load_mcq

        if not Path(args.mcq).is_file():
            raise FileNotFoundError(f"--mcq {args.mcq}: no such file (or use forget/retain "
                                    "for the model's own questions)")
        items = load_mcq(args.mcq)
    if args.per_question and not Path(args.per_question).parent.is_dir():
        raise FileNotFoundError(f"--per-question {args.per_question}: its folder "
                                f"{Path(args.per_question).parent} does not exist")
    from interp_unlearn.data.loading import load_model
    from interp_unlearn.evaluation.scoring import EvalConfig, evaluate_mcq

    lm = load_model(args.model, **_load_kw(args))
    mcq = lm.mcq_path(args.mcq) if items is None else items
    cfg = EvalConfig(scoring=args.scoring or lm.default_scoring, batch_size=args.batch_size)
    res = evaluate_mcq(lm.model, lm.tokenizer, mcq, cfg, progress=not (args.json or args.quiet))
    out = args.out or default_out("evaluate", args.model)
    out.mkdir(parents=True, exist_ok=True)
    label = args.mcq if args.mcq in DOMAIN_NAMES else Path(args.mcq).stem
    data = {"model": args.model, "mcq": str(args.mcq), **res.to_dict()}
    (out / f"{label}.json").write_text(json.dumps({**data, "out": str(out)}, indent=1,
                                                  default=str))
    res.per_question.to_csv(out / f"{label}_per_question.csv", index=False)
    if args.per_question:
        res.per_question.to_csv(args.per_question, index=False)
    lo, hi = res.ci95
    return CommandResult(out, data,
                         f"{args.model} on {args.mcq} ({res.scoring}): accuracy "
                         f"{res.accuracy:.3f} [95% CI {lo:.3f}-{hi:.3f}], n={res.n}")


def organism_report(organism: str = "organism", *, device: str = "cpu",
                    dtype: str | None = None, progress: bool = False):
    """Forget/retain accuracy of a built-in organism and its twin, as a DataFrame."""
    import pandas as pd

    from interp_unlearn.data.loading import load_model
    from interp_unlearn.evaluation.scoring import EvalConfig, evaluate_mcq

    rows = []
    for name in (organism, f"{organism}-twin"):
        lm = load_model(name, device=device, dtype=dtype)
        for domain in DOMAIN_NAMES:
            res = evaluate_mcq(lm.model, lm.tokenizer, lm.mcq_path(domain),
                               EvalConfig(scoring=lm.default_scoring), progress=progress)
            rows.append({"model": name, "mcq": domain, "scoring": res.scoring,
                         "accuracy": res.accuracy, "ci95_low": res.ci95[0],
                         "ci95_high": res.ci95[1], "n": res.n})
    return pd.DataFrame(rows)


def _cmd_organism(args) -> CommandResult:
    if args.organism_command == "train":
        from interp_unlearn.pipeline.organism import get_preset, train_organism

        seed = one_seed(args, "organism train")
        overrides = {k: v for k, v in (("seed", seed), ("threads", args.threads),
                                       ("steps", args.steps)) if v is not None}
        cfg = get_preset(args.preset, **overrides)
        out = args.out or Path("runs") / f"organism-{args.preset}-seed{cfg.seed}"
        members = ("model",) if args.no_twin else ("twin",) if args.twin_only else ("model", "twin")
        metrics = train_organism(cfg, out, members=members,
                                 progress=not (args.quiet or args.json))
        per = {k: {"final": v["final"], "train_seconds": v["train_seconds"],
                   "n_params": v["n_params"]} for k, v in metrics.items()}
        data = {"out": str(out), "config": asdict(cfg), **per}
        text = "\n".join(f"{k}: {json.dumps(v['final'], default=str)} "
                         f"({v['train_seconds']:.0f} s, {v['n_params']} parameters)"
                         for k, v in per.items()) or f"organism {args.preset}, seed {cfg.seed}"
        return CommandResult(out, data, text)
    out = args.out or default_out("organism-report", args.model)
    df = organism_report(args.model, **_load_kw(args), progress=not (args.quiet or args.json))
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "report.csv", index=False)
    (out / "report.json").write_text(df.to_json(orient="records", indent=1))
    return CommandResult(out, json.loads(df.to_json(orient="records")),
                         df.to_string(index=False, float_format=lambda x: f"{x:.3f}"))


def _cmd_depth(args) -> CommandResult:
    from interp_unlearn.evaluation.depth import DepthConfig
    from interp_unlearn.pipeline.depth_run import run_depth

    over = {k: v for k, v in (("tau", args.tau), ("max_questions", args.max_questions),
                              ("batch_size", args.batch_size), ("scope", args.scope))
            if v is not None}
    config = DepthConfig(heads=args.heads, **over)
    out = args.out or default_out("depth", args.model)
    control = None if str(args.control).lower() == "none" else args.control
    df = run_depth(args.model, out, full=args.full, reference=args.reference, mcq=args.mcq,
                   control=control, config=config, device=args.device, dtype=args.dtype,
                   progress=not (args.quiet or args.json), formats=_formats(args.formats))
    summary = df.attrs["summary"]
    uds = summary["uds"]
    text = (df.round(4).to_string(index=False) + f"\nUDS = {uds:.4f}" if uds is not None
            else df.round(4).to_string(index=False) + "\nUDS = n/a (no knowledge layer)")
    if summary.get("uds_heads") is not None:
        text += f"; per-head UDS = {summary['uds_heads']:.4f}"
    if "control_ratio" in summary:
        text += (f"\ncontrol: the reference moves the control questions by "
                 f"{summary['control_delta_s1']:.3f} nats ({summary['control_ratio']:.2f}x "
                 "the forget questions')")
    return CommandResult(out, summary, text)


def _cmd_localize_benchmark(args) -> CommandResult:
    from interp_unlearn.pipeline.localize_benchmark import cmd_localize_benchmark
    return CommandResult(*cmd_localize_benchmark(args))


#: command -> the name of its function here (looked up per call: tests replace them)
HANDLERS = {"evaluate": "_cmd_evaluate", "organism": "_cmd_organism",
            "localize": "_cmd_localize", "unlearn": "_cmd_unlearn", "attack": "_cmd_attack",
            "logit-lens": "_cmd_logit_lens", "reproduce": "_cmd_reproduce",
            "figures": "_cmd_figures", "depth": "_cmd_depth",
            "localize-benchmark": "_cmd_localize_benchmark"}
