"""FSDP for the unlearning trainer (issue 16): what ``accelerate launch --config_file
interp_unlearn/assets/accelerate/fsdp.yaml`` runs.

The trainer does not hand the model to accelerate's ``Accelerator``: RMU's forwards call
decoder layers directly (and its prefix calls ``model.model``), which a wrapper around the
whole model would not see. It shards the model itself with torch's FSDP2
``fully_shard`` (:func:`shard`):

* one FSDP unit per decoder layer plus the root (embeddings, final norm, ``lm_head``);
  ``reshard_after_forward`` = FULL_SHARD (True) or SHARD_GRAD_OP (False);
* a decoder layer called directly gathers its own parameters (FSDP2's hooks sit on the
  layer); the root's parameters are gathered explicitly where a call bypasses the root's
  ``forward`` (:func:`~interp_unlearn.core.distributed.unsharded`, RMU's prefix);
* the gradient divide factor is 1: the trainer already weights every micro-batch by its
  share of the global batch, so reduce-scatter *sums* -- the same arithmetic as the
  replicated engine's all-reduce, hence the same weights (tested within 1e-5 on CPU with
  two processes for RMU, ALMPU and NPO);
* the frozen reference of NPO / DPO / GA-MP / ALMPU / RMU-LAT is sharded the same way
  (frozen); RMU's frozen blocks ℓ−2..ℓ are built before sharding and stay whole on every
  process (three blocks: 0.65B parameters on Zephyr-7B);
* the checkpoint is gathered into one full state dict (every process takes part, the main
  process writes it).

Not run under FSDP (refused before any work by :func:`check_supported`): LoRA (its
adapters are small: use the DDP config), the bitsandbytes optimisers (they do not take
sharded tensors), NPO-SAM (its SAM step differentiates with ``autograd.grad``, which
bypasses FSDP's gradient reduction) and RMU's ``fast_forward=False`` full-copy path.
After the run the in-memory model stays sharded; load the checkpoint to use it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from interp_unlearn.core.arch import decoder_layers
from interp_unlearn.core.distributed import DistEnv, ShardedEngineError

__all__ = ["check_supported", "full_state_dict", "shard"]


def check_supported(config: Any, method: str, params: Any) -> None:
    """Raise :class:`ShardedEngineError` (one line) for what the FSDP trainer does not run."""
    why = None
    if config.lora_rank:
        why = "--lora-rank (LoRA adapters are small: use the DDP config ddp.yaml)"
    elif config.optimizer != "adamw":
        why = f"--optimizer {config.optimizer} (bitsandbytes does not take sharded tensors)"
    elif method == "npo_sam":
        why = "method npo_sam (its SAM step bypasses FSDP's gradient reduction)"
    elif getattr(params, "fast_forward", True) is False:
        why = "fast_forward=False (a full unsharded frozen copy)"
    if why:
        raise ShardedEngineError(f"FSDP does not run {why}; launch with ddp.yaml instead")


def shard(model: nn.Module, env: DistEnv, frozen: bool = False) -> nn.Module:
    """Shard ``model`` in place (one unit per decoder layer + the root) over ``env``'s
    processes, gradients summed, and initialise FSDP with one root forward (so that later
    direct layer calls are not taken for roots). ``frozen``: a reference (no gradients)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard

    mesh = init_device_mesh(env.device.type, (env.world,))
    kw = dict(mesh=mesh, reshard_after_forward=env.reshard_after_forward)
    for layer in decoder_layers(model):
        fully_shard(layer, **kw)
    fully_shard(model, **kw)
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)  # a plain SUM (gloo has no PREMUL_SUM)
            m.set_force_sum_reduction_for_comms(True)
    if frozen:
        model.eval()
    device = env.device
    with torch.no_grad():
        model(input_ids=torch.zeros((1, 2), dtype=torch.long, device=device), use_cache=False)
    return model


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The sharded ``model``'s full state dict on CPU (a collective: every process calls
    it; every process gets it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                cpu_offload=True))
