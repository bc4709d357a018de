"""``interp-unlearn unlearn``: its arguments and the runner over :class:`~.config.UnlearnConfig`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence


from interp_unlearn.data.loading import load_model
from interp_unlearn.unlearn.registry import available_methods
from interp_unlearn.unlearn.config import UnlearnConfig
from interp_unlearn.unlearn.trainer import Trainer

# ------------------------------------------------------------------------ command line


def add_unlearn_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``interp-unlearn unlearn`` (to be handled by :func:`run_unlearn`)."""
    p.add_argument("--method", required=True, help=f"one of {available_methods()}")
    p.add_argument("--model", default="organism",
                   help="built-in name, local HF checkpoint directory, or hub name")
    p.add_argument("--heads", default=None,
                   help="selected heads: JSON file (phase 1 output) or 'L.H,L.H'")
    p.add_argument("--out", type=Path, default=None, help="output checkpoint directory")
    p.add_argument("--preset", default=None, help="method preset (zephyr, organism, ...)")
    p.add_argument("--steps", type=int, default=None, help="max_num_batches")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--forget-corpus", default=None,
                   help="forget | forget-qa | ... | JSONL path (default: the method's)")
    p.add_argument("--retain-corpus", default=None,
                   help="retain | general | retain+general | none | JSONL path")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="method parameter, e.g. --set layer=2 --set steering_coeff=20 "
                        "(values parsed as JSON when possible)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true")
    return p


def parse_set(items: Sequence[str] | None) -> dict[str, Any]:
    """``--set KEY=VALUE`` items -> dict; values parsed as JSON when they are JSON, else
    kept as strings (``["layer=2", "mode=fast"]`` -> ``{"layer": 2, "mode": "fast"}``)."""
    out = {}
    for item in items or ():
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def run_unlearn(args: Any) -> int:
    """Run ``interp-unlearn unlearn`` from an argparse namespace (or any object with the
    attributes of :func:`add_unlearn_arguments`; missing ones take their defaults).
    Prints the result (one JSON object with ``--json``) and returns the exit code."""
    g = lambda name, default=None: getattr(args, name, default)  # noqa: E731
    json_out = bool(g("json", False))
    config = UnlearnConfig(
        method=g("method"), preset=g("preset"), max_num_batches=g("steps"),
        batch_size=g("batch_size"), lr=g("lr"), seq_len=g("seq_len"), seed=g("seed"),
        eval_every=g("eval_every", 0) or 0, forget_corpus=g("forget_corpus"),
        retain_corpus=g("retain_corpus"), params=parse_set(g("set", [])),
        threads=g("threads", 0) or 0,
        progress=not (g("no_progress", False) or json_out))
    lm = load_model(g("model", "organism"), device=g("device", "cpu"), dtype=g("dtype"))
    res = Trainer(lm, config, heads=g("heads"), out_dir=g("out")).run()
    if json_out:
        print(json.dumps(res.to_dict()))
    else:
        fmt = lambda d: " ".join(f"{k} {v:.3f}" for k, v in d.items() if v is not None)  # noqa
        print(f"{res.method}: before [{fmt(res.before)}] -> after [{fmt(res.after)}] in "
              f"{res.steps} steps, {res.seconds:.0f} s; checkpoint {res.checkpoint}")
    return 0
