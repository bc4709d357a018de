"""Command line: a thin, testable ``main(argv)`` over the library's dataclasses.

    interp-unlearn evaluate --model organism --mcq forget --json
    interp-unlearn organism train --preset small --out runs/organism-small
    interp-unlearn organism report            # the shipped organism and twin, as a table
    interp-unlearn localize --model organism --seeds 3 --out runs/loc
    interp-unlearn unlearn --method almpu --model organism --heads runs/loc/selected_heads.json --out runs/almpu
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

DOMAIN_NAMES = ("forget", "retain")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="organism",
                   help="built-in name (organism, organism-twin, organism-micro, "
                        "organism-micro-twin), local HF checkpoint directory, or hub name")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="float32 (default), bfloat16, float16")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interp-unlearn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("evaluate", help="WMDP-style MCQ accuracy of a model")
    _add_model_args(ev)
    ev.add_argument("--mcq", default="forget",
                    help="forget | retain (the organism's evaluation pool) or an MCQ JSONL file "
                         "in the cais/wmdp schema")
    ev.add_argument("--scoring", choices=("letter", "cloze"), default=None,
                    help="default: the model's own (cloze for organisms, letter otherwise)")
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--per-question", type=Path, default=None,
                    help="also write the per-question table to this CSV")

    org = sub.add_parser("organism", help="train or report the model organism")
    osub = org.add_subparsers(dest="organism_command", required=True)
    tr = osub.add_parser("train", help="generate the world and train organism + twin")
    tr.add_argument("--preset", default="small", help="micro | small")
    tr.add_argument("--seed", type=int, default=None,
                    help="training/tokenizer seed (default: the preset's; small ships seed 1)")
    tr.add_argument("--out", type=Path, default=None,
                    help="output directory (default runs/organism-PRESET-seedS)")
    tr.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    tr.add_argument("--no-twin", action="store_true", help="skip the never-learned twin")
    tr.add_argument("--twin-only", action="store_true", help="train only the twin")
    tr.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: the preset's; weights depend on it; 0: torch's default)")
    tr.add_argument("--no-progress", action="store_true")
    rep = osub.add_parser("report", help="evaluate an organism and its twin; print the table")
    rep.add_argument("--organism", default="organism",
                     help="built-in organism name (organism or organism-micro)")
    rep.add_argument("--json", action="store_true")
    loc = sub.add_parser("localize", help="ALMPU phase 1: learn per-head scales, rank heads")
    _add_model_args(loc)
    loc.add_argument("--top-k", type=int, default=None,
                     help="heads to select, 1..n_layers*n_heads (default: the model family's; "
                          "4 for the shipped organism)")
    loc.add_argument("--out", type=Path, required=True)
    loc.add_argument("--objective", choices=("auto", "corpus-ce", "answer-ce", "paraphrase-ce"),
                     default=None,
                     help="phase-1 CE: corpus-ce (the paper: every token of the forget "
                          "documents), answer-ce (LoFiT: answer tokens of Q/A lines), "
                          "paraphrase-ce (answer tokens of Q/A phrasings the organism never "
                          "saw); auto (default): answer-ce for organisms, corpus-ce for "
                          "--forget-corpus. The organism preset's λ is 1e-4 (measured for "
                          "answer-ce); add --l1 1e-3 for the paper's corpus-ce setting")
    loc.add_argument("--qa-pools", default=None,
                     help="answer-ce/paraphrase-ce: forget Q/A pools, practice and/or attack "
                          "(default practice; never eval)")
    loc.add_argument("--seeds", default=None,
                     help="run phase 1 per seed: a count (3 = seeds 0,1,2) or a list 0,1,2; "
                          "writes seed{s}/, the mean-score top-K and stability.json")
    loc.add_argument("--epochs", type=int, default=None)
    loc.add_argument("--steps", type=int, default=None)
    loc.add_argument("--batch-size", type=int, default=None)
    loc.add_argument("--lr", type=float, default=None)
    loc.add_argument("--l1", type=float, default=None, help="L1 coefficient λ")
    loc.add_argument("--sigma", type=float, default=None, help="init std σ_A of A")
    loc.add_argument("--seed", type=int, default=None)
    loc.add_argument("--backend", choices=("tl", "nnsight"), default="tl",
                     help="tl: TransformerLens hook_z; nnsight: input of the attention "
                          "output projection (architectures TransformerLens lacks)")
    loc.add_argument("--forget-corpus", default=None,
                     help="forget texts: a corpus name or local JSONL/parquet path "
                          "(interp_unlearn.data.load_corpus, e.g. bio-forget-corpus.jsonl); "
                          "default: the organism's forget documents")
    loc.add_argument("--max-texts", type=int, default=None,
                     help="use only the first N forget texts")
    loc.add_argument("--score", choices=("lofit", "ablation"), default="lofit",
                     help="lofit: the paper's learned head scales ||A[l,h]|| (default); "
                          "ablation: forget-specific ablation attribution on held-out MCQs "
                          "(interp_unlearn.attribution; not the paper's method)")
    loc.add_argument("--formats", default="html,png,svg",
                     help="heatmap formats (html needs nothing; png/svg/pdf need chromium)")
    loc.add_argument("--json", action="store_true")
    loc.add_argument("--no-progress", action="store_true")

    from interp_unlearn.pipeline.unlearn_command import add_unlearn_arguments
    add_unlearn_arguments(sub.add_parser("unlearn", help="run an unlearning method"))

    at = sub.add_parser("attack", help="recovery attacks, with the twin's floor")
    at.add_argument("--model", required=True, help="checkpoint dir or built-in name")
    at.add_argument("--kind", required=True,
                    choices=("finetune", "quantize", "orthogonalize", "head-restore", "in-context"))
    at.add_argument("--data", default="forget", help="forget | unrelated | JSONL corpus")
    at.add_argument("--pool", default="attack", help="attack (default) | same (paper's protocol)")
    at.add_argument("--config", default="lora",
                    help="finetune preset: lora (Łucki's recipe at the family's calibrated lr; "
                         "organism 2e-3) | paper (lr 2e-4 verbatim) | full")
    at.add_argument("--lr", type=float, default=None, help="override the attack's learning rate")
    at.add_argument("--heads", default=None,
                    help="head-restore: heads 'L.H,L.H' or a selected-heads JSON "
                         "(default: the checkpoint's recorded heads)")
    at.add_argument("--mode", default=None, choices=("weights", "delta"),
                    help="head-restore: train the heads' weight slices or a head δ")
    at.add_argument("--kappa", type=float, default=None,
                    help="head-restore delta: radius κ·E‖z‖ per head (default unbounded)")
    at.add_argument("--epsilon", type=float, default=None,
                    help="head-restore delta: absolute radius per head")
    at.add_argument("--samples", default="0,5,10")
    at.add_argument("--seeds", default="3", help="a count (3 = seeds 0,1,2) or a list 0,1")
    at.add_argument("--no-floor", action="store_true", help="attack the target only")
    at.add_argument("--out", type=Path, default=None, help="result dir (resumable)")
    at.add_argument("--json", action="store_true")

    ll = sub.add_parser("logit-lens", help="per-block MCQ accuracy from the residual stream")
    ll.add_argument("--model", required=True)
    ll.add_argument("--out", type=Path, default=None)
    ll.add_argument("--json", action="store_true")

    rp = sub.add_parser("reproduce", help="the paper's experiment grid: every table and figure")
    rp.add_argument("--model", default="organism", help="built-in organism or checkpoint dir")
    rp.add_argument("--quick", action="store_true",
                    help="1 seed, reduced sizes and variants, short attacks (see README)")
    rp.add_argument("--seeds", default=None,
                    help="a count (3 = seeds 0,1,2) or a list 0,1; default 3 (--quick: 1)")
    rp.add_argument("--out", type=Path, default=None,
                    help="run directory (default runs/reproduce-MODEL-quick|full); a rerun "
                         "with the same --out resumes")
    rp.add_argument("--methods", default=None, help="comma list (default: all six)")
    rp.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                    help="any ReproduceConfig field, e.g. --set table1_sizes=[0,5,10]")
    rp.add_argument("--resume", action="store_true",
                    help="rerun with the configuration saved in --out")
    rp.add_argument("--threads", type=int, default=0,
                    help="torch threads per process (0: torch's default; 1 with --workers > 1)")
    rp.add_argument("--workers", type=int, default=None,
                    help="processes running grid cells side by side (default 0: one per CPU "
                         "core on the CPU, 1 on a GPU)")
    rp.add_argument("--formats", default=None, help="figure formats (default html,png,svg,pdf)")
    rp.add_argument("--no-figures", action="store_true")
    rp.add_argument("--dry-run", action="store_true", help="write the config and plan only")
    rp.add_argument("--json", action="store_true")
    rp.add_argument("--no-progress", action="store_true")

    fg = sub.add_parser("figures", help="redraw every figure and table of a reproduce run")
    fg.add_argument("--run", type=Path, required=True, help="the reproduce --out directory")
    fg.add_argument("--formats", default="html,png,svg,pdf")
    fg.add_argument("--json", action="store_true")
    return parser


def _cmd_reproduce(args) -> int:
    from interp_unlearn.pipeline.reproduce.config import (CONFIG_FILE, ReproduceConfig,
                                                          default_out, parse_overrides)
    from interp_unlearn.pipeline.reproduce.grid import run_reproduce

    over = parse_overrides(args.set)
    for key, value in (("seeds", args.seeds), ("threads", args.threads or None),
                       ("workers", args.workers),
                       ("methods", args.methods.split(",") if args.methods else None),
                       ("formats", args.formats.split(",") if args.formats else None)):
        if value is not None:
            over[key] = value
    if args.no_figures:
        over["figures"] = False
    if args.no_progress or args.json:
        over["progress"] = False
    out = args.out or default_out(args.model, args.quick)
    if args.resume:
        saved = ReproduceConfig.load_json(out / CONFIG_FILE).to_dict()
        cfg = ReproduceConfig.from_dict({**saved, **over})
    else:
        cfg = ReproduceConfig.preset(args.model, quick=args.quick, **over)
    res = run_reproduce(cfg, out, dry_run=args.dry_run)
    print(json.dumps(res, default=str) if args.json else
          "\n".join(f"{k}: {v}" for k, v in res.items() if k not in ("figures", "tables"))
          + f"\nwritten to {out}")
    return 0


def _cmd_figures(args) -> int:
    from interp_unlearn.pipeline.reproduce.figures import draw_figures
    from interp_unlearn.pipeline.reproduce.tables import write_tables

    tables = write_tables(args.run)
    figs = draw_figures(args.run, formats=tuple(f for f in args.formats.split(",") if f))
    res = {"run": str(args.run), "tables": [str(p) for p in tables], **figs}
    print(json.dumps(res, default=str) if args.json else
          f"{len(tables)} table files, {sum(len(v) for v in figs['files'].values())} figure "
          f"files in {args.run}" + (f" (static formats skipped: {figs['static_skipped']})"
                                   if figs["static_skipped"] else ""))
    return 0


def _cmd_attack(args) -> int:
    from interp_unlearn.attacks.floor import run_attack

    kw = {"pool": args.pool}
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
    if "heads" in given:
        if "," in given["heads"] or ("." in given["heads"]
                                     and not given["heads"].endswith(".json")):
            given["heads"] = [tuple(int(x) for x in h.split(".")) for h in given["heads"].split(",")]
    kw.update(given)
    df = run_attack(args.model, args.kind, data=args.data, samples=args.samples, seeds=args.seeds,
                    out=args.out, floor=not args.no_floor, **kw)
    print(df.to_json(orient="records") if args.json else df.to_string(index=False))
    return 0


def _cmd_logit_lens(args) -> int:
    from interp_unlearn.evaluation.logit_lens import run_logit_lens

    df = run_logit_lens(args.model, args.out)
    print(df.to_json(orient="records") if args.json else df.to_string(index=False))
    return 0


def _cmd_localize(args) -> int:
    from interp_unlearn.localize import LocalizeConfig, run_localize

    if args.score == "ablation":
        from interp_unlearn.localize.attribution import AttributionConfig
        from interp_unlearn.pipeline.localize_run import run_attribution

        from interp_unlearn.data.families import detect_family
        k = args.top_k if args.top_k is not None else detect_family(args.model).localize.get("top_k")
        res = run_attribution(args.model, k, args.out,
                              AttributionConfig(seed=args.seed or 0), device=args.device,
                              formats=tuple(f for f in args.formats.split(",") if f),
                              progress=not args.no_progress)
        out = {"out": str(args.out), "score": "ablation",
               "selected_heads": [list(h) for h in res.selected]}
        print(json.dumps(out) if args.json else
              f"selected heads (layer, head): {out['selected_heads']}\nwritten to {args.out}")
        return 0
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
    res = run_localize(args.model, args.top_k, args.out, None, device=args.device,
                       formats=tuple(f for f in args.formats.split(",") if f),
                       progress=not args.no_progress, backend=args.backend,
                       texts=texts, dtype=args.dtype, seeds=args.seeds, overrides=overrides)
    stab = res.meta.get("stability", {})
    out = {"out": str(args.out), "selected_heads": [list(h) for h in res.selected],
           "objective": res.config.objective, "seeds": stab.get("seeds"),
           "spearman_mean": stab.get("spearman", {}).get("mean"),
           "jaccard_top_k_mean": stab.get("jaccard_top_k", {}).get("mean")}
    print(json.dumps(out) if args.json else
          f"selected heads (layer, head): {out['selected_heads']} ({out['objective']}, "
          f"seeds {out['seeds']})\nwritten to {args.out}")
    return 0


def _cmd_unlearn(args) -> int:
    from interp_unlearn.pipeline.unlearn_command import run_unlearn
    return run_unlearn(args)


def _cmd_evaluate(args) -> int:
    from interp_unlearn.evaluation.scoring import EvalConfig, evaluate_mcq
    from interp_unlearn.data.loading import load_model

    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    mcq = lm.mcq_path(args.mcq) if args.mcq in DOMAIN_NAMES else Path(args.mcq)
    cfg = EvalConfig(scoring=args.scoring or lm.default_scoring, batch_size=args.batch_size)
    res = evaluate_mcq(lm.model, lm.tokenizer, mcq, cfg, progress=not args.json)
    if args.per_question:
        res.per_question.to_csv(args.per_question, index=False)
    out = {"model": args.model, "mcq": str(args.mcq), **res.to_dict()}
    if args.json:
        print(json.dumps(out))
    else:
        lo, hi = res.ci95
        print(f"{args.model} on {args.mcq} ({res.scoring}): accuracy {res.accuracy:.3f} "
              f"[95% CI {lo:.3f}-{hi:.3f}], n={res.n}")
    return 0


def organism_report(organism: str = "organism"):
    """Forget/retain accuracy of a built-in organism and its twin, as a DataFrame."""
    import pandas as pd

    from interp_unlearn.evaluation.scoring import EvalConfig, evaluate_mcq
    from interp_unlearn.data.loading import load_model

    rows = []
    for name in (organism, f"{organism}-twin"):
        lm = load_model(name)
        for domain in DOMAIN_NAMES:
            res = evaluate_mcq(lm.model, lm.tokenizer, lm.mcq_path(domain),
                               EvalConfig(scoring=lm.default_scoring))
            rows.append({"model": name, "mcq": domain, "scoring": res.scoring,
                         "accuracy": res.accuracy, "ci95_low": res.ci95[0],
                         "ci95_high": res.ci95[1], "n": res.n})
    return pd.DataFrame(rows)


def _cmd_organism(args) -> int:
    if args.organism_command == "train":
        from interp_unlearn.pipeline.organism import get_preset, train_organism

        overrides = {k: v for k, v in (("seed", args.seed), ("threads", args.threads),
                                       ("steps", args.steps)) if v is not None}
        cfg = get_preset(args.preset, **overrides)
        out = args.out or Path("runs") / f"organism-{args.preset}-seed{cfg.seed}"
        members = ("model",) if args.no_twin else ("twin",) if args.twin_only else ("model", "twin")
        metrics = train_organism(cfg, out, members=members,
                                 progress=not args.no_progress)
        print(json.dumps({"out": str(out), "config": asdict(cfg),
                          **{k: {"final": v["final"], "train_seconds": v["train_seconds"],
                                 "n_params": v["n_params"]} for k, v in metrics.items()}}))
        return 0
    df = organism_report(args.organism)
    if args.json:
        print(df.to_json(orient="records"))
    else:
        print(df.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"evaluate": _cmd_evaluate, "organism": _cmd_organism,
                "localize": _cmd_localize, "unlearn": _cmd_unlearn,
                "attack": _cmd_attack, "logit-lens": _cmd_logit_lens,
                "reproduce": _cmd_reproduce, "figures": _cmd_figures}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
