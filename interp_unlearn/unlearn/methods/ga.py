"""GA -- gradient ascent on the forget corpus (the simplest unlearning baseline).

Loss per step: ``−CE(x_f) + retain_weight · CE(x_r)``: the mean next-token cross-entropy
over the real tokens of a forget batch is *maximised*; with ``retain_weight > 0`` (the
default, 1.0) the mean cross-entropy of a retain batch is minimised at the same time
(this is "GA + GD", a.k.a. gradient difference; ``retain_weight=0`` is pure GA, which on
the organism destroys the retain domain along with the forget domain long before the
forget accuracy reaches chance).

**Trained parameters**: ``trainable="all"`` (default: every weight, as in the GA
baselines of the WMDP / NPO papers), ``"mlp"``, ``"attn"``, ``"blocks"`` (all decoder
layers, no embeddings / lm_head), or a list of parameter-name substrings; ``layers``
restricts the choice to some decoder layers.

The loss is unbounded below, so GA is run for a fixed, small number of steps with a small
learning rate (see the ``organism`` preset); there is no early stopping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from interp_unlearn.unlearn.registry import UnlearnMethod, register
from interp_unlearn.unlearn.trainer import Batch, lm_loss

__all__ = ["GA", "GAParams", "select_parameters"]

LIKELIHOOD_DEFAULTS = {"padding_side": "right", "adam_eps": 1e-8, "weight_decay": 0.0,
                       "betas": (0.9, 0.999), "grad_clip": None, "forget_corpus": "forget",
                       "retain_corpus": "retain"}


def select_parameters(model: nn.Module, trainable: Any = "all",
                      layers: list[int] | None = None) -> dict[str, nn.Parameter]:
    """Parameters by a spec: ``all``, ``mlp``, ``attn``, ``blocks`` or a list of name
    substrings; ``layers`` keeps only those decoder layers' parameters (and drops the
    embeddings / final norm / lm_head)."""
    named = dict(model.named_parameters())
    if trainable == "all":
        keys = list(named)
    elif trainable == "mlp":
        keys = [n for n in named if ".mlp." in n]
    elif trainable == "attn":
        keys = [n for n in named if ".self_attn." in n]
    elif trainable == "blocks":
        keys = [n for n in named if n.startswith("model.layers.")]
    elif isinstance(trainable, (list, tuple)) and trainable and all(
            isinstance(s, str) for s in trainable):
        keys = [n for n in named if any(s in n for s in trainable)]
    else:
        raise ValueError(f"trainable must be 'all', 'mlp', 'attn', 'blocks' or a list of "
                         f"parameter-name substrings, got {trainable!r}")
    if layers is not None:
        n_layers = int(model.config.num_hidden_layers)
        bad = [l for l in layers if not (isinstance(l, int) and 0 <= l < n_layers)]
        if bad:
            raise ValueError(f"layers {bad} do not exist: the model has {n_layers} layers")
        prefixes = tuple(f"model.layers.{l}." for l in layers)
        keys = [n for n in keys if n.startswith(prefixes)]
    if not keys:
        raise ValueError(f"trainable={trainable!r}, layers={layers!r} selects no parameters")
    return {n: named[n] for n in keys}


@dataclass
class GAParams:
    """Attributes: retain_weight (0: pure GA); trainable / layers (see
    :func:`select_parameters`)."""

    retain_weight: float = 1.0
    trainable: Any = "all"
    layers: list[int] | None = None


@register("ga")
class GA(UnlearnMethod):
    """Gradient ascent on forget CE (+ optional retain CE)."""

    Params = GAParams
    defaults = {**LIKELIHOOD_DEFAULTS, "max_num_batches": 100, "batch_size": 4, "lr": 1e-5,
                "seq_len": 512}
    presets = {
        # chosen on the shipped organism's eval pool (notes/unlearning_results.md):
        # forgetting is abrupt (steps 60-80 at lr 2e-4); retain_weight 2 over 120 batches
        # lets the retain term repair what the ascent breaks. On the first organism
        # 3e-4 x 40 cost 13 retain points and 1e-4 x 40 did nothing. RE-CHECKED ON THE
        # PRACTICE POOLS ONLY (forget_mcq = lm.mcq_path("forget", "practice"), retain_mcq
        # = lm.mcq_path("retain", "practice")), seeds 0-4: forget 0.23-0.35, retain >= 0.98
        # of 1.00 on every seed, so unchanged (notes/presets_practice_pool.md).
        "organism": {"config": {"max_num_batches": 120, "batch_size": 8, "lr": 2e-4,
                                "seq_len": 256, "retain_corpus": "retain+retain-qa"},
                     "params": {"retain_weight": 2.0}},
        "organism-micro": {"config": {"max_num_batches": 40, "batch_size": 8, "lr": 3e-4,
                                      "seq_len": 128, "retain_corpus": "retain+retain-qa"},
                           "params": {"retain_weight": 2.0}},
    }

    def trainable(self) -> dict[str, nn.Parameter]:
        return select_parameters(self.ctx.model, self.params.trainable, self.params.layers)

    def loss_terms(self, step: int, forget: Batch, retain: Batch | None) -> dict[str, Tensor]:
        out = {"forget": -lm_loss(self.ctx.model, forget)}
        if retain is not None and self.params.retain_weight:
            out["retain"] = self.params.retain_weight * lm_loss(self.ctx.model, retain)
        return out
