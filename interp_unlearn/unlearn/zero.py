"""DeepSpeed ZeRO-3 for the unlearning trainer (issue 16): what ``accelerate launch
--config_file interp_unlearn/assets/accelerate/zero3.yaml`` runs.

As under FSDP (:mod:`.sharded`), the trainer does not hand the model to accelerate's
``Accelerator``; it builds the DeepSpeed engine itself (:func:`initialize`) from the
variables accelerate exports, with a config of its own (:func:`ds_config`):

* **partitioning** -- ZeRO stage 3, every parameter partitioned
  (``stage3_param_persistence_threshold`` 0), no offload, no prefetching and no
  communication overlap (RMU's direct calls do not follow the module order ZeRO records;
  not tuned for speed, run on CPU only so far); the optimiser is the trainer's own
  ``torch.optim.AdamW`` over the trained parameters (ZeRO keeps its states and the fp32
  master partitions; bf16 weights get DeepSpeed's fp32 master weights, unlike a
  one-process bf16 run). ZeRO-3's gather hooks sit on every submodule, so RMU's direct
  decoder-layer calls and its ``model.model`` prefix gather what they use (tested).
* **exact gradients** -- the trainer weights every micro-batch by its share of the global
  batch and wants the gradients *summed* over processes and micro-batches. DeepSpeed
  averages over the data-parallel processes: the loss handed to ``engine.backward`` is
  multiplied by the process count (exact for a power of two), with ``scale_wrt_gas=False``
  and ``managed_gradient_accumulation=False`` (every backward reduce-scatters and
  accumulates into the gradient partitions; ``engine.step()`` is the trainer's step, once
  per global batch). Same weights as one process (tested within 1e-5 on CPU, two
  processes, RMU, ALMPU, NPO with gradient checkpointing).
* **guards** -- the weight-growth norm, the gradient and weight finiteness checks read
  the local partitions (``ds_tensor``, ``safe_get_local_grad``) and reduce one flag / one
  vector over the processes, so every process makes the same decision; ``--grad-clip`` is
  DeepSpeed's ``gradient_clipping`` (the same ``max / (norm + 1e-6)`` rule as torch's).
* **references** -- ZeRO-3 partitions parameters *in place*, so nothing may share a
  Parameter object with the model: the run uses ``frozen_reference="deepcopy"``. A full
  reference (NPO, DPO, GA-MP, ALMPU, RMU-LAT) is a deep copy partitioned as a second
  engine without optimiser (1/N of a model per process, as FSDP's); RMU's frozen blocks
  ℓ−2..ℓ are deep copies taken before partitioning and stay whole on every process
  (three decoder layers: 0.65B parameters on Zephyr-7B).
* **checkpoint** -- the parameters are gathered one at a time; the main process keeps a
  CPU copy of each and writes them with ``save_pretrained(state_dict=...)``. After the run
  the in-memory model stays partitioned: load the checkpoint to use it.

Refused before any work (:class:`~interp_unlearn.core.distributed.ShardedEngineError`,
one line): ZeRO stages other than 3 (use ``fsdp.yaml`` / ``ddp.yaml``), offloading, a
``deepspeed_config_file`` (the trainer writes the config), accelerate's
``gradient_accumulation_steps`` / ``gradient_clipping`` (use ``--grad-accum`` /
``--grad-clip``), fp16 weights (loss scaling); and, as under FSDP, LoRA, the bitsandbytes
optimisers, NPO-SAM (its SAM step bypasses the gradient reduction) and RMU's
``fast_forward=False``. The fine-tuning attack refuses a sharded launch.
"""

from __future__ import annotations

import dataclasses
import os
from importlib import import_module
from typing import Any

import torch
from torch import nn

from interp_unlearn.core.distributed import (DistEnv, ShardedEngineError,  # noqa: F401
                                             check_zero3_env as check_env, local_tensor)

__all__ = ["ZeroEngine", "check_env", "check_supported", "ds_config", "full_state_dict",
           "weight_norm"]


def check_supported(config: Any, method: str, params: Any) -> Any:
    """Raise :class:`ShardedEngineError` (one line) for what the ZeRO-3 trainer does not
    run; returns ``config`` with ``frozen_reference="deepcopy"`` (nothing may share a
    Parameter object with a ZeRO-3 model)."""
    why = None
    if config.lora_rank:
        why = "--lora-rank (LoRA adapters are small: use the DDP config ddp.yaml)"
    elif config.optimizer != "adamw":
        why = (f"--optimizer {config.optimizer} (a bitsandbytes optimiser: DeepSpeed owns "
               "the optimiser's partitions)")
    elif method == "npo_sam":
        why = "method npo_sam (its SAM step bypasses ZeRO's gradient reduction)"
    elif getattr(params, "fast_forward", True) is False:
        why = "fast_forward=False (a full unpartitioned frozen copy)"
    if why:
        raise ShardedEngineError(f"DeepSpeed ZeRO-3 does not run {why}; launch with "
                                 "ddp.yaml instead")
    return dataclasses.replace(config, frozen_reference="deepcopy")


def ds_config(config: Any, env: DistEnv, micro_rows: int, dtype: torch.dtype,
              optimizer: bool = True) -> dict[str, Any]:
    """The DeepSpeed config of the trainer's engine (``optimizer`` False: a frozen
    reference)."""
    if dtype == torch.float16:
        raise ShardedEngineError("DeepSpeed ZeRO-3 does not run fp16 weights (loss scaling "
                                 "changes the arithmetic): load the model in bf16 or fp32")
    out: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_rows,
        "gradient_accumulation_steps": config.grad_accum,
        "train_batch_size": micro_rows * config.grad_accum * env.world,
        "managed_gradient_accumulation": False,  # the trainer's step is the boundary
        "gradient_clipping": float(config.grad_clip or 0.0),
        "zero_optimization": {"stage": 3, "overlap_comm": False,
                              "stage3_param_persistence_threshold": 0,
                              "stage3_prefetch_bucket_size": 0},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2 ** 62,
        "wall_clock_breakdown": False,
    }
    if dtype == torch.bfloat16:  # DeepSpeed keeps fp32 master weights and states
        out["bf16"] = {"enabled": True}
    if not optimizer:
        for k in ("gradient_clipping", "managed_gradient_accumulation"):
            out.pop(k)
    return out


def _deepspeed(env: DistEnv) -> Any:
    cpu = env.device is not None and env.device.type == "cpu"
    if cpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    try:
        import deepspeed
    except ImportError as err:  # pragma: no cover - the extra is not installed
        raise ShardedEngineError("a DeepSpeed launch needs deepspeed: pip install "
                                 "'interp-unlearn[deepspeed]'") from err
    if cpu:  # gloo for every collective: no C++ build of DeepSpeed's shared-memory op
        import_module("deepspeed.comm.torch").build_shm_op = lambda: None
    return deepspeed


class ZeroEngine:
    """The model (and a full reference) partitioned by DeepSpeed ZeRO-3, and the pieces of
    the trainer's step that differ from the other engines."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 reference: nn.Module | None, config: Any, env: DistEnv, micro_rows: int):
        ds = _deepspeed(env)
        dtype = next(model.parameters()).dtype
        self.env = env
        self.engine, self.optimizer, _, _ = ds.initialize(
            model=model, optimizer=optimizer,
            config=ds_config(config, env, micro_rows, dtype))
        self.reference_engine = None
        if reference is not None:
            self.reference_engine = ds.initialize(
                model=reference, config=ds_config(config, env, micro_rows, dtype, False))[0]
            reference.eval()

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagate ``loss``; the partitions receive the processes' SUM (DeepSpeed
        divides by the process count, the loss is multiplied by it)."""
        self.engine.backward(loss * self.env.world, scale_wrt_gas=False)
        # what engine.forward does at its start (the trainer calls the module itself): the
        # next backward accumulates into the gradient partitions instead of overwriting them
        self.optimizer.clear_backward_seen_flag()

    def grads(self, params: list[nn.Parameter]) -> list[torch.Tensor | None]:
        """This process's partitions of the (summed) gradients of ``params``."""
        from deepspeed.utils import safe_get_local_grad

        return [safe_get_local_grad(p) for p in params]

    def step(self) -> None:
        """The optimiser step (DeepSpeed's clipping first, when ``--grad-clip``)."""
        self.engine.step()
        self.optimizer.zero_grad(set_to_none=True)


def weight_norm(params: list[torch.Tensor]) -> float:
    """The L2 norm of ZeRO-3-partitioned ``params``: one squared norm per local partition,
    summed over the processes in one all-reduce (every process calls this)."""
    sq = torch.stack([torch.linalg.vector_norm(local_tensor(p.detach())).double() ** 2
                      for p in params])
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(sq, op=torch.distributed.ReduceOp.SUM)
    return float(sq.sum().sqrt())


@torch.no_grad()
def full_state_dict(model: nn.Module, env: DistEnv) -> dict[str, torch.Tensor] | None:
    """``model``'s full state dict on CPU, on the main process (``None`` on the others);
    the parameters are gathered one at a time (a collective: every process calls it)."""
    from deepspeed.runtime.zero.partition_parameters import GatheredParameters

    gathered: dict[int, torch.Tensor] = {}
    for p in model.parameters():
        with GatheredParameters([p], modifier_rank=None):
            if env.is_main:
                gathered[id(p)] = p.data.detach().to("cpu", copy=True)
    if not env.is_main:
        return None
    return {k: gathered[id(v)] if id(v) in gathered else v.detach().cpu()
            for k, v in model.state_dict(keep_vars=True).items()}
