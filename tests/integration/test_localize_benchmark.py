"""``localize-benchmark`` (issue 14 item 3): the planted ground truth is verified by
ablation, every method is scored against it, and bad input fails before any work."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from interp_unlearn.data.loading import load_model
from interp_unlearn.pipeline.cli import main
from interp_unlearn.pipeline.localize_benchmark import (METHODS, BenchmarkConfig,
                                                        localize_benchmark, rank_metrics)
from interp_unlearn.pipeline.planted_run import PLANTED, VerifyConfig, plant_heads, verify_plant

MICRO = "organism-planted-micro"
needs_micro = pytest.mark.skipif(not PLANTED[MICRO].is_dir(),
                                 reason="the micro planted organism is not shipped here")
#: the issue's criterion (forget drop >= 0.40, retain moves <= 0.05, random heads not
#: forget-specific); 3 random draws instead of 5 to save time
MICRO_VERIFY = VerifyConfig(n_random=3)


def test_rank_metrics_precision_and_ranks():
    scores = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1], "rank": [1, 3, 2, 4]})
    m = rank_metrics(scores, [(0, 0), (1, 1)])
    assert m == {"precision": 0.5, "mean_rank": 2.5, "worst_rank": 4.0}
    assert rank_metrics(scores, [(0, 0), (1, 0)])["precision"] == 1.0
    with pytest.raises(ValueError, match=r"planted head \(2, 0\)"):
        rank_metrics(scores, [(2, 0)])


@pytest.mark.parametrize("kw, match", [({"methods": ("lofit", "random")}, "methods"),
                                       ({"methods": ()}, "methods"),
                                       ({"seeds": ()}, "seeds"),
                                       ({"seeds": (0, 0)}, "seeds"),
                                       ({"max_questions": 0}, "max_questions"),
                                       ({"lofit_steps": 0}, "lofit_steps")])
def test_bad_config_fails(kw, match):
    with pytest.raises(ValueError, match=match):
        BenchmarkConfig(**kw)


@pytest.mark.parametrize("argv, match", [
    (["--methods", "lofit,random"], "methods must be distinct names"),
    (["--model", "organism-micro"], "not a planted organism"),
    (["--seeds", "0,0"], "seeds"),
])
def test_cli_bad_input_is_one_line_exit_2(argv, match, tmp_path, capsys):
    assert main(["localize-benchmark", "--out", str(tmp_path / "b"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err
    assert not (tmp_path / "b" / "table.csv").exists()


@needs_micro
def test_the_planted_heads_are_verified_by_ablation(one_thread):
    result = verify_plant(load_model(PLANTED[MICRO]), MICRO_VERIFY)
    assert result["passed"], result
    sel = next(r for r in result["table"] if r["condition"] == "selected")
    rnd = next(r for r in result["table"] if r["condition"] == "random")
    specific = lambda r: r["forget_drop"] - r["retain_drop"]  # noqa: E731
    assert specific(sel) > specific(rnd) + 0.3  # H* removes the facts, random heads do not


@needs_micro
@pytest.mark.slow
def test_benchmark_scores_every_method_against_h_star(tmp_path, one_thread):
    cfg = BenchmarkConfig(seeds=(0, 1), lofit_steps=15, verify=False)
    df = localize_benchmark(MICRO, tmp_path, cfg, progress=False, formats=("html",))
    assert list(df["method"]) == list(METHODS)
    assert df["precision"].between(0, 1).all() and (df["n_seeds"] == 2).all()
    for f in ("table.csv", "table.md", "per_seed.csv", "scores.csv", "summary.json",
              "benchmark_config.json", "localize_benchmark.html"):
        assert (tmp_path / f).is_file(), f
    summary = json.loads((tmp_path / "summary.json").read_text())
    heads = plant_heads(load_model(PLANTED[MICRO]))
    assert summary["planted_heads"] == [list(h) for h in heads]
    assert summary["chance_precision"] == pytest.approx(len(heads) / 16)
    per_seed = pd.read_csv(tmp_path / "per_seed.csv")
    assert len(per_seed) == 2 * len(METHODS)
    # the ablation attribution measures the planted route directly: it must find H*
    assert df.set_index("method").loc["ablation", "precision"] >= 0.5
    assert BenchmarkConfig.load_json(tmp_path / "benchmark_config.json") == cfg


def test_gradient_attribution_scores_every_head_and_leaves_the_weights_alone(micro, one_thread):
    from interp_unlearn.core.mcq import load_mcq
    from interp_unlearn.localize.gradient import GradientConfig, gradient_attribution

    before = {k: v.clone() for k, v in micro.model.state_dict().items()}
    forget = load_mcq(micro.mcq_path("forget", "attack"))
    retain = load_mcq(micro.mcq_path("retain", "eval"))
    res = gradient_attribution(micro.model, micro.tokenizer, forget, retain,
                               GradientConfig(max_texts=12, top_k=3), progress=False)
    assert len(res.table) == 16 and sorted(res.table["rank"]) == list(range(1, 17))
    assert len(res.selected) == 3 and res.table[["d_forget", "d_retain"]].abs().sum().sum() > 0
    assert all(p.grad is None and p.requires_grad for p in micro.model.parameters())
    assert all(torch.equal(v, micro.model.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError, match="score must be one of"):
        GradientConfig(score="both")
