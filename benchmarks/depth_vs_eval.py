"""Per-layer UDS vs the evaluator: is the unlearning depth within its budget?

Issue 14's budget: per-layer UDS for one model on the organism's 150 forget questions
costs at most 3x one evaluator pass per layer patched, i.e.

    ratio = t(depth, per layer, no heads) / (n_layers * t(evaluate_mcq on the same questions))

must be <= 3. Both are timed side by side in this run, alternating, median of ``--repeats``,
one torch thread, on the same model, questions and scoring (the organism's cloze).
The depth run scores two patched stages per layer (the twin's and the unlearned model's
activations) plus the clean full model; the evaluator scores each question's four choices.

    python benchmarks/depth_vs_eval.py                     # organism, the twin as "unlearned"
    python benchmarks/depth_vs_eval.py --unlearned runs/rmu
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

from interp_unlearn.core.mcq import load_mcq  # noqa: E402
from interp_unlearn.data.loading import load_model  # noqa: E402
from interp_unlearn.evaluation.depth import DepthConfig, depth_scores  # noqa: E402
from interp_unlearn.evaluation.scoring import EvalConfig, evaluate_mcq  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="organism", help="the full (original) model")
    ap.add_argument("--reference", default=None, help="default: MODEL-twin")
    ap.add_argument("--unlearned", default=None, help="default: the reference")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scope", default="span", choices=("span", "all"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    full = load_model(args.model)
    ref = load_model(args.reference or f"{args.model}-twin")
    unl = load_model(args.unlearned) if args.unlearned else ref
    items = load_mcq(full.mcq_path("forget"))
    n_layers = full.model.config.num_hidden_layers
    ecfg = EvalConfig(scoring=full.default_scoring, batch_size=32)
    dcfg = DepthConfig(scope=args.scope)
    t_eval, t_depth = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        evaluate_mcq(full.model, full.tokenizer, items, ecfg)
        t_eval.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        res = depth_scores(full.model, ref.model, unl.model, full.tokenizer, items, dcfg)
        t_depth.append(time.perf_counter() - t0)
    e, d = statistics.median(t_eval), statistics.median(t_depth)
    ratio = d / (n_layers * e)
    print(json.dumps({"model": args.model, "questions": len(items), "layers": n_layers,
                      "scope": args.scope, "eval_s": round(e, 3), "depth_s": round(d, 3),
                      "uds": res["summary"]["uds"],
                      "ratio_depth_over_layers_x_eval": round(ratio, 3), "budget": 3.0,
                      "within_budget": ratio <= 3.0}, indent=1))
    return 0 if ratio <= 3.0 else 1


if __name__ == "__main__":
    sys.exit(main())
