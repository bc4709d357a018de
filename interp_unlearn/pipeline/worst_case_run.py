"""``interp-unlearn attack --kind worst-case``: the study, its tables and its figure.

See :mod:`interp_unlearn.attacks.worst_case` for what is searched and how the worst case is
chosen. Writes into ``out``: ``study.db``, ``worst_case_config.json``, ``trials.csv``,
``chosen.csv``, ``summary.json`` and the figure ``best_so_far`` (HTML + PNG).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from interp_unlearn.attacks.worst_case import WorstCaseConfig
from interp_unlearn.attacks.worst_case_study import WorstCaseResult, worst_case_attack

__all__ = ["run_worst_case", "summary_text", "worst_case_command"]


def run_worst_case(model: Any, out: str | Path, config: WorstCaseConfig | None = None, *,
                   twin: Any = None, original: Any = None, progress: bool = True,
                   formats: Sequence[str] = ("html", "png")) -> WorstCaseResult:
    """Run (or resume) the study in ``out`` and draw its best-so-far curve."""
    res = worst_case_attack(model, config, out=out, twin=twin, original=original,
                            progress=progress)
    if formats:
        from interp_unlearn.plotting import best_so_far, save_figure

        refs = res.summary["references_validation"]
        lines = {"unattacked": refs["target"]["forget"]}
        if "original" in refs:
            lines["original"] = refs["original"]["forget"]
        fig = best_so_far(res.trials, references=lines,
                          title=f"{Path(str(model)).name}: worst-case attacker, best so far")
        save_figure(fig, Path(out) / "best_so_far", formats)
    return res


def summary_text(res: WorstCaseResult) -> str:
    s = res.summary
    f = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [f"trials: {s['trials_complete']} complete, {s['trials_feasible']} within the "
             f"retain bound ({f(s['retain_bound'])})",
             f"validation forget: unattacked {f(s['references_validation']['target']['forget'])}"
             f", default recipe {f(s['default_validation_forget'])}"
             f"{'' if s.get('default_feasible', True) else ' (violates the retain bound)'}, best "
             f"{f(s['best_validation_forget'])}"]
    if "worst_case_forget" in s:
        lines.append(f"scored (eval pool, mean over seeds {s['eval_seeds']}): worst case "
                     f"{f(s['worst_case_forget'])} (retain {f(s['worst_case_retain'])}), "
                     f"mean of top {min(3, int(res.chosen['choice'].max()))} "
                     f"{f(s['top3_mean_forget'])}; twin floor "
                     f"{f(s.get('twin_worst_case_forget'))}")
    if s.get("inert"):
        lines.append(f"!!!!! INERT: {s['inert']}")
    return "\n".join(lines)


def worst_case_command(args: Any, formats: Sequence[str] = ("html", "png")
                       ) -> tuple[str | Path, dict[str, Any], str]:
    """The ``attack --kind worst-case`` handler: flags -> :class:`WorstCaseConfig`
    (validated before any model is loaded) -> :func:`run_worst_case`; returns
    ``(out, summary, text)``."""
    from interp_unlearn.pipeline.cli_common import default_out

    bad = [flag for flag, v in (("--samples", args.samples), ("--lr", args.lr),
                                ("--mode", args.mode), ("--kappa", args.kappa),
                                ("--epsilon", args.epsilon), ("--forget-mcq", args.forget_mcq),
                                ("--retain-mcq", args.retain_mcq), ("--no-floor", args.no_floor))
           if v not in (None, False)]
    if args.config != "lora" or args.data != "forget" or args.pool != "attack":
        bad.append("--config/--data/--pool")
    if bad:
        raise ValueError(f"{', '.join(bad)} do not apply to --kind worst-case (it searches the "
                         "family, lr, epochs, rank and N on the attack pool itself)")
    kw: dict[str, Any] = {"eval_seeds": tuple(args.seeds), "seed": int(args.seeds[0]),
                          "scoring": args.scoring}
    if args.trials is not None:
        kw["trials"] = args.trials
    if args.families is not None:
        kw["families"] = tuple(f.strip() for f in args.families.split(",") if f.strip())
    if args.retain_margin is not None:
        kw["retain_margin"] = args.retain_margin
    if args.heads is not None:
        from interp_unlearn.core.heads import parse_heads

        kw["heads"] = parse_heads(args.heads)
    config = WorstCaseConfig(**kw)  # validated before any model is loaded
    out = args.out or default_out("attack", args.model, args.kind)
    res = run_worst_case(args.model, out, config, twin=args.twin, original=args.original,
                         progress=not (args.quiet or args.json), formats=formats)
    return out, res.summary, summary_text(res)
