"""Our MCQ evaluator vs lm-eval's, same model, same questions, same process.

    python benchmarks/eval_vs_lmeval.py [--model organism] [--domain forget] [--repeats 5]

For each scoring mode (``letter`` = lm-eval's ``wmdp_bio`` prompt, ``cloze``) both sides
score every question of the organism's ``--domain`` pool, from the MCQ file to the
accuracy, the way a user runs them:

* ours: :func:`interp_unlearn.evaluation.scoring.evaluate_mcq` on the JSONL file;
* lm-eval 0.4.13: ``lm_eval.evaluator.simple_evaluate`` (what its CLI calls) with an
  ``HFLM`` around the same model object, on a task reading the same file (letter: the
  task :func:`~interp_unlearn.evaluation.lm_eval_task.write_lm_eval_task` writes, which
  is ``wmdp_bio``'s template; cloze: the same task with the cloze prompt).

Both also run their request engines alone (``engine_ratio_*``): ``evaluate_mcq`` on
parsed questions vs ``HFLM.loglikelihood`` on the same ``(context, continuation)``
strings -- no task, dataset or metric machinery on lm-eval's side. Both sides get the
same rows per forward pass (``--batch-size`` questions x 4) and one CPU thread; they are
timed alternately, after one warm-up each, so that load from other processes hits both
alike; the medians of ``--repeats`` runs are compared.

The last line printed is a JSON object: ``ratio_letter`` and ``ratio_cloze`` (our
questions/s / lm-eval's, end to end; target >= 2), ``engine_ratio_letter`` and
``engine_ratio_cloze``, ``disagreements`` (questions whose predicted choice differs, over
both modes and both comparisons; target 0), ``max_abs_dloglik`` and the medians in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's bars

import numpy as np  # noqa: E402
import torch  # noqa: E402

from interp_unlearn.core.mcq import load_mcq  # noqa: E402
from interp_unlearn.data.loading import load_model  # noqa: E402
from interp_unlearn.evaluation.lm_eval_task import task_config  # noqa: E402
from interp_unlearn.evaluation.scoring import EvalConfig, build_requests, evaluate_mcq  # noqa: E402


def _write_task(mcq_path: Path, out_dir: Path, scoring: str) -> str:
    """An lm-eval task over ``mcq_path``: wmdp_bio's (letter) or its cloze variant."""
    import yaml

    name = f"bench_{scoring}"
    config = task_config(mcq_path, task_name=name)
    if scoring == "cloze":  # evaluate_mcq's cloze prompt; no description
        config.pop("description")
        config["doc_to_text"] = "Question: {{question.strip()}}\nAnswer:"
        config["doc_to_choice"] = "{{choices}}"
    (out_dir / f"{name}.yaml").write_text(yaml.safe_dump(config))
    return name


def _timed(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each function, run alternately ``repeats`` times."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _lm_eval_scores(lm, pairs: list[tuple[str, str]]) -> np.ndarray:
    from lm_eval.api.instance import Instance

    instances = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    out = lm.loglikelihood(instances, disable_tqdm=True)
    return np.array([ll for ll, _ in out], dtype=np.float64).reshape(-1, 4)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="organism", help="built-in name or checkpoint")
    p.add_argument("--domain", default="forget")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32, help="questions per forward pass")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.repeats < 1 or args.batch_size < 1 or args.threads < 1:
        p.error("--repeats, --batch-size and --threads must be positive")
    torch.set_num_threads(args.threads)
    import lm_eval.evaluator
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = load_model(args.model)
    path = Path(lm.mcq_path(args.domain))
    items = load_mcq(path)
    harness = HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=args.batch_size * 4,
                   device=str(lm.model.device))
    result: dict = {"model": args.model, "domain": args.domain, "questions": len(items),
                    "repeats": args.repeats, "batch_questions": args.batch_size,
                    "threads": args.threads}
    disagreements, max_delta = 0, 0.0
    task_dir = Path(tempfile.mkdtemp(prefix="eval_vs_lmeval_"))
    columns = [f"logprob_{k}" for k in range(4)]
    for scoring in ("letter", "cloze"):
        cfg = EvalConfig(scoring=scoring, batch_size=args.batch_size)
        pairs = build_requests(items, scoring, cfg.description)
        task = _write_task(path, task_dir, scoring)
        manager = TaskManager(include_path=str(task_dir), include_defaults=False)

        def ours_file() -> np.ndarray:
            return evaluate_mcq(lm.model, lm.tokenizer, path, cfg).per_question[columns].to_numpy()

        def ours_items() -> np.ndarray:
            return evaluate_mcq(lm.model, lm.tokenizer, items, cfg).per_question[columns].to_numpy()

        def theirs_cli() -> np.ndarray:
            out = lm_eval.evaluator.simple_evaluate(model=harness, tasks=[task],
                                                    task_manager=manager, log_samples=True,
                                                    verbosity="ERROR")
            samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
            return np.array([[float(r[0]) for r in s["filtered_resps"]] for s in samples])

        def theirs_engine() -> np.ndarray:
            return _lm_eval_scores(harness, pairs)

        for mine, ref in ((ours_file(), theirs_cli()), (ours_items(), theirs_engine())):
            disagreements += int((mine.argmax(1) != ref.argmax(1)).sum())
            max_delta = max(max_delta, float(np.abs(mine - ref).max()))
        t = _timed({"ours": ours_file, "lm_eval": theirs_cli,
                    "ours_engine": ours_items, "lm_eval_engine": theirs_engine}, args.repeats)
        n = len(items)
        print(f"{scoring:>6}: end to end ours {t['ours']:.3f} s, lm-eval {t['lm_eval']:.3f} s "
              f"({n / t['ours']:.0f} vs {n / t['lm_eval']:.0f} questions/s); engines "
              f"{t['ours_engine']:.3f} s vs {t['lm_eval_engine']:.3f} s")
        result[f"ratio_{scoring}"] = round(t["lm_eval"] / t["ours"], 3)
        result[f"engine_ratio_{scoring}"] = round(t["lm_eval_engine"] / t["ours_engine"], 3)
        result[f"seconds_{scoring}"] = {k: round(v, 4) for k, v in t.items()}
    result["disagreements"] = disagreements
    result["max_abs_dloglik"] = float(f"{max_delta:.3g}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
