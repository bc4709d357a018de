"""Small, composable interventions on attention-head outputs (``blocks.{l}.attn.hook_z``).

One idea per module:

* :class:`HeadScale` -- LoFiT / ALMPU phase 1: ``z <- (1 + A[l]) * z`` (learnable ``A``).
* :class:`HeadPerturbation` -- ALMPU phase 2: ``z[:, :, h] <- z[:, :, h] + delta[l, h]``.
* :class:`HeadAblation` -- zero or mean ablation of given heads.
* :func:`attach` -- ``with attach(bridge, *interventions):`` registers their hooks on a
  ``TransformerBridge`` and removes exactly those hooks on exit.
"""

from .attach import Head, Intervention, attach, collect_hooks, normalize_heads, validate_heads
from .head_ablation import ABLATION_MODES, HeadAblation, mean_head_outputs
from .head_perturbation import HeadPerturbation
from .head_scale import HeadScale

__all__ = [
    "ABLATION_MODES",
    "Head",
    "HeadAblation",
    "HeadPerturbation",
    "HeadScale",
    "Intervention",
    "attach",
    "collect_hooks",
    "mean_head_outputs",
    "normalize_heads",
    "validate_heads",
]
