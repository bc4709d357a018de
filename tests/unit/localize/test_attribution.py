"""Ablation attribution (the forget-specific localization variant) on the micro organism."""

import json

import pytest
import torch

from interp_unlearn.localize.attribution import (AttributionConfig, attribution_pools,
                                                 head_attribution)
from interp_unlearn.pipeline.localize_run import run_attribution
from interp_unlearn.core.bridge import to_bridge
from interp_unlearn.data.loading import load_model
from interp_unlearn.core.mcq import load_mcq
from interp_unlearn.core.selection import load_heads

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mcqs(micro):
    pools = attribution_pools(micro.eval_pool)
    return (load_mcq(micro.mcq_path("forget", pools["forget"]))[:24],
            load_mcq(micro.mcq_path("retain", pools["retain"]))[:24])


@pytest.fixture(scope="module")
def result(micro, mcqs):
    bridge = to_bridge(micro.model, micro.tokenizer)
    return head_attribution(bridge, micro.tokenizer, *mcqs,
                            AttributionConfig(top_k=3, max_texts=None), progress=False)


def test_held_out_pools_never_the_eval_pool():
    for eval_pool in ("eval", "practice"):
        pools = attribution_pools(eval_pool)
        assert eval_pool not in (pools["forget"],) and pools["retain"] != eval_pool


def test_table_covers_every_head_and_ranks_by_contrast(result):
    t = result.table
    assert len(t) == 16 and sorted(zip(t["layer"], t["head"])) == [(l, h) for l in range(4) for h in range(4)]
    assert sorted(t["rank"]) == list(range(1, 17))
    assert torch.allclose(torch.tensor(t["score"].to_numpy()),
                          torch.tensor((t["d_forget"] - t["d_retain"]).to_numpy()))
    top = t.sort_values("score", ascending=False).head(3)
    assert result.selected == sorted(zip(top["layer"].astype(int), top["head"].astype(int)))
    # ablating heads of a trained model hurts on average (a real, measured effect)
    assert t["d_forget"].mean() > 0 and t["d_retain"].mean() > 0


def test_ablation_leaves_no_hook_and_is_deterministic(micro, mcqs, result):
    bridge = to_bridge(micro.model, micro.tokenizer)
    again = head_attribution(bridge, micro.tokenizer, *mcqs,
                             AttributionConfig(top_k=3, max_texts=None), progress=False)
    assert again.table["score"].round(10).tolist() == result.table["score"].round(10).tolist()
    hooks = [m for m in bridge.modules() if getattr(m, "_forward_hooks", None)]
    assert not any(m._forward_hooks for m in hooks)


def test_hf_fast_path_equals_the_bridge(micro, mcqs, result):
    """An HF model is ablated at its ``o_proj`` input and scored with the evaluator's
    prefix sharing; the scores equal the bridge path's to float rounding, and the model
    is left without hooks."""
    hf = head_attribution(micro.model, micro.tokenizer, *mcqs,
                          AttributionConfig(top_k=3, max_texts=None), progress=False)
    diff = (hf.table["score"] - result.table["score"]).abs().max()
    assert diff < 1e-5, diff
    assert hf.selected == result.selected
    assert all(not m._forward_pre_hooks for m in micro.model.modules())


def test_text_signal_and_forget_score(micro):
    from interp_unlearn.data.world import World
    w = World.load(micro.world_dir)
    forget, retain = w.documents("forget")[:12], w.documents("retain")[:12]
    res = head_attribution(micro.model, micro.tokenizer, forget, retain,
                           AttributionConfig(signal="text", score="forget", top_k=2),
                           progress=False)
    assert (res.table["score"] == res.table["d_forget"]).all()
    assert len(res.selected) == 2 and res.meta["signal"] == "text"


def test_bad_input(micro, mcqs):
    with pytest.raises(ValueError, match="signal"):
        AttributionConfig(signal="gradients")
    with pytest.raises(ValueError, match="score"):
        AttributionConfig(score="ratio")
    with pytest.raises(ValueError, match="top_k"):
        AttributionConfig(top_k=0)
    with pytest.raises(TypeError, match="MCQ items"):
        head_attribution(micro.model, micro.tokenizer, ["a text"], ["b text"], progress=False)
    with pytest.raises(ValueError, match="only 16 heads"):
        head_attribution(micro.model, micro.tokenizer, *mcqs, AttributionConfig(top_k=17),
                         progress=False)


def test_run_attribution_writes_outputs(tmp_path, micro):
    res = run_attribution("organism-micro", 2, tmp_path,
                          AttributionConfig(max_texts=16), formats=("html",), progress=False)
    for name in ("attribution.csv", "scores.csv", "selected_heads.json",
                 "attribution_config.json", "head_attribution.html"):
        assert (tmp_path / name).is_file(), name
    record = json.loads((tmp_path / "selected_heads.json").read_text())
    assert record["strategy"] == "ablation-contrast" and record["signal"] == "mcq"
    bridge = to_bridge(micro.model, micro.tokenizer)
    assert load_heads(tmp_path / "selected_heads.json", bridge) == res.selected
    cfg = json.loads((tmp_path / "attribution_config.json").read_text())
    assert cfg["scoring"] == micro.default_scoring and cfg["top_k"] == 2


def test_cli_localize_score_ablation(tmp_path, capsys):
    from interp_unlearn.pipeline.cli import main
    assert main(["localize", "--model", "organism-micro", "--top-k", "2", "--score", "ablation",
                 "--out", str(tmp_path), "--formats", "html", "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["score"] == "ablation" and len(out["selected_heads"]) == 2
    assert (tmp_path / "attribution.csv").is_file()


def test_ablation_heads_are_forget_specific_on_shipped_organism(tmp_path):
    """Issue 3's causal criterion, for the variant (the paper's recipe fails it: see
    notes/localization_finding.md). Heads chosen on held-out practice-pool questions;
    judged on the evaluation pool: ablating the top-4 lowers forget accuracy more than 4
    random heads (mean of 5 draws) and lowers retain accuracy less than forget accuracy.
    Measured 2026-11-30: forget drop 0.300 vs random 0.061; retain drop 0.242."""
    from interp_unlearn.evaluation.causal import ablation_table
    res = run_attribution("organism", 4, tmp_path, formats=("html",), progress=False)
    lm = load_model("organism")
    df = ablation_table(lm.model, lm.tokenizer, lm.mcq_path("forget"), lm.mcq_path("retain"),
                        res.selected, n_random=5).set_index("condition")
    sel, rnd = df.loc["selected"], df.loc["random"]
    assert sel.forget_drop > rnd.forget_drop + 0.1, df
    assert sel.retain_drop < sel.forget_drop, df
