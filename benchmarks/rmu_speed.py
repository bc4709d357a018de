"""RMU step time: the early-stopped forward vs the straightforward one, and their equality.

Both run through the same trainer (same batches, same control vector, same AdamW); the
only difference is ``params.fast_forward``:

* fast (default in ``interp_unlearn.unlearn.rmu``): prefix before layer ℓ−2 under no_grad,
  layers ℓ−2..ℓ with gradients, nothing after ℓ; the frozen reference is a copy of layers
  ℓ−2..ℓ fed from the shared prefix on retain data;
* straightforward: full forwards (logits included) of the model and of a frozen full copy,
  layer ℓ read with a forward hook, as the WMDP reference does.

Prints the median step time of each, the ratio fast/straightforward (target ≤ 0.5 on a
model with ℓ+1 ≤ L/2) and the max abs difference of the trained weights after the steps
(fp32; must be ≤ 1e-5).

    python benchmarks/rmu_speed.py                        # config-built 12 layers, ℓ = 3
    python benchmarks/rmu_speed.py --model organism --layer 2
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from interp_unlearn.data.loading import LoadedModel, load_model  # noqa: E402
from interp_unlearn.unlearn.trainer import Trainer, UnlearnConfig  # noqa: E402
from interp_unlearn.data.world import World  # noqa: E402


def config_model(n_layers: int, d_model: int, vocab: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=d_model, intermediate_size=int(d_model * 8 / 3),
                      num_hidden_layers=n_layers, num_attention_heads=d_model // 32,
                      num_key_value_heads=d_model // 32, max_position_embeddings=1024,
                      tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="config12",
                    help="config12 (12-layer config-built Llama), or a built-in / local model")
    ap.add_argument("--layers", type=int, default=12, help="layers of the config-built model")
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layer", type=int, default=3, help="RMU layer ℓ")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    micro = load_model("organism-micro")  # tokenizer + texts (world documents)
    world = World.load(micro.world_dir)
    forget = world.documents("forget")
    retain = world.documents("retain")
    if args.model == "config12":
        base = LoadedModel(config_model(args.layers, args.d_model, len(micro.tokenizer), 0),
                           micro.tokenizer, f"config{args.layers}")
    else:
        base = load_model(args.model)
    n_layers = base.model.config.num_hidden_layers

    def make(fast: bool) -> Trainer:
        lm = LoadedModel(copy.deepcopy(base.model), base.tokenizer, base.name)
        cfg = UnlearnConfig(method="rmu", preset="zephyr", max_num_batches=args.steps,
                            batch_size=args.batch_size, seq_len=args.seq_len, lr=1e-3,
                            forget_corpus=forget, retain_corpus=retain, progress=False,
                            params={"layer": args.layer, "steering_coeff": 20.0,
                                    "alpha": 100.0, "fast_forward": fast})
        return Trainer(lm, cfg, out_dir="/tmp/rmu_speed_unused")

    times: dict[str, list[float]] = {}
    trainers = {"fast": make(True), "straightforward": make(False)}
    # interleave the two so that load changes on a shared machine hit both alike
    for _ in range(args.steps):
        for name, tr in trainers.items():
            t0 = time.perf_counter()
            tr.train_step()
            times.setdefault(name, []).append(time.perf_counter() - t0)
    med = {k: statistics.median(v[1:] if len(v) > 2 else v) for k, v in times.items()}
    diff = max(float((a - b).detach().abs().max()) for a, b in zip(
        trainers["fast"].trainable.values(), trainers["straightforward"].trainable.values()))
    moved = max(float((p - q).detach().abs().max()) for p, q in zip(
        trainers["fast"].trainable.values(),
        [dict(base.model.named_parameters())[n] for n in trainers["fast"].trainable]))
    out = {"model": base.name, "n_layers": n_layers, "layer": args.layer,
           "batch": [args.batch_size, args.seq_len], "threads": args.threads,
           "steps": args.steps, "median_step_s": {k: round(v, 4) for k, v in med.items()},
           "ratio_fast_over_straightforward": round(med["fast"] / med["straightforward"], 3),
           "max_abs_weight_diff": diff, "max_abs_weight_change": moved}
    for tr in trainers.values():
        tr._restore_requires_grad()
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['model']} ({n_layers} layers), RMU layer {args.layer}, batch "
              f"{args.batch_size}x{args.seq_len}, {args.threads} thread(s), {args.steps} steps")
        for k, v in med.items():
            print(f"  {k:16s} median step {v * 1000:8.1f} ms")
        print(f"  ratio fast / straightforward: {out['ratio_fast_over_straightforward']:.3f} "
              f"(target <= 0.5)")
        print(f"  max |Δ trained weights| fast vs straightforward after {args.steps} steps: "
              f"{diff:.2e} (must be <= 1e-5; the weights moved by up to {moved:.2e})")
    return 0 if diff <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
