"""``interp-unlearn unlearn``: its arguments and the runner over :class:`~.config.UnlearnConfig`.

Importing this module costs nothing (torch and the trainer load when a run starts), so the
command line's ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

#: the built-in methods, for the help text (the registry, which imports torch, validates)
METHOD_NAMES = ("rmu", "almpu", "ga", "ga_mp", "npo", "dpo", "rmu_lat", "adaptive_rmu",
                "npo_sam")

# ------------------------------------------------------------------------ command line


def add_unlearn_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``interp-unlearn unlearn`` (to be handled by :func:`run_unlearn`),
    with the flags every command shares (:mod:`interp_unlearn.pipeline.cli_common`; their
    argparse defaults are ``SUPPRESS``: :func:`run_unlearn` takes a missing one's default)."""
    from interp_unlearn.pipeline.cli_common import add_common_arguments

    p.add_argument("--method", required=True,
                   help=f"one of {', '.join(METHOD_NAMES)} ('-' or '_' alike)")
    p.add_argument("--heads", default=None,
                   help="selected heads: JSON file (phase 1 output) or 'L.H,L.H'")
    p.add_argument("--preset", default=None, help="method preset (zephyr, organism, ...)")
    p.add_argument("--steps", type=int, default=None, help="max_num_batches")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--seed", type=int, default=None,
                   help="the training seed (default: the preset's); --seeds S is the same")
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--forget-corpus", default=None,
                   help="forget | forget-qa | ... | JSONL path (default: the method's)")
    p.add_argument("--retain-corpus", default=None,
                   help="retain | general | retain+general | none | JSONL path")
    p.add_argument("--forget-mcq", default=None, metavar="JSONL",
                   help="forget questions scored before/after (cais/wmdp schema; default: "
                        "the model's own forget set -- an organism's world, smollm2-135m's "
                        "shipped set)")
    p.add_argument("--retain-mcq", default=None, metavar="JSONL",
                   help="retain questions scored before/after (default: the model's own)")
    p.add_argument("--scoring", choices=("letter", "cloze"), default=None,
                   help="how the before/after questions are scored (default: the model's "
                        "own: cloze for organisms, letter otherwise)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="method parameter, e.g. --set layer=2 --set steering_coeff=20 (read "
                        "by the parameter's type, true/false for booleans; checked before "
                        "loading)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--grad-accum", type=int, default=1,
                   help="gradient-accumulation steps; --batch-size is the effective batch, "
                        "split into processes x grad-accum equal micro-batches (under "
                        "`accelerate launch`: docs/multi_gpu.md)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute decoder-layer activations in the backward pass")
    p.add_argument("--lora-rank", type=int, default=0,
                   help="train LoRA adapters of this rank on the method's linear weights, "
                        "merged into the checkpoint (0: off)")
    p.add_argument("--lora-alpha", type=float, default=None, help="LoRA scale numerator "
                   "(default 2 x rank)")
    p.add_argument("--optimizer", default="adamw",
                   choices=("adamw", "adamw8bit", "paged_adamw8bit", "paged_adamw"),
                   help="adamw, or bitsandbytes' 8-bit / paged AdamW (needs bitsandbytes)")
    p.add_argument("--no-eval", action="store_true",
                   help="skip the before/after MCQ scoring (accuracies null)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out (never allowed: the input model itself)")
    add_common_arguments(
        p, defaults={"model": "organism"},
        model="the model to unlearn (default organism)",
        out="the unlearned HF checkpoint (default runs/unlearn/MODEL-METHOD-seedS)",
        seeds="this command runs one seed: --seeds 3 is --seed 3",
        device="where the model trains", dtype="the weights' dtype while training")
    return p


def unlearn_from_args(args: Any) -> tuple[Any, Path]:
    """Run the unlearning an argparse namespace describes (or any object with the
    attributes of :func:`add_unlearn_arguments`; missing ones take their defaults) and
    return ``(UnlearnResult, checkpoint directory)``."""
    from interp_unlearn.pipeline.cli_common import one_seed

    seed = one_seed(args, "unlearn")  # before the imports below: a usage error is instant
    from interp_unlearn.core.config import parse_assignments
    from interp_unlearn.data.loading import load_model
    from interp_unlearn.unlearn.config import UnlearnConfig
    from interp_unlearn.unlearn.registry import get_method
    from interp_unlearn.unlearn.trainer import Trainer

    g = lambda name, default=None: getattr(args, name, default)  # noqa: E731
    # the method and its --set values are checked before the model is loaded; values are
    # read by the parameter's type (--set adversarial=False is False, not the string)
    cls = get_method(g("method"))
    params = parse_assignments(g("set", []), cls.Params, f"{cls.name} parameter")
    quiet = bool(g("quiet", False) or g("no_progress", False) or g("json", False))
    for flag in ("forget_mcq", "retain_mcq"):  # read (and so checked) before loading
        if g(flag) is not None:
            from interp_unlearn.core.mcq import load_mcq
            load_mcq(g(flag))
    config = UnlearnConfig(
        method=g("method"), preset=g("preset"), max_num_batches=g("steps"),
        batch_size=g("batch_size"), lr=g("lr"), seq_len=g("seq_len"), seed=seed,
        eval_every=g("eval_every", 0) or 0, forget_corpus=g("forget_corpus"),
        retain_corpus=g("retain_corpus"), params=params, forget_mcq=g("forget_mcq"),
        eval_scoring=g("scoring"),
        retain_mcq=g("retain_mcq"),
        threads=g("threads", 0) or 0, progress=not quiet,
        grad_accum=g("grad_accum", 1) or 1,
        gradient_checkpointing=bool(g("gradient_checkpointing", False)),
        lora_rank=g("lora_rank", 0) or 0, lora_alpha=g("lora_alpha"),
        optimizer=g("optimizer", "adamw") or "adamw", evaluate=not g("no_eval", False))
    if g("out"):  # --out is checked before the model is loaded, too
        from interp_unlearn.data.loading import resolve
        from interp_unlearn.unlearn.output import check_out_dir

        check_out_dir(Path(g("out")), resolve(g("model") or "organism")[1],
                      bool(g("overwrite", False)))
    from interp_unlearn.core.distributed import dist_env

    env = dist_env()  # under `accelerate launch`: each process on its own device
    device = g("device") or "auto"
    if env.distributed and device == "auto" and env.device is not None:
        device = str(env.device)
    lm = load_model(g("model") or "organism", device=device, dtype=g("dtype"))
    trainer = Trainer(lm, config, heads=g("heads"), out_dir=g("out"),
                      overwrite=bool(g("overwrite", False)))
    return trainer.run(), trainer.out_dir


def unlearn_summary(res: Any) -> str:
    """One line: the method, forget/retain before -> after, steps, time, checkpoint."""
    fmt = lambda d: " ".join(f"{k} {v:.3f}" for k, v in d.items() if v is not None)  # noqa
    return (f"{res.method}: before [{fmt(res.before)}] -> after [{fmt(res.after)}] in "
            f"{res.steps} steps, {res.seconds:.0f} s; checkpoint {res.checkpoint}")


def run_unlearn(args: Any) -> int:
    """Run ``interp-unlearn unlearn`` from an argparse namespace (see
    :func:`unlearn_from_args`). Prints the result (one JSON object with ``--json``, with
    the ``"out"`` key; else a summary and ``results: DIR``) and returns the exit code."""
    res, out = unlearn_from_args(args)
    from interp_unlearn.core.distributed import dist_env

    if not dist_env().is_main:  # under `accelerate launch` the main process reports
        return 0
    if getattr(args, "json", False):
        print(json.dumps({**res.to_dict(), "out": str(out)}, default=str))
    else:
        print(unlearn_summary(res))
        print(f"results: {out}")
    return 0
