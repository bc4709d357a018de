"""Attacks that try to recover unlearned knowledge, and the relearning floor.

Every attack takes a checkpoint (built-in name, directory or ``LoadedModel``; never
modified), ``N`` attack samples (0 = unattacked) and a seed, and returns an
:class:`~interp_unlearn.attacks.common.AttackResult` scored with the evaluator
(:mod:`interp_unlearn.evaluation.scoring`):

* :func:`finetune_attack` -- LoRA (Łucki et al.) or full (Fan et al.) fine-tuning;
* :func:`quantize_attack` -- int8 / 4-bit round-to-nearest weight quantization;
* :func:`orthogonalize_attack` -- project the unlearned-minus-original direction out;
* :func:`head_restore_attack` -- train only the selected heads (weights or a delta);
* :func:`in_context_attack` -- attack documents in the prompt.

:func:`run_floor` / :func:`run_attack` attack the target, the never-learned twin and the
original alike and report accuracy, UE and recovery; :func:`summarize` gives the mean
and 95 % t-interval over seeds.
"""

from interp_unlearn.attacks.common import (AttackResult, attack_corpus, checkpoint_digest,
                                           related_models, sample_texts)
from interp_unlearn.attacks.finetune import (FINETUNE_PRESETS, FinetuneAttackConfig,
                                             finetune_attack)
from interp_unlearn.attacks.floor import (ATTACKS, add_recovery, run_attack, run_floor,
                                          summarize, t_interval)
from interp_unlearn.attacks.head_restore import head_restore_attack
from interp_unlearn.attacks.in_context import evaluate_with_prefix, in_context_attack
from interp_unlearn.attacks.orthogonalize import orthogonalize_attack
from interp_unlearn.attacks.quantize import quantize_attack, quantize_model_, quantize_weight

__all__ = [
    "ATTACKS",
    "FINETUNE_PRESETS",
    "AttackResult",
    "FinetuneAttackConfig",
    "add_recovery",
    "attack_corpus",
    "checkpoint_digest",
    "evaluate_with_prefix",
    "finetune_attack",
    "head_restore_attack",
    "in_context_attack",
    "orthogonalize_attack",
    "quantize_attack",
    "quantize_model_",
    "quantize_weight",
    "related_models",
    "run_attack",
    "run_floor",
    "sample_texts",
    "summarize",
    "t_interval",
]
