"""Small, composable interventions on attention-head outputs (``blocks.{l}.attn.hook_z``).

One idea per module:

* :class:`HeadScale` -- LoFiT / ALMPU phase 1: ``z <- (1 + A[l]) * z`` (learnable ``A``).
* :class:`HeadPerturbation` -- ALMPU phase 2: ``z[:, :, h] <- z[:, :, h] + delta[l, h]``.
* :class:`HeadAblation` -- zero or mean ablation of given heads.
* :class:`HeadAdversary` / :class:`ResidualAdversary` -- the live latent adversary (per-row
  radii κ·E‖z‖, k projected steps, ``match``/``ce`` objectives, ‖δ‖/ε and gain
  diagnostics) shared by ALMPU, GA-MP, RMU-LAT and the head-restore attack.
* :func:`attach` -- ``with attach(bridge, *interventions):`` registers their hooks on a
  ``TransformerBridge`` and removes exactly those hooks on exit.
"""

from interp_unlearn.interventions.adversary import (HeadAdversary, LatentAdversary,
                                                    ResidualAdversary, measure_head_norms,
                                                    measure_resid_norms)
from interp_unlearn.interventions.attach import (Head, Intervention, attach, collect_hooks,
                                                 normalize_heads, validate_heads)
from interp_unlearn.interventions.head_ablation import (ABLATION_MODES, HeadAblation,
                                                        mean_head_outputs)
from interp_unlearn.interventions.head_perturbation import HeadPerturbation
from interp_unlearn.interventions.head_scale import HeadScale

__all__ = [
    "ABLATION_MODES",
    "Head",
    "HeadAblation",
    "HeadAdversary",
    "HeadPerturbation",
    "HeadScale",
    "Intervention",
    "LatentAdversary",
    "ResidualAdversary",
    "attach",
    "collect_hooks",
    "mean_head_outputs",
    "measure_head_norms",
    "measure_resid_norms",
    "normalize_heads",
    "validate_heads",
]
