"""The unlearning methods, one module each, registered by name in
:mod:`interp_unlearn.unlearn.registry` (imported on first use)."""
