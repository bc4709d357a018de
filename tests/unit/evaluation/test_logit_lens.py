"""The per-block logit lens on the micro organism: the last block is the evaluator exactly."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from interp_unlearn.core.bridge import to_bridge
from interp_unlearn.evaluation.scoring import EvalConfig, evaluate_mcq
from interp_unlearn.data.loading import load_model
from interp_unlearn.evaluation.logit_lens import logit_lens, logit_lens_scores, run_logit_lens
from interp_unlearn.core.mcq import load_mcq

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def forget_items(micro):
    return load_mcq(micro.mcq_path("forget"))


@pytest.mark.parametrize("scoring", ["cloze", "letter"])
def test_last_block_equals_evaluator_exactly(micro, forget_items, scoring):
    cfg = EvalConfig(scoring=scoring, batch_size=16)
    ev = evaluate_mcq(micro.model, micro.tokenizer, forget_items, cfg)
    lp = logit_lens_scores(micro.model, micro.tokenizer, forget_items, cfg)
    assert lp.shape == (4, len(forget_items), 4)
    ref = ev.per_question[[f"logprob_{k}" for k in range(4)]].to_numpy()
    np.testing.assert_array_equal(lp[-1].argmax(1), ev.per_question["pred"].to_numpy())
    assert np.abs(lp[-1] - ref).max() <= 1e-5
    df = logit_lens(micro.model, micro.tokenizer, forget_items, cfg)
    assert list(df.columns) == ["block", "accuracy", "ci95_low", "ci95_high", "n"]
    assert df["block"].tolist() == [0, 1, 2, 3] and (df["n"] == len(forget_items)).all()
    assert df["accuracy"].iloc[-1] == ev.accuracy
    assert (df["ci95_low"] <= df["accuracy"]).all() and (df["accuracy"] <= df["ci95_high"]).all()
    np.testing.assert_array_equal(df.attrs["predictions"][-1], ev.per_question["pred"].to_numpy())


def test_bridge_backend_agrees(micro, forget_items):
    items = forget_items[:24]
    cfg = EvalConfig(scoring="cloze")
    hf = logit_lens_scores(micro.model, micro.tokenizer, items, cfg)
    bridge = to_bridge(micro.model, micro.tokenizer)
    br = logit_lens_scores(bridge, micro.tokenizer, items, cfg, backend="bridge")
    assert np.abs(hf - br).max() <= 1e-4  # every block: the HF hooks read hook_resid_post
    np.testing.assert_array_equal(hf.argmax(2), br.argmax(2))


def test_blocks_subset_and_no_hooks_left(micro, forget_items):
    items = forget_items[:8]
    probe = torch.tensor([[5, 6, 7, 8]])
    ref = micro.model(input_ids=probe).logits
    full = logit_lens_scores(micro.model, micro.tokenizer, items)
    sub = logit_lens_scores(micro.model, micro.tokenizer, items, blocks=[1, 3])
    np.testing.assert_array_equal(sub, full[[1, 3]])
    assert all(not layer._forward_hooks for layer in micro.model.model.layers)
    assert torch.equal(micro.model(input_ids=probe).logits, ref)
    with pytest.raises(ValueError, match="out of range"):
        logit_lens_scores(micro.model, micro.tokenizer, items, blocks=[4])


def test_run_logit_lens_writes_tidy_table(tmp_path):
    df = run_logit_lens("organism-micro", tmp_path, progress=False)
    assert set(df["domain"]) == {"forget", "retain"} and len(df) == 8
    assert (df["scoring"] == "cloze").all()
    saved = pd.read_csv(tmp_path / "logit_lens.csv")
    assert len(saved) == 8 and len(json.loads((tmp_path / "logit_lens.json").read_text())) == 8
    last = df[(df.domain == "forget") & (df.block == 3)]["accuracy"].item()
    lm = load_model("organism-micro")
    assert last == evaluate_mcq(lm.model, lm.tokenizer, lm.mcq_path("forget"),
                                EvalConfig(scoring="cloze")).accuracy
