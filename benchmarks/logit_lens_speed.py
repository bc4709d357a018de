"""Logit lens over all blocks vs one ``evaluate_mcq`` pass, same model and questions.

    python benchmarks/logit_lens_speed.py [--model organism] [--domain forget] [--repeats 5]

Prints the median wall time of each (after one warm-up run of each) and their ratio
(target: lens <= 1.3 x evaluator). The two are timed alternately so that load from
other processes hits both alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

from interp_unlearn.evaluation.scoring import EvalConfig, evaluate_mcq  # noqa: E402
from interp_unlearn.data.loading import CheckpointError, load_model  # noqa: E402
from interp_unlearn.evaluation.logit_lens import logit_lens  # noqa: E402
from interp_unlearn.core.mcq import load_mcq  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="organism",
                   help="built-in name or checkpoint (falls back to organism-micro if the "
                        "default organism is not built)")
    p.add_argument("--domain", default="forget")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--backend", default="hf", choices=("hf", "bridge"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        lm = load_model(args.model)
    except CheckpointError:
        if args.model != "organism":
            raise
        print("organism not built; using organism-micro")
        lm = load_model("organism-micro")
    items = load_mcq(lm.mcq_path(args.domain))
    cfg = EvalConfig(scoring=lm.default_scoring, batch_size=args.batch_size)
    n_layers = lm.model.config.num_hidden_layers

    def t_eval() -> float:
        t = time.perf_counter()
        evaluate_mcq(lm.model, lm.tokenizer, items, cfg)
        return time.perf_counter() - t

    def t_lens() -> float:
        t = time.perf_counter()
        logit_lens(lm.model, lm.tokenizer, items, cfg, backend=args.backend)
        return time.perf_counter() - t

    t_eval(), t_lens()  # warm-up
    ev, ln = [], []
    for _ in range(args.repeats):
        ev.append(t_eval())
        ln.append(t_lens())
    e, l_ = statistics.median(ev), statistics.median(ln)
    ratios = [b / a for a, b in zip(ev, ln)]
    print(f"model {lm.path or lm.name}: {n_layers} blocks, {len(items)} questions "
          f"({lm.default_scoring}), batch {args.batch_size}, {args.threads} thread(s), "
          f"backend {args.backend}")
    print(f"evaluate_mcq            median {e:.3f} s  (runs: {', '.join(f'{x:.3f}' for x in ev)})")
    print(f"logit lens, all blocks  median {l_:.3f} s  (runs: {', '.join(f'{x:.3f}' for x in ln)})")
    print(f"ratio lens / evaluator: {l_ / e:.2f}x (median of per-pair ratios "
          f"{statistics.median(ratios):.2f}x; target <= 1.3x)")
    return {"evaluate_s": e, "lens_s": l_, "ratio": l_ / e, "n_layers": n_layers,
            "n_questions": len(items)}


if __name__ == "__main__":
    main()
