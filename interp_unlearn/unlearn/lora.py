"""LoRA unlearning (issue 16): peft LoRA adapters on the modules whose weights the method
trains, merged into those weights when the run ends.

``UnlearnConfig.lora_rank = r`` (0: off) puts a rank-``r`` adapter ``W + (α/r)·B A`` on
every ``nn.Linear`` whose ``weight`` the method's :meth:`~.registry.UnlearnMethod.trainable`
selects (RMU: ``down_proj`` of ℓ−2..ℓ; GA/NPO ``all``: every linear layer). Other selected
tensors (norms, embeddings) are left frozen: a LoRA run trains only adapters. ``B`` starts
at zero, so step 0 is the original model; the optimiser sees only ``A`` and ``B``. At the
end the adapters are merged (``W ← W + (α/r)·B A``) and the plain ``nn.Linear`` modules put
back, so the checkpoint has exactly the model's own state-dict keys and the update of each
adapted matrix has rank ≤ r (a test checks both).

Memory: the optimiser's states and the gradients cover the adapters only, and no frozen
reference needs a copy of anything (the base weights do not change until the merge).
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["LoraUnavailableError", "apply_lora", "merge_lora"]


class LoraUnavailableError(ImportError):
    """LoRA unlearning was asked for where peft does not import."""


def _peft() -> Any:
    try:
        import peft
    except Exception as err:
        raise LoraUnavailableError(f"lora_rank > 0 needs peft, which does not import here "
                                   f"({type(err).__name__}); pip install peft, or set "
                                   "lora_rank 0") from None
    return peft


def lora_targets(model: nn.Module, trainable: dict[str, nn.Parameter]) -> list[str]:
    """Names of the ``nn.Linear`` modules whose ``weight`` is in ``trainable``."""
    chosen = {id(p) for p in trainable.values()}
    return [name for name, mod in model.named_modules()
            if isinstance(mod, nn.Linear) and id(mod.weight) in chosen]


def apply_lora(model: nn.Module, trainable: dict[str, nn.Parameter], rank: int,
               alpha: float | None) -> tuple[dict[str, nn.Parameter], list[str]]:
    """Inject rank-``rank`` adapters (scale ``alpha / rank``; ``alpha`` None: ``2·rank``)
    on the linear modules of ``trainable``; returns ``({name: adapter parameter}, the
    adapted module names)``. Raises ValueError when ``trainable`` holds no linear weight."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"lora_rank must be a positive int (0: no LoRA), got {rank!r}")
    targets = lora_targets(model, trainable)
    if not targets:
        raise ValueError(f"lora_rank {rank}: the method trains no nn.Linear weight "
                         f"({sorted(trainable)[:3]}...), so there is nothing to adapt")
    peft = _peft()
    cfg = peft.LoraConfig(r=rank, lora_alpha=float(2 * rank if alpha is None else alpha),
                          lora_dropout=0.0, bias="none", target_modules=targets)
    flags = {id(p): p.requires_grad for p in model.parameters()}
    peft.inject_adapter_in_model(cfg, model)
    adapters = {n: p for n, p in model.named_parameters() if ".lora_" in n}
    for p in model.parameters():  # peft may flip flags: the trainer owns them
        p.requires_grad_(flags.get(id(p), False))
    return adapters, targets


def merge_lora(model: nn.Module, targets: list[str]) -> None:
    """Merge each adapter into its base weight and put the plain module back."""
    for name in targets:
        mod = model.get_submodule(name)
        if not hasattr(mod, "base_layer"):
            continue
        mod.merge()
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, leaf, mod.get_base_layer())
