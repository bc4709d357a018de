"""Command line: a thin, testable ``main(argv)`` over the library's dataclasses.

    interp-unlearn evaluate --model organism --mcq forget --json
    interp-unlearn organism train --preset small --out runs/organism-small
    interp-unlearn organism report            # the shipped organism and twin, as a table
    interp-unlearn localize --model organism --seeds 0-2 --out runs/loc
    interp-unlearn unlearn --method almpu --model organism --heads runs/loc/selected_heads.json --out runs/almpu
    interp-unlearn attack --model runs/almpu --kind finetune --seeds 0-2

Every command takes the shared flags --model, --out, --seeds, --device, --dtype, --json,
--quiet and --debug, with one meaning everywhere (`interp-unlearn CMD --help` says what
each does there). --seeds is a comma list (0,2,5) or an inclusive range (0-4); a single
number is that one seed. Every command writes its results to a directory (--out, or a
default) and ends with `results: DIR` (with --json: one JSON object with an "out" key).
Errors are one line, `interp-unlearn: error: ...`, exit code 2 (--debug: the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from interp_unlearn import __version__
from interp_unlearn.pipeline import commands
from interp_unlearn.pipeline.cli_common import (PROG, CLIParser, add_common_arguments,
                                                error_line, finish_common, quiet_mode)
from interp_unlearn.pipeline.commands import (DOMAIN_NAMES, HANDLERS,  # noqa: F401 - API
                                              CommandResult, logit_lens_run, organism_report)

ATTACK_KINDS = ("finetune", "quantize", "orthogonalize", "head-restore", "in-context",
                "worst-case")


def build_parser() -> argparse.ArgumentParser:
    parser = CLIParser(prog=PROG, description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ev = sub.add_parser("evaluate", help="WMDP-style MCQ accuracy of a model")
    ev.add_argument("--mcq", default="forget",
                    help="forget | retain (the organism's evaluation pool) or an MCQ JSONL file "
                         "in the cais/wmdp schema")
    ev.add_argument("--scoring", choices=("letter", "cloze"), default=None,
                    help="default: the model's own (cloze for organisms, letter otherwise)")
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--per-question", type=Path, default=None,
                    help="also write the per-question table to this CSV")
    add_common_arguments(
        ev, unused=("seeds",), defaults={"model": "organism"},
        model="the model to evaluate (default organism)",
        out="writes MCQ.json and MCQ_per_question.csv (MCQ: forget, retain or the file's "
            "name; default runs/evaluate-MODEL)",
        seeds="scoring is deterministic")

    org = sub.add_parser("organism", help="train or report the model organism")
    add_common_arguments(
        org, model="see the subcommand", out="see the subcommand", seeds="see the subcommand",
        device="see the subcommand", dtype="see the subcommand")
    osub = org.add_subparsers(dest="organism_command", required=True, metavar="SUBCOMMAND")
    tr = osub.add_parser("train", help="generate the world and train organism + twin")
    tr.add_argument("--preset", default="small", help="micro | small")
    tr.add_argument("--seed", type=int, default=None,
                    help="training/tokenizer seed (default: the preset's; small ships seed 1); "
                         "--seeds S is the same")
    tr.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    tr.add_argument("--no-twin", action="store_true", help="skip the never-learned twin")
    tr.add_argument("--twin-only", action="store_true", help="train only the twin")
    tr.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: the preset's; weights depend on it; 0: torch's default)")
    add_common_arguments(
        tr, unused=("model", "device", "dtype"),
        model="the organism is trained from scratch (--preset)",
        out="the organism's directory (model/, twin/, world; default "
            "runs/organism-PRESET-seedS)",
        seeds="this command trains one seed: --seeds 3 is --seed 3",
        device="the organism trains on the CPU", dtype="the organism trains in float32")
    rep = osub.add_parser("report", help="evaluate an organism and its twin; print the table")
    rep.add_argument("--organism", dest="model", default=argparse.SUPPRESS,
                     help="same as --model")
    add_common_arguments(
        rep, unused=("seeds",), defaults={"model": "organism"},
        model="the built-in organism (organism or organism-micro; default organism); "
              "its twin is MODEL-twin",
        out="writes report.csv and report.json (default runs/organism-report-MODEL)",
        seeds="scoring is deterministic")

    loc = sub.add_parser("localize", help="ALMPU phase 1: learn per-head scales, rank heads")
    loc.add_argument("--top-k", type=int, default=None,
                     help="heads to select, 1..n_layers*n_heads (default: the model family's; "
                          "4 for the shipped organism)")
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
    loc.add_argument("--epochs", type=int, default=None)
    loc.add_argument("--steps", type=int, default=None)
    loc.add_argument("--batch-size", type=int, default=None)
    loc.add_argument("--lr", type=float, default=None)
    loc.add_argument("--l1", type=float, default=None, help="L1 coefficient λ")
    loc.add_argument("--sigma", type=float, default=None, help="init std σ_A of A")
    loc.add_argument("--seed", type=int, default=None,
                     help="one run at this seed (instead of --seeds)")
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
                          "(interp_unlearn.localize.attribution; not the paper's method)")
    loc.add_argument("--formats", default="html,png,svg",
                     help="heatmap formats (html needs nothing; png/svg/pdf need chromium)")
    add_common_arguments(
        loc, defaults={"model": "organism"},
        model="the model to localize in (default organism)",
        out="scores.csv, selected_heads.json, the heatmap ... (default runs/localize-MODEL)",
        seeds="run phase 1 once per seed: writes seed{s}/, the mean-score top-K and "
              "stability.json (default: one run at --seed); lofit only")

    from interp_unlearn.pipeline.unlearn_command import add_unlearn_arguments
    add_unlearn_arguments(sub.add_parser("unlearn", help="run an unlearning method"))

    at = sub.add_parser("attack", help="recovery attacks, with the twin's floor")
    at.add_argument("--kind", required=True, choices=ATTACK_KINDS)
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
    at.add_argument("--samples", default=None, help="attack sizes N (default 0,5,10)")
    at.add_argument("--trials", type=int, default=None,
                    help="worst-case: completed Optuna trials the study should hold (default "
                         "20; a rerun in the same --out resumes)")
    at.add_argument("--families", default=None,
                    help="worst-case: attack families searched, comma list of lora, full, "
                         "head-delta (default all; head-delta needs heads)")
    at.add_argument("--retain-margin", type=float, default=None,
                    help="worst-case: retain accuracy must stay >= the original's minus this "
                         "(fraction, default 0.10)")
    at.add_argument("--formats", default="html,png",
                    help="worst-case: formats of the best-so-far figure ('' for none)")
    at.add_argument("--forget-mcq", default=None, metavar="JSONL",
                    help="forget questions scored after each attack (cais/wmdp schema; "
                         "default: the model's own forget set)")
    at.add_argument("--retain-mcq", default=None, metavar="JSONL",
                    help="also score these retain questions (default: forget only)")
    at.add_argument("--scoring", choices=("letter", "cloze"), default=None,
                    help="default: the model's own (cloze for organisms, letter otherwise)")
    at.add_argument("--twin", default=None,
                    help="the never-learned control (default: derived from the checkpoint; "
                         "where none exists, recovery is reported as unavailable)")
    at.add_argument("--original", default=None,
                    help="the model before unlearning (default: derived from the checkpoint)")
    at.add_argument("--no-floor", action="store_true", help="attack the target only")
    add_common_arguments(
        at, required=("model",), defaults={"seeds": [0, 1, 2]},
        model="the checkpoint to attack (its twin and original are derived from it)",
        out="results.jsonl, results.csv, summary.csv; a rerun resumes (default "
            "runs/attack-KIND-MODEL)",
        seeds="one attack per seed and N (default 0-2)",
        device="target, twin and original are loaded there (side by side, when not "
               "cpu/float32)")

    ll = sub.add_parser("logit-lens", help="per-block MCQ accuracy from the residual stream")
    ll.add_argument("--mcq", action="append", default=None, metavar="SET",
                    help="forget | retain (the model's own sets) or an MCQ JSONL file; "
                         "repeat for several (default: forget and retain)")
    ll.add_argument("--scoring", choices=("letter", "cloze"), default=None,
                    help="default: the model's own (cloze for organisms, letter otherwise)")
    add_common_arguments(
        ll, unused=("seeds",), required=("model",),
        model="the checkpoint to read",
        out="logit_lens.csv and logit_lens.json (default runs/logit-lens-MODEL)",
        seeds="the lens is deterministic")

    dp = sub.add_parser("depth", help="unlearning depth (UDS): patch the never-learned and "
                                      "the unlearned model into the original, layer by layer")
    dp.add_argument("--full", default=None,
                    help="the model before unlearning (default: derived from the checkpoint)")
    dp.add_argument("--reference", default=None,
                    help="the never-learned reference (default: the checkpoint's twin)")
    dp.add_argument("--mcq", default="forget",
                    help="forget (the full model's own set) or an MCQ JSONL file")
    dp.add_argument("--control", default="retain",
                    help="questions the reference knows, a check that its activations only "
                         "lack the forget knowledge: retain (default), a file, or none")
    dp.add_argument("--heads", action="store_true",
                    help="also the per-head map (hook_z of one head at a time; 2 x layers x "
                         "heads patched forwards per batch)")
    dp.add_argument("--tau", type=float, default=None, help="knowledge threshold (default 0.05)")
    dp.add_argument("--scope", choices=("span", "all"), default=None,
                    help="patched positions: span (the reference's: those predicting the "
                         "answer; default) or all (every prompt and answer position)")
    dp.add_argument("--max-questions", type=int, default=None, help="a seeded sample")
    dp.add_argument("--batch-size", type=int, default=None)
    dp.add_argument("--formats", default="html,png", help="figure formats ('' for none)")
    add_common_arguments(
        dp, unused=("seeds",), required=("model",),
        model="the unlearned checkpoint",
        out="uds.csv, uds_heads.csv, per_question.csv, summary.json, figures (default "
            "runs/depth-MODEL)",
        seeds="depth is deterministic")

    from interp_unlearn.pipeline.localize_benchmark import add_arguments as add_localize_benchmark
    add_localize_benchmark(sub)

    rp = sub.add_parser("reproduce", help="the paper's experiment grid: every table and figure")
    rp.add_argument("--quick", action="store_true",
                    help="1 seed, reduced sizes and variants, short attacks (see README)")
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
    from interp_unlearn.pipeline.reproduce_flags import add_cluster_arguments
    add_cluster_arguments(rp)
    add_common_arguments(
        rp, unused=("dtype",), defaults={"model": "organism"},
        model="built-in organism or checkpoint dir (default organism); a checkpoint "
              "without a synthetic world needs --set forget_corpus=F --set retain_corpus=F "
              "--set 'mcq={\"forget\": F, \"retain\": F}'",
        out="the run directory (default runs/reproduce-MODEL-quick|full); a rerun with the "
            "same --out resumes",
        seeds="the grid's seeds (default 0-2; --quick: 0)",
        device="where every grid cell runs",
        dtype="the grid runs in float32")

    fg = sub.add_parser("figures", help="redraw every figure and table of a reproduce run")
    fg.add_argument("--run", type=Path, required=True, help="the reproduce --out directory")
    fg.add_argument("--formats", default="html,png,svg,pdf")
    add_common_arguments(
        fg, unused=("model", "seeds", "device", "dtype"),
        model="the models are those of --run", out="writes tables/ and figures/ there "
        "(default: the --run directory)", seeds="the seeds are those of --run",
        device="no model is loaded", dtype="no model is loaded")
    return parser


def _command_name(args) -> str:
    sub = getattr(args, "organism_command", None)
    return f"{args.command} {sub}" if sub else args.command


def _run(args) -> int:
    name = _command_name(args)
    finish_common(args, name)
    handler = getattr(commands, HANDLERS[args.command])  # per call: tests replace them
    if args.json:  # stdout is the JSON object's alone: anything else printed goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            result = handler(args)
        data = result.data
        payload = ({**data, "out": str(result.out)} if isinstance(data, dict)
                   else {"out": str(result.out), "rows": data})
        print(json.dumps(payload, default=str))
    else:
        result = handler(args)
        if result.text:
            print(result.text)
        print(f"results: {result.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code: 0, 2 on any error (printed as one line
    ``interp-unlearn: error: ...`` on stderr; ``--debug`` raises it instead), 130 when
    interrupted."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        with quiet_mode(getattr(args, "quiet", False)):
            if getattr(args, "accept_incomplete", False):
                from interp_unlearn.data.loading import accepting_incomplete

                with accepting_incomplete():
                    return _run(args)
            return _run(args)
    except SystemExit as exc:  # --help, --version (argparse exits)
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        if debug:
            raise
        print(error_line(RuntimeError(exc.code)), file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout closed early (`| head`): stop quietly, like SIGPIPE
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{PROG}: error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every error is one line unless --debug
        if debug:
            raise
        print(error_line(exc), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
