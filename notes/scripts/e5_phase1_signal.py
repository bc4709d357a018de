"""E5: does ALMPU's phase 1 carry signal? (``notes/e5_phase1_signal.md``)

For each condition (objective x lambda), phase 1 on the shipped organism with seeds 0,1,2
(``localize_seeds``, K = 4, LoFiT's optimiser), saved to ``OUT/{name}/`` (``seed{s}/``,
the mean-score top-4, ``stability.json``); then the causal check of the mean-score top-4
(``causal.ablation_table``: mean ablation, eval pools, 5 random draws of 4 heads outside
the selection) into ``OUT/causal.json``; then the figure and the two markdown tables.
Finished conditions and checks are reused. One torch thread.

    python notes/scripts/e5_phase1_signal.py --out /tmp/e5 \
        --figure notes/figures/e5_phase1_signal.png

Selection uses only the practice (and, for ``ans1e-4pa``, attack) pool; the eval pool is
scored by the causal check alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

CONDITIONS = {  # name: (objective, lambda, qa_pools, label)
    "corpus1e-3": ("corpus-ce", 1e-3, ("practice",), "corpus-ce λ=1e-3 (paper)"),
    "corpus1e-4": ("corpus-ce", 1e-4, ("practice",), "corpus-ce λ=1e-4"),
    "corpus0": ("corpus-ce", 0.0, ("practice",), "corpus-ce λ=0"),
    "ans1e-3": ("answer-ce", 1e-3, ("practice",), "answer-ce λ=1e-3"),
    "ans1e-4": ("answer-ce", 1e-4, ("practice",), "answer-ce λ=1e-4"),
    "ans0": ("answer-ce", 0.0, ("practice",), "answer-ce λ=0"),
    "ans1e-4pa": ("answer-ce", 1e-4, ("practice", "attack"), "answer-ce(+attack) λ=1e-4"),
    "para1e-3": ("paraphrase-ce", 1e-3, ("practice",), "paraphrase-ce λ=1e-3"),
    "para1e-4": ("paraphrase-ce", 1e-4, ("practice",), "paraphrase-ce λ=1e-4"),
    "para0": ("paraphrase-ce", 0.0, ("practice",), "paraphrase-ce λ=0"),
}
DEFAULT = "ans1e-4"


def run(out: Path, names: list[str]) -> None:
    from interp_unlearn.core.bridge import to_bridge
    from interp_unlearn.evaluation.causal import ablation_table
    from interp_unlearn.data.loading import load_model
    from interp_unlearn.localize import LocalizationResult, LocalizeConfig, localize_seeds
    from interp_unlearn.data.world import World

    lm = load_model("organism")
    world, bridge = World.load(lm.world_dir), to_bridge(lm.model, lm.tokenizer)
    causal_path = out / "causal.json"
    causal = json.loads(causal_path.read_text()) if causal_path.is_file() else {}
    for name in names:
        objective, lam, pools, _ = CONDITIONS[name]
        if not (out / name / "stability.json").is_file():
            cfg = LocalizeConfig(objective=objective, l1_lambda=lam, top_k=4, qa_pools=pools,
                                 seeds=(0, 1, 2))
            localize_seeds(bridge, lm.tokenizer, world, cfg, progress=False,
                           model_name="organism").save(out / name)
        if name not in causal:
            heads = LocalizationResult.load(out / name).selected
            tab = ablation_table(bridge, lm.tokenizer, lm.mcq_path("forget"),
                                 lm.mcq_path("retain"), heads, n_random=5, seed=0, mode="mean")
            causal[name] = {"heads": [list(h) for h in heads],
                            **tab.drop(columns="heads").set_index("condition").to_dict("index")}
            causal_path.write_text(json.dumps(causal, indent=1, default=float))
        print(name, "done", flush=True)


def tables(out: Path, names: list[str]) -> str:
    causal = json.loads((out / "causal.json").read_text())
    fmt = lambda lo, hi, f: f(lo) if f(lo) == f(hi) else f"{f(lo)}–{f(hi)}"  # noqa: E731
    lines = ["| condition | max score | max / dither | CE before → after | Spearman mean (min) "
             "| top-4 Jaccard mean (min) | top-4 | forget drop | retain drop | random forget "
             "drop ± sd |", "|" + "---|" * 10]
    for name in names:
        s = json.loads((out / name / "stability.json").read_text())
        ps = list(s["per_seed"].values())
        rng = lambda k, f: fmt(min(p[k] for p in ps), max(p[k] for p in ps), f)  # noqa: E731
        c = causal[name]
        lines.append(
            f"| {CONDITIONS[name][3]} | {rng('max_score', lambda v: f'{v:.2g}')} | "
            f"{rng('max_over_dither', lambda v: f'{v:.3g}')} | {ps[0]['ce_before']:.4g} → "
            f"{rng('ce_after', lambda v: f'{v:.4g}')} | {s['spearman']['mean']:.2f} "
            f"({s['spearman']['min']:.2f}) | {s['jaccard_top_k']['mean']:.2f} "
            f"({s['jaccard_top_k']['min']:.2f}) | {' '.join(f'({l},{h})' for l, h in c['heads'])}"
            f" | {c['selected']['forget_drop']:.3f} | {c['selected']['retain_drop']:.3f} | "
            f"{c['random']['forget_drop']:.3f} ± {c['random']['forget_acc_sd']:.3f} |")
    return "\n".join(lines)


def figure(out: Path, names: list[str], path: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from interp_unlearn.localize import LocalizationResult
    from interp_unlearn.plotting import save_figure
    from interp_unlearn.plotting.heatmap import score_grid

    lab = {n: CONDITIONS[n][3] for n in names}
    fig = make_subplots(rows=2, cols=2, horizontal_spacing=0.2, vertical_spacing=0.2,
                        subplot_titles=[f"(a) {CONDITIONS['corpus1e-3'][3]}: ‖A[l,h]‖₂, mean of 3 seeds",
                                        f"(b) {CONDITIONS[DEFAULT][3]} (default): ‖A[l,h]‖₂",
                                        "(c) seed-to-seed agreement (seeds 0,1,2)",
                                        "(d) causal check: mean-ablate the mean-score top-4"])
    for col, name in ((1, "corpus1e-3"), (2, DEFAULT)):
        r = LocalizationResult.load(out / name)
        g = score_grid(r.scores)
        fig.add_trace(go.Heatmap(z=g, zmin=0, zmax=g.max(), colorscale="Viridis", xgap=1, ygap=1,
                                 colorbar=dict(x=0.40 if col == 1 else 1.0, y=0.79, len=0.42,
                                               exponentformat="e", title="‖A‖₂")), row=1, col=col)
        fig.add_trace(go.Scatter(x=[h for _, h in r.selected], y=[l for l, _ in r.selected],
                                 mode="markers", showlegend=False,
                                 marker=dict(symbol="star", size=14, color="white",
                                             line=dict(color="black", width=1.5))), row=1, col=col)
        fig.update_yaxes(autorange="reversed", title_text="layer", dtick=1, row=1, col=col)
        fig.update_xaxes(title_text="head", dtick=1, row=1, col=col)
    st = {n: json.loads((out / n / "stability.json").read_text()) for n in names}
    causal = json.loads((out / "causal.json").read_text())
    x = [lab[n] for n in names]
    for key, label, colour in (("spearman", "Spearman (mean of pairs)", "#1b9e77"),
                               ("jaccard_top_k", "top-4 Jaccard (mean)", "#7570b3")):
        fig.add_trace(go.Bar(x=x, y=[st[n][key]["mean"] for n in names], name=label,
                             marker_color=colour), row=2, col=1)
    fig.update_yaxes(range=[0, 1.05], row=2, col=1)
    for key, label, colour in (("forget_drop", "top-4 ablated: forget drop", "#d95f02"),
                               ("retain_drop", "top-4 ablated: retain drop", "#e6ab02")):
        fig.add_trace(go.Bar(x=x, y=[causal[n]["selected"][key] for n in names], name=label,
                             marker_color=colour), row=2, col=2)
    fig.add_trace(go.Scatter(
        x=x, y=[causal[n]["random"]["forget_drop"] for n in names], mode="markers",
        error_y=dict(type="data", array=[causal[n]["random"]["forget_acc_sd"] for n in names]),
        marker=dict(symbol="line-ew-open", size=26, color="black", line=dict(width=3)),
        name="4 random heads: forget drop (mean ± sd, 5 draws)"), row=2, col=2)
    fig.update_yaxes(title_text="accuracy drop (eval pool)", row=2, col=2)
    fig.update_layout(width=1250, height=980, template="plotly_white", barmode="group",
                      legend=dict(orientation="h", y=-0.25), margin=dict(b=200),
                      title=dict(text="E5: does phase 1 carry signal? (shipped organism, seeds "
                                      "0-2, K = 4)", x=0.5))
    save_figure(fig, path.with_suffix(""), ("png",))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--conditions", default=",".join(CONDITIONS))
    p.add_argument("--figure", type=Path, default=None, help="PNG path (needs Chromium)")
    args = p.parse_args()
    torch.set_num_threads(1)
    names = [n for n in args.conditions.split(",") if n]
    bad = [n for n in names if n not in CONDITIONS]
    if bad:
        raise ValueError(f"unknown condition(s) {bad}; valid: {list(CONDITIONS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    run(args.out, names)
    print(tables(args.out, names))
    if args.figure is not None:
        figure(args.out, names, args.figure)


if __name__ == "__main__":
    main()
