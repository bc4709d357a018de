"""Data-parallel training over processes (``accelerate launch``, ``torchrun``), shared by
the unlearning trainer and the fine-tuning attack.

**One definition of the batch.** A config's ``batch_size`` is the *effective* (global)
batch: rows per optimiser step, whatever the number of processes. It is split into
``processes × grad_accum`` equal micro-batches (:func:`split_batch` raises
:class:`BatchSplitError` before any work when they do not divide it); every process draws
the same global batch from the same seeded stream and keeps its own rows, so the data a
step sees does not depend on the process count.

**Exact gradients.** A micro-batch's loss is scaled by its share of the global batch (see
:mod:`interp_unlearn.unlearn.distributed` for the normalisers) and the processes' gradients
are **summed** (:func:`all_reduce_sum_`), so one process, two processes and gradient
accumulation compute the same gradient up to float rounding (tested within 1e-5 on the
micro organism).

**Two engines.** ``replicate`` (a DDP launch): the model is replicated on every process
(no DDP wrapper: the RMU forwards call decoder layers directly, which a wrapper would not
see, so gradients are all-reduced explicitly after the backward pass; the cost is one
all-reduce of the *trained* parameters' gradients per step). ``fsdp`` (an FSDP launch,
``FULL_SHARD`` or ``SHARD_GRAD_OP``): the unlearning trainer shards the model with torch's
FSDP2 ``fully_shard`` (:mod:`interp_unlearn.unlearn.sharded`), which reduce-scatters the
gradients itself. ``zero3`` (a DeepSpeed launch, ZeRO stage 3): the trainer builds a
DeepSpeed engine itself (:mod:`interp_unlearn.unlearn.zero`); other stages and offloading
are refused in one line.

Everything here is torch only: any launcher that sets the ``torchrun`` variables works
(``accelerate launch --multi_gpu``, ``torchrun``, SLURM's ``srun`` with them exported).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch

__all__ = ["BatchSplitError", "DistEnv", "ENGINES", "ShardedEngineError", "all_finite",
           "check_zero3_env",
           "all_reduce_sum_", "barrier", "dist_env", "local_tensor", "row_slices",
           "split_batch", "unsharded"]

ENGINES = ("replicate", "fsdp", "zero3")


class BatchSplitError(ValueError):
    """The effective batch cannot be split evenly over processes × accumulation steps."""


class ShardedEngineError(RuntimeError):
    """The launcher asked for an engine or an engine option the code does not run
    (DeepSpeed other than ZeRO-3, offloading, hybrid sharding; a sharded attack)."""


@dataclass(frozen=True)
class DistEnv:
    """This process's place: ``rank`` of ``world`` processes, its ``device``, and the
    ``engine`` the launch asked for (``replicate``: DDP; ``fsdp``: FULL_SHARD /
    SHARD_GRAD_OP, with ``reshard_after_forward`` True for FULL_SHARD; ``zero3``:
    DeepSpeed ZeRO stage 3)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device | None = None
    engine: str = "replicate"
    reshard_after_forward: bool = True

    @property
    def sharded(self) -> bool:
        return self.distributed and self.engine in ("fsdp", "zero3")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def dist_env() -> DistEnv:
    """This process's place in the launch: the process group a launcher described
    (``accelerate launch --multi_gpu``, ``torchrun``: ``WORLD_SIZE`` > 1, ``RANK``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``), initialised here if nobody has -- NCCL on
    GPUs (process ``i`` on ``cuda:LOCAL_RANK``), gloo on CPUs (or with
    ``ACCELERATE_USE_CPU=1``); a single process otherwise. An FSDP launch
    (``ACCELERATE_USE_FSDP``) gives ``engine="fsdp"``, a DeepSpeed one
    (``ACCELERATE_USE_DEEPSPEED``) ``engine="zero3"``; raises :class:`ShardedEngineError`
    for the options of either that the trainer does not run."""
    dist = torch.distributed
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    initialised = dist.is_available() and dist.is_initialized()
    if world <= 1 and not initialised:
        return DistEnv()
    engine, reshard = "replicate", True
    if _true("ACCELERATE_USE_DEEPSPEED"):
        check_zero3_env()
        engine = "zero3"
    elif _true("ACCELERATE_USE_FSDP"):
        engine, reshard = "fsdp", _fsdp_reshard()
    cuda = torch.cuda.is_available() and \
        os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true")
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if cuda:
        torch.cuda.set_device(local)
    if not initialised:
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return DistEnv(dist.get_rank(), dist.get_world_size(), local,
                   torch.device("cuda", local) if cuda else torch.device("cpu"), engine, reshard)


def check_zero3_env() -> None:
    """Refuse (one line) the DeepSpeed launch options the trainer's ZeRO-3 engine
    (:mod:`interp_unlearn.unlearn.zero`) does not run; called by :func:`dist_env` before
    the process group exists."""
    env = os.environ
    stage = env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3") or "3"
    why = None
    if stage != "3":
        why = (f"ZeRO stage {stage} (only stage 3 is run; for replicated weights use "
               "ddp.yaml, for FSDP fsdp.yaml)")
    elif env.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "none").lower() not in ("", "none"):
        why = "a deepspeed_config_file (the trainer writes its own DeepSpeed config)"
    else:
        for var in ("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE",
                    "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE"):
            if env.get(var, "none").lower() not in ("", "none"):
                why = f"offloading ({var}={env[var]}): use more processes"
        for var, flag, fine in (("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "--grad-accum",
                                 ("", "none", "1")),
                                ("ACCELERATE_GRADIENT_CLIPPING", "--grad-clip", ("", "none"))):
            if env.get(var, "none").lower() not in fine and not why:
                why = f"accelerate's {var}={env[var]} (use the trainer's {flag})"
    if why:
        raise ShardedEngineError(f"the trainer's DeepSpeed ZeRO-3 does not run {why}; see "
                                 "interp_unlearn/assets/accelerate/zero3.yaml")


def _true(var: str) -> bool:
    return os.environ.get(var, "").lower() in ("1", "true", "yes")


def _fsdp_reshard() -> bool:
    """``reshard_after_forward`` from accelerate's FSDP variables; the options the
    trainer does not run raise :class:`ShardedEngineError` (one line, before any work)."""
    strategy = os.environ.get("FSDP_SHARDING_STRATEGY", "FULL_SHARD").upper()
    strategy = {"1": "FULL_SHARD", "2": "SHARD_GRAD_OP"}.get(strategy, strategy)
    if strategy not in ("FULL_SHARD", "SHARD_GRAD_OP"):
        raise ShardedEngineError(
            f"FSDP sharding strategy {strategy} is not supported: use FULL_SHARD or "
            "SHARD_GRAD_OP (fsdp_sharding_strategy / fsdp_reshard_after_forward)")
    for var, what, instead in (
            ("FSDP_OFFLOAD_PARAMS", "parameter offloading", "--optimizer paged_adamw8bit "
             "needs no FSDP; or more processes"),
            ("FSDP_ACTIVATION_CHECKPOINTING", "FSDP activation checkpointing",
             "--gradient-checkpointing")):
        if _true(var):
            raise ShardedEngineError(f"{what} ({var}=true) is not supported under the "
                                     f"trainer's FSDP: set it false and use {instead}")
    if "FSDP_RESHARD_AFTER_FORWARD" in os.environ:
        return _true("FSDP_RESHARD_AFTER_FORWARD")
    return strategy == "FULL_SHARD"


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """This process's shard of an FSDP (DTensor) tensor or of a ZeRO-3 parameter (its
    ``ds_tensor`` without the padding); any other tensor itself."""
    if hasattr(t, "ds_tensor"):
        flat = t.ds_tensor.reshape(-1)
        group = getattr(t, "ds_process_group", None)
        start = torch.distributed.get_rank(group) * flat.numel()
        return flat[:max(0, min(flat.numel(), t.ds_numel - start))]
    return t.to_local() if hasattr(t, "to_local") else t


def all_finite(tensors: Iterable[torch.Tensor | None], env: DistEnv) -> bool:
    """Whether every element of ``tensors`` (shards included) is finite on every process."""
    ok = all(bool(torch.isfinite(local_tensor(t)).all()) for t in tensors if t is not None)
    if not env.distributed:
        return ok
    flag = torch.tensor([0.0 if ok else 1.0], device=env.device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return float(flag) == 0.0


@contextmanager
def unsharded(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``module``'s own FSDP-sharded parameters gathered for a call that does not go
    through its ``forward`` (RMU's prefix calls ``model.model``: the embeddings live in
    the root's shard); resharded on exit. Nothing happens to a plain module."""
    if not hasattr(module, "unshard") or not hasattr(module, "reshard"):
        yield module
        return
    module.unshard()
    try:
        yield module
    finally:
        module.reshard()


def split_batch(batch_size: int, world: int, grad_accum: int) -> int:
    """Rows per micro-batch: ``batch_size / (world × grad_accum)``; raises
    :class:`BatchSplitError` (one line) when that is not a positive integer."""
    if isinstance(grad_accum, bool) or not isinstance(grad_accum, int) or grad_accum < 1:
        raise BatchSplitError(f"grad_accum must be a positive int, got {grad_accum!r}")
    parts = world * grad_accum
    if batch_size % parts:
        raise BatchSplitError(
            f"batch_size {batch_size} (the effective batch) is not divisible by "
            f"{world} process(es) x grad_accum {grad_accum} = {parts}; choose a batch_size "
            f"that is a multiple of {parts}")
    return batch_size // parts


def row_slices(n_rows: int, n_parts: int) -> list[slice]:
    """``n_rows`` split into ``n_parts`` contiguous slices as equal as possible (the
    first ``n_rows % n_parts`` get one more row; some are empty when ``n_rows <
    n_parts``, e.g. the short last batch of a pass)."""
    base, extra = divmod(n_rows, n_parts)
    out, start = [], 0
    for i in range(n_parts):
        stop = start + base + (1 if i < extra else 0)
        out.append(slice(start, stop))
        start = stop
    return out


def all_reduce_sum_(tensors: Iterable[torch.Tensor | None], env: DistEnv) -> None:
    """Sum ``tensors`` over the processes, in place (one flat all-reduce); ``None``
    entries are skipped; nothing happens in a single process."""
    if not env.distributed:
        return
    ts = [t for t in tensors if t is not None]
    if not ts:
        return
    flat = torch.cat([t.reshape(-1).float() for t in ts])
    torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
    offset = 0
    for t in ts:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t).to(t.dtype))
        offset += n


def barrier(env: DistEnv) -> None:
    if env.distributed:
        torch.distributed.barrier()
