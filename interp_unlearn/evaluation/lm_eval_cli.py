"""lm-eval's command line with the ``interp_unlearn`` model type registered.

lm-eval 0.4.13 looks ``--model`` up in its own registry and loads no plugins, so the
plain ``lm_eval`` command cannot see ``interp_unlearn``. This wrapper imports
:mod:`interp_unlearn.evaluation.lm_eval_model` (which registers it) and then runs lm-eval's own CLI
(``lm_eval.__main__.cli_evaluate``) on the same arguments; everything lm-eval accepts
works unchanged::

    python -m interp_unlearn.evaluation.lm_eval_cli --model interp_unlearn \\
        --model_args path=organism-micro --tasks organism_wmdp --include_path TASK_DIR \\
        --device cpu --batch_size 8 --output_path results/
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    import interp_unlearn.evaluation.lm_eval_model  # noqa: F401  registers --model interp_unlearn
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:  # lm-eval's parser reads sys.argv itself
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
