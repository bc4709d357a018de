"""Localization step cost: the hooked forward+backward vs a plain HF forward+backward.

A phase-1 step (``interp_unlearn.localize``) is a forward with ``z ← (1+A)⊙z`` at every
``blocks.{l}.attn.hook_z``, the CE loss (+ λ·Σ|A|) and a backward to ``A`` only (weights
frozen). The issue's target: ≤ 1.15× a plain forward+backward of the same HF model on the
same batch. Measured side by side in one run, alternating, median of ``--repeats``:

* ``plain``: ``model(ids).logits`` → CE → backward with every weight requiring grad (an
  ordinary training step's forward+backward, no optimiser);
* ``plain_frozen``: the same with frozen weights and one dummy leaf scaling the embeddings
  (the smallest backward that still traverses every layer, like phase 1);
* ``tl``: the TransformerLens ``TransformerBridge`` with :class:`HeadScale` attached;
* ``nnsight``: the nnsight backend (input of ``o_proj`` reshaped to heads) on the HF model.

Prints one JSON line with the median milliseconds and the ratios to ``plain``.

    python benchmarks/localize_overhead.py                 # the shipped organism
    python benchmarks/localize_overhead.py --model organism-micro --batch 8 --seq 128
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

from interp_unlearn.core.bridge import model_dims, to_bridge  # noqa: E402
from interp_unlearn.interventions import HeadScale, attach  # noqa: E402
from interp_unlearn.data.loading import load_model  # noqa: E402
from interp_unlearn.localize import causal_lm_loss  # noqa: E402
from interp_unlearn.interventions.nnsight_backend import NNsightHeads  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="organism")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lm = load_model(args.model)
    model = lm.model.float().eval()
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (args.batch, args.seq))
    mask = torch.ones_like(ids)
    labels = ids.clone()
    dims = model_dims(model)
    scale = HeadScale(dims["n_layers"], dims["n_heads"], dims["d_head"], sigma=1e-3, seed=0)
    bridge = to_bridge(model, lm.tokenizer)
    heads = NNsightHeads(model)

    def plain() -> None:
        for q in model.parameters():
            q.requires_grad_(True)
        model.zero_grad(set_to_none=True)
        causal_lm_loss(model(input_ids=ids, attention_mask=mask).logits, labels).backward()

    leaf = torch.ones((), requires_grad=True)

    def plain_frozen() -> None:
        for q in model.parameters():
            q.requires_grad_(False)
        emb = model.get_input_embeddings()(ids) * leaf
        causal_lm_loss(model(inputs_embeds=emb, attention_mask=mask).logits, labels).backward()

    def tl() -> None:
        for q in bridge.parameters():
            q.requires_grad_(False)
        scale.zero_grad(set_to_none=True)
        with attach(bridge, scale):
            loss = causal_lm_loss(bridge(ids, attention_mask=mask), labels)
        (loss + 1e-3 * scale.A.abs().sum()).backward()

    def nns() -> None:
        for q in model.parameters():
            q.requires_grad_(False)
        scale.zero_grad(set_to_none=True)
        loss = causal_lm_loss(heads.forward(ids, mask, scale), labels)
        (loss + 1e-3 * scale.A.abs().sum()).backward()

    fns = {"plain": plain, "plain_frozen": plain_frozen, "tl": tl, "nnsight": nns}
    for f in fns.values():  # warm-up
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.repeats):
        for name, f in fns.items():
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    ms = {k: round(1000 * statistics.median(v), 2) for k, v in times.items()}
    ratios = {f"{k}/plain": round(ms[k] / ms["plain"], 3) for k in ("plain_frozen", "tl", "nnsight")}
    print(json.dumps({"model": args.model, "batch": args.batch, "seq": args.seq,
                      "threads": args.threads, "median_ms": ms, **ratios,
                      "target": "tl/plain <= 1.15"}))


if __name__ == "__main__":
    main()
