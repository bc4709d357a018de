"""Unlearning memory, old vs new (issue 16): measured on CPU for a small model, plus an
**estimate** table for Zephyr-7B (no GPU here: arithmetic from its parameter counts,
labelled as such).

Each configuration runs ``--steps`` training steps in its own child process and reports

* ``trainable``: parameters the optimiser updates;
* ``ref_copied``: parameters the frozen reference holds that are not the model's own
  tensors (old: ``frozen_reference=deepcopy``; new: ``shared``);
* ``optim_MB``: optimiser state after the steps;
* ``saved_MB``: activations saved for the backward pass in one step (bytes packed by
  autograd, :func:`torch.autograd.graph.saved_tensors_hooks`; gradient checkpointing
  keeps only each layer's input);
* ``peak_RSS_MB``: the child's peak resident memory (``os.wait4``), minus that of a child
  that only loads the model (``load-only``).

    python benchmarks/unlearn_memory.py                      # organism
    python benchmarks/unlearn_memory.py --model smollm2-135m --steps 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

CONFIGS = {
    "load-only": None,
    "rmu old (deepcopy ref)": ("rmu", {"frozen_reference": "deepcopy"}),
    "rmu new (shared ref)": ("rmu", {}),
    "rmu full-forward old": ("rmu", {"frozen_reference": "deepcopy",
                                     "params": {"fast_forward": False}}),
    "rmu full-forward new": ("rmu", {"params": {"fast_forward": False}}),
    "rmu_lat old (deepcopy ref)": ("rmu_lat", {"frozen_reference": "deepcopy"}),
    "rmu_lat new (shared ref)": ("rmu_lat", {}),
    "npo all, adamw": ("npo", {}),
    "npo all, grad ckpt": ("npo", {"gradient_checkpointing": True}),
    "npo all, adamw8bit": ("npo", {"optimizer": "adamw8bit"}),
    "npo lora r8": ("npo", {"lora_rank": 8}),
}


def one(model: str, name: str, steps: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from interp_unlearn.data.loading import load_model
    from interp_unlearn.unlearn.config import UnlearnConfig
    from interp_unlearn.unlearn.memory import copied_parameters
    from interp_unlearn.unlearn.trainer import Trainer

    lm = load_model(model)
    if CONFIGS[name] is None:
        return {}
    method, kw = CONFIGS[name]
    cfg = UnlearnConfig(method=method, max_num_batches=steps, evaluate=False, progress=False,
                        batch_size=4, seq_len=128, **kw)
    t = Trainer(lm, cfg, out_dir=tempfile.mkdtemp() + "/o")
    core = getattr(t.method, "core", None)
    copied = copied_parameters(t.reference_copied, t.model)
    if core is not None and t.reference_copied is None:
        copied += copied_parameters(core.frozen, t.model)
    saved = {"bytes": 0}

    def pack(x):
        saved["bytes"] += x.numel() * x.element_size()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        t.train_step()
    first = saved["bytes"]
    for _ in range(steps - 1):
        t.train_step()
    optim = sum(v.numel() * v.element_size() for s in t.optimizer.state.values()
                for v in s.values() if torch.is_tensor(v))
    return {"trainable": sum(p.numel() for p in t.trainable.values()), "ref_copied": copied,
            "optim_MB": round(optim / 2**20, 2), "saved_MB": round(first / 2**20, 2)}


def measure(model: str, name: str, steps: int) -> dict:
    proc = subprocess.Popen([sys.executable, __file__, "--model", model, "--steps", str(steps),
                             "--one", name], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        return {"error": f"exit {status >> 8}"}
    res = json.loads(out.strip().splitlines()[-1])
    res["peak_RSS_MB"] = round(usage.ru_maxrss / 1024, 1)
    return res


def zephyr_estimates() -> str:
    """ESTIMATES for Zephyr-7B (Mistral-7B shape) in bf16, from parameter counts only."""
    d, ffn, layers, vocab, kv = 4096, 14336, 32, 32000, 1024
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * ffn + 2 * d
    total = layers * per_layer + 2 * vocab * d + d
    gb = lambda n, b=2: n * b / 1e9  # noqa: E731
    rmu_trained = 3 * d * ffn
    rows = [
        ("weights (bf16)", gb(total), gb(total)),
        ("RMU frozen blocks ℓ-2..ℓ", gb(3 * per_layer), gb(rmu_trained)),
        ("ALMPU / RMU-LAT frozen reference", gb(total), gb(rmu_trained)),
        ("RMU AdamW states (bf16 params)", gb(rmu_trained, 4), gb(rmu_trained, 4)),
        ("NPO all: reference", gb(total), gb(total)),
        ("NPO all: grads + AdamW states", gb(total, 2 + 4), gb(total, 2 + 4)),
        ("NPO all, adamw8bit: grads + states", gb(total, 6), gb(total, 2 + 2)),
        ("NPO LoRA r16 on all linears: reference", gb(total), 0.0),
    ]
    lines = ["ESTIMATES (not measured: no GPU) -- Zephyr-7B, bf16, "
             f"{total / 1e9:.2f}B parameters; GB, old vs new",
             f"{'item':40s} {'old GB':>8s} {'new GB':>8s}"]
    lines += [f"{n:40s} {a:8.2f} {b:8.2f}" for n, a, b in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="organism")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--only", nargs="*", default=None, help="configuration names to run")
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.model, args.one, args.steps)))
        return
    names = [n for n in CONFIGS if args.only is None or n in args.only or n == "load-only"]
    results = {n: measure(args.model, n, args.steps) for n in names}
    base = results["load-only"].get("peak_RSS_MB", 0.0)
    print(f"MEASURED on CPU: {args.model}, batch 4 x 128 tokens, {args.steps} steps, fp32")
    cols = ("trainable", "ref_copied", "optim_MB", "saved_MB")
    print(f"{'config':30s} " + " ".join(f"{c:>11s}" for c in cols) + f" {'+peak RSS MB':>13s}")
    for n, r in results.items():
        if n == "load-only":
            continue
        if "error" in r:
            print(f"{n:30s} {r['error']}")
            continue
        print(f"{n:30s} " + " ".join(f"{r[c]:>11}" for c in cols)
              + f" {r['peak_RSS_MB'] - base:>13.1f}")
    print(f"(load-only child peak RSS {base} MB)\n")
    print(zephyr_estimates())


if __name__ == "__main__":
    main()
