"""One trainer shared by every unlearning method (RMU, ALMPU, GA, GA-MP, NPO, DPO).

The trainer owns everything that is not the method's loss:

* **config** -- :class:`UnlearnConfig`. Generic fields left ``None`` are filled, in this
  order, from the trainer's base defaults, the method's ``defaults``, the chosen preset
  (``"zephyr"``, ``"organism"``, ...; organisms get their method's ``organism`` preset
  automatically) and finally the caller's explicit values. The resolved config is saved as
  ``unlearn_config.json``.
* **data** -- forget / retain corpora: a world corpus name (``forget``, ``retain``,
  ``general``, ``forget-qa``, ``forget-eval``, ``retain+general`` ...), a ``{"text": ...}``
  JSONL path, or a list of strings. Texts are tokenized once (tokenizer defaults, no
  extra special tokens), truncated to ``seq_len`` tokens, shuffled by a seeded generator
  (one per stream) and padded per batch (left padding for RMU/ALMPU, as the reference;
  right for the likelihood methods). When ``max_num_batches`` exceeds one pass the stream
  reshuffles and cycles (the reference makes one pass over ``min(max_num_batches, corpus
  batches)``; on WMDP's corpus that is the same thing).
* **optimisation** -- AdamW over the method's :meth:`~.registry.UnlearnMethod.trainable`
  parameters (all others get ``requires_grad=False`` for the run and are restored
  afterwards), no schedule, optional clipping (off by default). ``batch_size`` is the
  effective batch, split into processes × ``grad_accum`` micro-batches with the same
  result (:mod:`.distributed`); memory options -- shared frozen references, gradient
  checkpointing, 8-bit optimisers (:mod:`.memory`), LoRA (:mod:`.lora`).
* **safety** -- every loss term is checked before the backward pass, the gradients after
  it; a NaN/inf stops the run with :class:`NonFiniteLossError` naming the step and the
  term, after saving the weights from *before* that step -- only if they are still good
  (finite, finite outputs, retain accuracy not collapsed); otherwise the run directory
  records the stop and keeps no weights. A finite divergence keeps none either.
* **evaluation** -- forget/retain MCQ accuracy (:func:`~interp_unlearn.evaluation.scoring.evaluate_mcq`,
  the model's default scoring and pool) before, every ``eval_every`` steps, and after;
  everything goes to ``metrics.jsonl`` (one JSON object per line).
* **diagnostics** -- a method's :meth:`~.registry.UnlearnMethod.diagnostics` (ALMPU /
  GA-MP / RMU-LAT: ‖δ‖/ε, the adversary's gain) go into every evaluation record and, at the
  end, into ``diagnostics.json``; an inert adversary warns (``adversary_alive: false``).
* **checkpoint** -- ``out_dir`` becomes an HF checkpoint directory (``save_pretrained``
  safetensors + tokenizer + ``interp_unlearn.json`` copied from the input model with
  ``world_dir`` made absolute and an ``unlearn`` record added), so
  ``load_model(out_dir)`` and ``interp-unlearn evaluate --model out_dir`` work on it.

Entry points: :func:`unlearn` (Python) and :func:`run_unlearn` / :func:`add_unlearn_arguments`
(command line).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from interp_unlearn.evaluation.scoring import EvalConfig, evaluate_mcq
from interp_unlearn.data.loading import LoadedModel
from interp_unlearn.core.distributed import (all_finite, all_reduce_sum_, dist_env,
                                             local_tensor, split_batch)
from interp_unlearn.unlearn.registry import get_method

__all__ = [
    "Batch",
    "MethodContext",
    "NonFiniteLossError",
    "TextBatches",
    "Trainer",
    "UnlearnConfig",
    "UnlearnResult",
    "decoder_layers",
    "lm_loss",
    "masked_mse",
    "parse_heads",
    "resolve_corpus",
    "sequence_logprob",
    "token_logprobs",
]

from interp_unlearn.unlearn.batches import (Batch, TextBatches, _pad_id, collate,  # noqa: F401
                                            parse_heads, resolve_corpus)
from interp_unlearn.unlearn.config import (BASE_DEFAULTS, CONFIG_FILE, METRICS_FILE,  # noqa: F401
                                           RESULT_FILE, UnlearnConfig, resolve_config)
from interp_unlearn.unlearn.diagnostics import DIAGNOSTICS_FILE, write_diagnostics  # noqa: F401
from interp_unlearn.unlearn.diagnostics import edit_effect, warn_if_inert
from interp_unlearn.data.packaged import real_corpus, real_practice
from interp_unlearn.core.arch import decoder_layers
from interp_unlearn.unlearn.guards import (Diverged, check_weight_growth, retain_collapse,
                                           weight_norm)
from interp_unlearn.unlearn.output import check_out_dir, partial_dir
from interp_unlearn.unlearn.distributed import (finite, micro_batches, reduce_values,
                                                term_share)
from interp_unlearn.unlearn.lora import apply_lora
from interp_unlearn.unlearn.memory import (build_optimizer, disable_gradient_checkpointing,
                                           enable_gradient_checkpointing, frozen_copy,
                                           unshare)
from interp_unlearn.unlearn.persist import RunFiles
from interp_unlearn.unlearn import sharded, zero
from interp_unlearn.unlearn.context import MethodContext, NonFiniteLossError, UnlearnResult
from interp_unlearn.unlearn.losses import (lm_loss, masked_mse,
                                           sequence_logprob, token_logprobs)  # noqa: F401
from interp_unlearn._compat import moved_getattr

# ---------------------------------------------------------------------------- trainer


class Trainer(RunFiles):
    """One unlearning run. ``Trainer(lm, config, heads, out_dir).run()``; or drive it
    step by step with :meth:`train_step` (benchmarks do).

    The model in ``lm`` is trained **in place**."""

    def __init__(self, lm: LoadedModel, config: UnlearnConfig | None = None,
                 heads: Any = None, out_dir: str | Path | None = None,
                 overwrite: bool = False):
        config = config or UnlearnConfig()
        if not isinstance(config, UnlearnConfig):
            raise TypeError(f"config must be an UnlearnConfig, got {type(config).__name__}")
        self.lm = lm
        self.model = lm.model
        self.tokenizer = lm.tokenizer
        self.config, params = resolve_config(config, lm)
        self.method_cls = get_method(self.config.method)
        c = self.config
        self.dist = dist_env()  # processes of an `accelerate launch` (1 without one)
        self.micro_rows = split_batch(c.batch_size, self.dist.world, c.grad_accum)
        self.zero: zero.ZeroEngine | None = None  # DeepSpeed ZeRO-3 (built with the method)
        if self.dist.engine == "zero3" and self.dist.distributed:  # refused before any work
            self.config = c = zero.check_supported(c, c.method, params)
        elif self.dist.sharded:  # FSDP: what it does not run is refused before any work
            sharded.check_supported(c, c.method, params)
        if c.threads:
            torch.set_num_threads(c.threads)
        decoder_layers(self.model)  # fail early on unsupported models
        self.heads = parse_heads(heads, self.model)
        if self.heads is not None and self.method_cls.uses_heads == "no":
            raise ValueError(f"method {c.method!r} does not use attention heads; "
                             "drop --heads")
        if self.heads is None and self.method_cls.uses_heads == "required":
            raise ValueError(f"method {c.method!r} needs selected heads (ALMPU phase 1: "
                             "interp_unlearn.localize); pass heads=[(layer, head), ...] or a "
                             "selected-heads JSON file")
        # the run writes into a hidden sibling and publishes it at the end (.output)
        self.final_dir = Path(out_dir) if out_dir is not None else Path("runs") / "unlearn" / (
            f"{Path(str(lm.name)).name}-{c.method}-seed{c.seed}")
        check_out_dir(self.final_dir, lm.path, overwrite)
        self.out_dir = self.final_dir.with_name(f".{self.final_dir.name}.partial")
        self.device = next(self.model.parameters()).device
        world_dir = lm.world_dir

        # data: the method may define its own default forget corpus (DPO: forget-qa); a
        # packaged real model's "forget"/"retain" are its shipped real-knowledge corpora
        real_set = lm.meta.get("real_set") if world_dir is None else None
        forget_spec, retain_spec = (real_corpus(real_set, spec)
                                    for spec in (c.forget_corpus, c.retain_corpus))
        self.forget_texts = resolve_corpus(forget_spec, world_dir, "forget corpus")
        self.retain_texts = (resolve_corpus(retain_spec, world_dir, "retain corpus")
                             if retain_spec not in (None, "", "none") else None)
        self.forget_stream = TextBatches(self.forget_texts, self.tokenizer, c.batch_size,
                                         c.seq_len, c.seed, c.shuffle, c.padding_side)
        self.retain_stream = (TextBatches(self.retain_texts, self.tokenizer, c.batch_size,
                                          c.seq_len, c.seed + 1, c.shuffle, c.padding_side)
                              if self.retain_texts else None)

        # evaluation sets
        self.mcq: dict[str, Any] = {}
        for domain, given in (("forget", c.forget_mcq), ("retain", c.retain_mcq)):
            if given is not None:
                self.mcq[domain] = Path(given)
            elif world_dir is not None or real_set:
                self.mcq[domain] = lm.mcq_path(domain)
        self.eval_config = EvalConfig(scoring=c.eval_scoring or lm.default_scoring,
                                      batch_size=c.eval_batch_size)

        # seeded, then the method (draws its random vectors / δ here)
        torch.manual_seed(c.seed)
        self._requires_grad = {n: p.requires_grad for n, p in self.model.named_parameters()}
        for p in self.model.parameters():
            p.requires_grad_(False)
        try:
            self._build_method(c, params, world_dir)
        except BaseException:  # leave the caller's model as it was
            self.merge_adapters()
            disable_gradient_checkpointing(self.model)
            self._restore_requires_grad()
            raise
        self.step = 0
        self._metrics_fh = None

    def _build_method(self, c: UnlearnConfig, params: Any, world_dir: Path | None) -> None:
        reference = None
        if self.method_cls.reference == "full":  # shares all tensors until unshared below
            reference = frozen_copy(self.model, deep=c.frozen_reference == "deepcopy").eval()
        self.ctx = MethodContext(self.model, self.tokenizer, c, params, self.heads, reference,
                                 self.device, world_dir, getattr(self.lm, "eval_pool", None),
                                 self.eval_config, self.forget_texts,
                                 real_practice(self.lm.meta.get("real_set")
                                               if world_dir is None else None))
        self.method = self.method_cls(self.ctx)
        self.trainable = self.method.trainable()
        if not self.trainable:
            raise ValueError(f"method {c.method!r} selected no parameters to train")
        named = dict(self.model.named_parameters())
        for n, p in self.trainable.items():
            if named.get(n) is not p:
                raise AssertionError(f"{c.method}: trainable {n!r} is not the model's parameter")
        self.reference_copied = reference  # for the memory benchmark / tests
        # the reference copies what is trained (not with LoRA: base weights stay put)
        if reference is not None and c.frozen_reference == "shared" and not c.lora_rank:
            unshare(reference, self.model, self.trainable.values())
        self._lora_targets: list[str] = []
        if c.lora_rank:
            self.trainable, self._lora_targets = apply_lora(self.model, self.trainable,
                                                            c.lora_rank, c.lora_alpha)
        for p in self.trainable.values():
            p.requires_grad_(True)
        if c.gradient_checkpointing:
            enable_gradient_checkpointing(self.model)
        if self.dist.sharded and self.dist.engine == "fsdp":  # the model (and a full
            sharded.shard(self.model, self.dist)  # reference) sharded in place
            if reference is not None:
                sharded.shard(reference, self.dist, frozen=True)
            self.trainable = self.method.trainable()  # the sharded parameters
        self.optimizer = build_optimizer(c.optimizer, list(self.trainable.values()), c.lr,
                                         c.betas, c.adam_eps, c.weight_decay)
        if self.dist.sharded and self.dist.engine == "zero3":  # partitioned in place
            self.zero = zero.ZeroEngine(self.model, self.optimizer, reference, c, self.dist,
                                        self.micro_rows)
            self.optimizer = self.zero.optimizer
        self._w0 = weight_norm(self.trainable.values())  # the divergence guard's reference

    # -- pieces ------------------------------------------------------------------
    def evaluate(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {"forget": None, "retain": None}
        if not self.config.evaluate:
            return out
        for domain, path in self.mcq.items():
            out[domain] = evaluate_mcq(self.model, self.tokenizer, path,
                                       self.eval_config).accuracy
        return out

    def _log(self, record: dict[str, Any]) -> None:
        if self._metrics_fh is not None:
            self._metrics_fh.write(json.dumps(record) + "\n")
            self._metrics_fh.flush()

    def _check(self, terms: dict[str, Tensor], prefix: str = "",
               weights: dict[str, float] | None = None, raise_: bool = True
               ) -> dict[str, float]:
        values = {}
        for name, t in terms.items():
            v = float(t.detach().float().sum()) if isinstance(t, Tensor) else float(t)
            if raise_ and not math.isfinite(v):
                raise _NonFinite(prefix + name, v)
            values[prefix + name] = v * weights[name] if weights else v
        return values

    def train_step(self) -> dict[str, float]:
        """One step: the global forget/retain batches, split into this process's
        micro-batches (:mod:`.distributed`) -> loss terms weighted by their share ->
        backward -> values summed over processes and checked (a NaN/inf raises
        ``_NonFinite`` on every process, before touching the weights) -> gradients summed
        over processes and checked -> optimiser step -> the method's post-step (adversary,
        on the global batches). Returns the logged (global-batch) loss values."""
        self.step += 1
        forget = next(self.forget_stream).to(self.device)
        retain = next(self.retain_stream).to(self.device) if self.retain_stream else None
        self.optimizer.zero_grad(set_to_none=True)
        values: dict[str, float] = {}
        whole = self.dist.world == 1 and self.config.grad_accum == 1
        for fb, rb in micro_batches(forget, retain, self.dist, self.config.grad_accum):
            terms = self.method.loss_terms(self.step, fb, rb)
            shares = {k: 1.0 if whole else term_share(k, fb, rb) for k in terms}
            local = self._check(terms, weights=shares, raise_=whole)
            if self.dist.sharded:  # FSDP's backward has collectives: all processes or none
                summed = reduce_values(local, self.dist)
                if (bad := finite(summed)) is not None:
                    raise _NonFinite(bad, summed[bad])
            for k, v in local.items():
                values[k] = values.get(k, 0.0) + v
            if finite(local) is None:
                total = sum(t if whole else t * shares[k] for k, t in terms.items())
                self.zero.backward(total) if self.zero else total.backward()
        values = reduce_values(values, self.dist)
        if (bad := finite(values)) is not None:
            raise _NonFinite(bad, values[bad])
        params = list(self.trainable.values())
        if not self.dist.sharded:  # FSDP reduce-scattered (summed) them in the backward
            all_reduce_sum_([p.grad for p in params], self.dist)
        grads = self.zero.grads(params) if self.zero else [p.grad for p in params]
        if self.config.check_grads and not all_finite(grads, self.dist):
            bad = [n for n, g in zip(self.trainable, grads) if g is not None
                   and not bool(torch.isfinite(local_tensor(g)).all())]
            where = bad[0] if bad else "a shard on another process"
            raise _NonFinite(f"gradient of the total loss ({where})", float("nan"))
        if self.zero:  # DeepSpeed clips (--grad-clip) and steps
            self.zero.step()
        else:
            if self.config.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        check_weight_growth(weight_norm(self.trainable.values()), self._w0)
        post = self.method.post_step(self.step, forget, retain)
        try:
            values.update(self._check(post))
        except _NonFinite as err:
            err.after_update = True  # the θ update of this step had finite loss and grads
            raise
        values["total"] = float(sum(v for k, v in values.items() if k in terms))
        return values

    # -- the run -------------------------------------------------------------------
    def run(self) -> UnlearnResult:
        c = self.config
        main = self.dist.is_main  # only the main process writes
        self.out_dir = partial_dir(self.final_dir) if main else self.out_dir
        self._write_config()
        t0 = time.time()
        totals: list[float] = []
        try:
            with open(self.out_dir / METRICS_FILE if main else os.devnull, "w") as fh:
                self._metrics_fh = fh
                before = self.evaluate()
                self._log({"step": 0, "eval": before, **self.method.state_summary(),
                           **self._diagnostics()})
                bar = tqdm(range(1, c.max_num_batches + 1), desc=f"unlearn[{c.method}]",
                           disable=not (c.progress and main))
                for _ in bar:
                    try:
                        values = self.train_step()
                    except _NonFinite as err:
                        unusable = self._unusable(before)
                        ckpt = self._stop(
                            fh, "stopped_non_finite",
                            {"term": err.term, "weights": f"none kept: {unusable}" if unusable
                             else "after the θ update of this step" if err.after_update
                             else "before this step"},
                            {"error": "non-finite", "term": err.term, "value": str(err.value)},
                            steps_completed=self.step if err.after_update else self.step - 1,
                            keep_weights=unusable is None)
                        raise NonFiniteLossError(c.method, self.step, err.term, err.value,
                                                 ckpt) from None
                    except Diverged as err:
                        self._stop_diverged(fh, err.reason)
                    totals.append(float(values.get("forget", values.get(  # the forget term
                        "total", sum(values.values())))))
                    self._log({"step": self.step, "loss": values,
                               "seconds": round(time.time() - t0, 2)})
                    bar.set_postfix({k: f"{v:.3g}" for k, v in values.items()})
                    if c.eval_every and self.step % c.eval_every == 0 \
                            and self.step != c.max_num_batches:
                        ev = self.evaluate()
                        self._log({"step": self.step, "eval": ev, **self.method.state_summary(),
                                   **self._diagnostics()})
                        bar.write(f"[{c.method}] step {self.step}: "
                                  + " ".join(f"{k} {v:.3f}" for k, v in ev.items()
                                             if v is not None))
                        if why := retain_collapse(before["retain"], ev["retain"]):
                            self._stop_diverged(fh, why)
                after = self.evaluate()
                seconds = round(time.time() - t0, 1)
                final_diag = self._diagnostics(final=True)
                edit = edit_effect(totals, before, after)
                self._log({"step": self.step, "eval": after, "final": True, "seconds": seconds,
                           "edit": edit, **self.method.state_summary(), **final_diag})
                if why := retain_collapse(before["retain"], after["retain"]):
                    self._stop_diverged(fh, why)
        finally:
            self._metrics_fh = None
            self.method.close()
            self.merge_adapters()
            disable_gradient_checkpointing(self.model)
            self._restore_requires_grad()
        self.save()
        if final_diag and main:
            write_diagnostics(self.out_dir, self.config.method, self.step,
                              final_diag["diagnostics"])
        ckpt = self._publish()
        result = UnlearnResult(c.method, self.out_dir, ckpt, self.out_dir / CONFIG_FILE,
                               self.out_dir / METRICS_FILE, before, after, self.step, seconds,
                               json.loads(json.dumps(self._config_record())))
        if main:
            (self.out_dir / RESULT_FILE).write_text(
                json.dumps({**result.to_dict(), "edit": edit}, indent=1))
            warn_if_inert(c.method, edit, self.out_dir / RESULT_FILE)
        return result


class _NonFinite(Exception):
    def __init__(self, term: str, value: float):
        super().__init__(term)
        self.term, self.value = term, value
        self.after_update = False


__getattr__ = moved_getattr(__name__)  # names that moved to the pipeline (issue 17)
