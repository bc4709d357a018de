"""Evaluation: MCQ scoring identical to lm-eval (``scoring``), the logit lens, the causal
ablation check, the adversary gain, and lm-eval's model type and task."""
