"""ALMPU phase 1: find the attention heads most sensitive to the forget data (LoFiT's step 1).

Every head ``(l, h)`` gets a learnable vector ``A[l, h]`` in ``R^{d_head}`` that scales its
output, ``z <- (1 + A) * z`` at ``blocks.{l}.attn.hook_z`` (:class:`HeadScale`). With all
model weights frozen, ``A`` is trained with

    loss = CE(objective tokens) + lambda * sum_{l,h,i} |A[l, h, i]|

(paper eq. 3; the L1 term is LoFiT's un-normalised sum over every element of every head).
A head's score is ``S(l, h) = ||A[l, h]||_2`` and the top-K heads are selected
(:func:`interp_unlearn.core.selection.select_heads`).

Defaults (:class:`LocalizeConfig`) are LoFiT's, from ``protocols.md`` section 2 and its
trainer (``fc2869/lo-fit``: ``lofit_trainer.py`` + ``utils/trainers.py``, which run the
Hugging Face ``Trainer`` with its defaults):

* ``A ~ N(0, sigma_A = 1e-3)``; ``lambda = 1e-3``; ``lr = 5e-3`` (its scripts use
  lambda in {5e-4, 1e-3, 5e-3} and lr in {5e-4, 5e-3}); 5 epochs; batch 8.
* AdamW (betas 0.9/0.999, eps 1e-8, weight decay 0), linear decay of the learning rate to
  0 over the run without warm-up, gradient-norm clipping at 1.0 -- the HF ``Trainer``
  defaults LoFiT inherits.
* K: LoFiT's default is 10 % of all heads (``int(0.1 * n_layers * n_heads)``); the
  shipped organism uses K = 4 (:mod:`interp_unlearn.data.families`).

The objective (``LocalizeConfig.objective``, :mod:`.data`):

* ``corpus-ce`` -- the paper's: CE on every token of the forget corpus (WMDP's bio forget
  corpus; here the world's forget documents). The default for real models given texts.
* ``answer-ce`` -- LoFiT's own: CE on the answer tokens of Q/A lines (the world's forget
  Q/A of ``qa_pools``, practice by default and never eval; or given Q/A texts).
* ``paraphrase-ce`` -- answer-token CE on Q/A in question phrasings no corpus contains
  (generated from the world), so the organism has not memorised them.
* ``auto`` (default) -- :data:`ORGANISM_OBJECTIVE` for a synthetic world, ``corpus-ce``
  for texts.

Deviation from the paper, on purpose, for organisms (``notes/e5_phase1_signal.md``, seeds
0-2, K = 4). The organism memorised its forget corpus (CE 0.082 nats), so under
``corpus-ce`` with lambda = 1e-3 no head's ``||A||`` rises above Adam's dither scale
``last_lr * sqrt(d_head)`` (max/dither 1.8-2.4) and the ranking changes from seed to seed
(Spearman 0.40, top-4 Jaccard 0.36). Of ten objective x lambda variants only ``answer-ce``
on the practice Q/A with lambda = 1e-4 (the organism preset,
:mod:`interp_unlearn.data.families`) is both reproducible (Spearman 0.98, Jaccard 0.73, scores
~2,600x the dither) and causal (mean-ablating its top-4 costs 0.273 forget accuracy vs
0.064 for 4 random heads). Stable is not enough: ``corpus-ce`` at lambda <= 1e-4 and
``answer-ce`` at lambda = 0 are reproducible but their heads matter less than random ones,
and ``paraphrase-ce`` finds phrasing heads.

Other deliberate deviations:

* ``seq_len`` (default 512, RMU's truncation of forget texts) truncates each text; it
  is lowered to the model's context length when that is shorter.
* ``seed`` defaults to 0 (LoFiT's scripts use 42). ``seeds`` runs phase 1 once per seed
  and selects the top-K of the mean score (:func:`localize_seeds`), with
  ``stability.json`` (:mod:`.stability`).
* The forward pass runs through a TransformerLens ``TransformerBridge`` (eager attention;
  its logits equal HF eager exactly), not LoFiT's patched HF modules. ``backend="nnsight"``
  runs it through nnsight instead (:mod:`interp_unlearn.interventions.nnsight_backend`: the same scaling
  at the input of the attention output projection, for architectures TransformerLens
  does not cover); init, batches, optimiser and loss are shared, only the forward differs.
"""

from __future__ import annotations

from interp_unlearn.localize.config import (BACKENDS, OBJECTIVES, ORGANISM_OBJECTIVE, QA_POOLS,
                                            LocalizeConfig, check_seeds, resolve_objective)
from interp_unlearn.localize.core import (CONFIG_FILE, HEADS_FILE, HISTORY_FILE, SCORES_FILE,
                                          LocalizationResult, localize, scores_frame)
from interp_unlearn.localize.data import (PARAPHRASE_QUESTIONS, _collate, _tokenize,
                                          causal_lm_loss, collate_rows, forget_qa,
                                          paraphrase_qa, qa_rows)
from interp_unlearn.localize.stability import (STABILITY_FILE, MultiSeedLocalization, jaccard,
                                               localize_seeds, scale_report, spearman,
                                               stability_report, write_stability)
from interp_unlearn._compat import moved_getattr

__all__ = [
    "BACKENDS",
    "CONFIG_FILE",
    "HEADS_FILE",
    "HISTORY_FILE",
    "OBJECTIVES",
    "ORGANISM_OBJECTIVE",
    "PARAPHRASE_QUESTIONS",
    "QA_POOLS",
    "SCORES_FILE",
    "STABILITY_FILE",
    "LocalizationResult",
    "LocalizeConfig",
    "MultiSeedLocalization",
    "causal_lm_loss",
    "check_seeds",
    "collate_rows",
    "forget_qa",
    "jaccard",
    "localize",
    "localize_seeds",
    "paraphrase_qa",
    "qa_rows",
    "resolve_objective",
    "scale_report",
    "scores_frame",
    "spearman",
    "stability_report",
    "write_stability",
]


__getattr__ = moved_getattr(__name__)  # run_localize / FIGURE_STEM moved to the pipeline (issue 17)

# ``iu.localize(model, ...)``: calling this subpackage calls the front door's verb
from interp_unlearn._compat import make_callable  # noqa: E402

make_callable(__name__, "localize")
