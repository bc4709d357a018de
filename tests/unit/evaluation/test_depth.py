"""Unlearning depth (UDS): the score's formula, the patched positions, and the two sanity
anchors of the reference (the original scored as unlearned has UDS 0, the never-learned
twin has UDS 1), per layer and per head, on the micro organism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from interp_unlearn.core.mcq import load_mcq
from interp_unlearn.data.loading import load_model
from interp_unlearn.evaluation.depth import (DepthConfig, _batch, _rows, depth_scores,
                                             uds_from_deltas)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_uds_formula_by_hand():
    d1 = np.array([[1.0, 2.0, 0.01], [0.02, 0.0, 0.04], [1.0, 1.0, 1.0]])
    d2 = np.array([[0.5, 4.0, 5.00], [1.00, 1.0, 1.00], [-1.0, 0.5, 2.0]])
    got = uds_from_deltas(d1, d2, tau=0.05)
    # row 0: FT = layers 0, 1 (layer 2 below tau); ratios 0.5 and clip(2) = 1
    assert got[0] == pytest.approx((1.0 * 0.5 + 2.0 * 1.0) / 3.0)
    assert math.isnan(got[1])  # no knowledge layer: not scored
    assert got[2] == pytest.approx((0.0 + 0.5 + 1.0) / 3.0)  # clip below 0 and above 1


def test_patched_positions_are_those_predicting_the_answer(micro):
    items = load_mcq(micro.mcq_path("forget"))[:3]
    rows = _rows(micro.tokenizer, items)
    ids, mask, pos, valid = _batch(rows, pad=0, device="cpu")
    for i, (r, m) in enumerate(rows):
        p = pos[i][valid[i]].tolist()
        assert p == list(range(len(r) - m - 1, len(r) - 1))  # last prompt token .. one before end
        answer = micro.tokenizer.decode(r[-m:])
        assert answer.strip() == items[i].choices[items[i].answer].strip()
        assert mask[i].sum() == len(r)


@pytest.fixture(scope="module")
def twin():
    return load_model("organism-micro-twin")


@pytest.mark.parametrize("heads", [False, True])
def test_sanity_anchors_original_0_twin_1(micro, twin, heads):
    items = load_mcq(micro.mcq_path("forget"))[:24]
    cfg = DepthConfig(heads=heads, batch_size=8)
    orig = depth_scores(micro.model, twin.model, micro.model, micro.tokenizer, items, cfg)
    same = depth_scores(micro.model, twin.model, twin.model, micro.tokenizer, items, cfg)
    assert orig["summary"]["uds"] == 0.0 and same["summary"]["uds"] == 1.0
    assert orig["summary"]["n_scored"] > 0
    assert (orig["layers"]["delta_s2"] == 0).all()
    assert np.allclose(same["layers"]["delta_s2"], same["layers"]["delta_s1"])
    if heads:
        assert orig["summary"]["uds_heads"] == 0.0 and same["summary"]["uds_heads"] == 1.0
        assert len(orig["heads"]) == 16 and set(orig["heads"]["head"]) == set(range(4))


def test_scope_all_patches_every_position_and_keeps_the_anchors(micro, twin):
    items = load_mcq(micro.mcq_path("forget"))[:16]
    span = depth_scores(micro.model, twin.model, micro.model, micro.tokenizer, items,
                        DepthConfig())
    every = depth_scores(micro.model, twin.model, micro.model, micro.tokenizer, items,
                         DepthConfig(scope="all"))
    same = depth_scores(micro.model, twin.model, twin.model, micro.tokenizer, items,
                        DepthConfig(scope="all"))
    assert every["summary"]["uds"] == 0.0 and same["summary"]["uds"] == 1.0
    # on the micro organism, patching the question's positions too moves the answer at least
    # as much (the twin lacks the facts there as well)
    assert (every["layers"]["delta_s1"] >= span["layers"]["delta_s1"] - 1e-6).all()
    assert every["summary"]["n_scored"] >= span["summary"]["n_scored"]


def test_control_warns_when_the_reference_is_not_a_twin(micro):
    """A random-weight model is no never-learned reference: it moves the control questions
    as much as the forget ones, and the run says so."""
    torch.manual_seed(0)
    cfg = micro.model.config.to_dict()
    stranger = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in cfg.items()
                                               if k in LlamaConfig().to_dict()})).eval()
    items = load_mcq(micro.mcq_path("forget"))[:16]
    control = load_mcq(micro.mcq_path("retain"))[:16]
    with pytest.warns(RuntimeWarning, match="not a clean measure"):
        res = depth_scores(micro.model, stranger, micro.model, micro.tokenizer, items,
                           DepthConfig(), control=control)
    assert res["summary"]["control_ratio"] > 0.5


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="tau"):
        DepthConfig(tau=float("nan"))
    with pytest.raises(ValueError, match="batch_size"):
        DepthConfig(batch_size=0)
    with pytest.raises(ValueError, match="scope"):
        DepthConfig(scope="prompt")
