"""Unlearning methods on the micro organism (scored on its default pool, ``practice``).

Bounds: each method must lower forget-MCQ accuracy by at least 15 points (the micro
organism knows ~86 % of its forget facts; chance is 25 %), and keep retain accuracy
within 10 points of the original (RMU / ALMPU: 7 points). Runs use each method's
``organism-micro`` preset (picked automatically for the micro organism), sized to finish
in well under 30 s on one core.
"""

from __future__ import annotations

import json
import re
import math

import pytest
import torch
from safetensors import safe_open

from interp_unlearn.evaluation.scoring import EvalConfig, evaluate_mcq
from interp_unlearn.data.loading import LoadedModel, load_model
from interp_unlearn.unlearn import (NonFiniteLossError, Trainer, UnlearnConfig,
                                    available_methods, get_method, parse_heads, unlearn)
from interp_unlearn.unlearn.methods.dpo import split_qa
from interp_unlearn.unlearn.methods.npo import npo_loss

pytestmark = pytest.mark.usefixtures("one_thread")

MICRO = "organism-micro"
HEADS = [(1, 0), (2, 1), (3, 2)]  # (3, 2) lies after the RMU layer ℓ = 2


@pytest.fixture(scope="module")
def micro_state():
    lm = load_model(MICRO)
    return {k: v.clone() for k, v in lm.model.state_dict().items()}


def _fresh() -> LoadedModel:
    return load_model(MICRO)


def _weights(lm: LoadedModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in lm.model.state_dict().items()}


def _quick(method: str, **kw) -> UnlearnConfig:
    """A short run without evaluation (for the mechanics tests)."""
    base = dict(method=method, max_num_batches=4, progress=False, evaluate=False)
    base.update(kw)
    return UnlearnConfig(**base)


# ------------------------------------------------------------------- effectiveness

FORGET_DROP = 0.15
RETAIN_BOUND = {"rmu": 0.07, "almpu": 0.07, "ga": 0.10, "ga_mp": 0.10, "npo": 0.10,
                "dpo": 0.10, "adaptive_rmu": 0.07, "npo_sam": 0.10}


@pytest.mark.parametrize("method", ["rmu", "almpu", "ga", "ga_mp", "npo", "dpo",
                                    "adaptive_rmu", "npo_sam"])
def test_method_forgets_and_retains(method, tmp_path):
    heads = HEADS if method == "almpu" else None
    res = unlearn(MICRO, method, heads=heads, out_dir=tmp_path / method, progress=False)
    assert res.config["preset"] == "organism-micro"
    b, a = res.before, res.after
    assert a["forget"] <= b["forget"] - FORGET_DROP, (method, b, a)
    assert a["retain"] >= b["retain"] - RETAIN_BOUND[method], (method, b, a)
    # the checkpoint is a loadable model that scores the same
    lm = load_model(res.checkpoint)
    acc = evaluate_mcq(lm.model, lm.tokenizer, lm.mcq_path("forget"),
                       EvalConfig(scoring=lm.default_scoring)).accuracy
    assert acc == pytest.approx(a["forget"])
    lines = [json.loads(x) for x in (res.out_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["step"] == 0 and "eval" in lines[0]
    assert sum("loss" in x for x in lines) == res.steps


# ------------------------------------------------------------------------ mechanics


def test_rmu_touches_only_its_parameters(tmp_path, micro_state):
    lm = _fresh()
    tr = Trainer(lm, _quick("rmu", max_num_batches=3), out_dir=tmp_path)
    tr.run()
    trained = {f"model.layers.{l}.mlp.down_proj.weight" for l in (0, 1, 2)}
    assert set(tr.trainable) == trained
    after = _weights(lm)
    for k, v in micro_state.items():
        if k in trained:
            assert not torch.equal(v, after[k]), k
        else:
            assert torch.equal(v, after[k]), k
    assert all(p.requires_grad for p in lm.model.parameters())  # restored after the run


def test_rmu_fast_forward_equals_straightforward(tmp_path):
    out = {}
    for fast in (True, False):
        lm = _fresh()
        cfg = _quick("rmu", max_num_batches=10, lr=3e-3, params={"fast_forward": fast})
        Trainer(lm, cfg, out_dir=tmp_path / str(fast)).run()
        out[fast] = _weights(lm)
    diff = max(float((out[True][k] - out[False][k]).abs().max()) for k in out[True])
    moved = float((out[True]["model.layers.2.mlp.down_proj.weight"]
                   - load_model(MICRO).model.state_dict()["model.layers.2.mlp.down_proj.weight"]
                   ).abs().max())
    assert diff <= 1e-5 and moved > 1e-3, (diff, moved)


def test_rmu_control_vector_and_defaults():
    from interp_unlearn.unlearn.methods.rmu import control_vector

    u = control_vector(96, 6.5, 42, torch.device("cpu"), torch.float32)
    assert u.shape == (1, 1, 96) and bool((u > 0).all())
    assert float(u.norm()) == pytest.approx(6.5, rel=1e-6)
    cls = get_method("rmu")
    zephyr = cls.presets["zephyr"]
    assert zephyr["params"] == {"layer": 7, "steering_coeff": 6.5, "alpha": 1200.0}
    assert zephyr["config"]["max_num_batches"] == 150 and zephyr["config"]["batch_size"] == 4
    assert cls.defaults["lr"] == 5e-5 and cls.defaults["adam_eps"] == 1e-6
    assert cls.defaults["weight_decay"] == 0.0 and cls.defaults["grad_clip"] is None


def test_same_seed_same_weights(tmp_path):
    runs = []
    for i, seed in enumerate((5, 5, 6)):
        lm = _fresh()
        Trainer(lm, _quick("almpu", seed=seed), heads=HEADS, out_dir=tmp_path / str(i)).run()
        runs.append(_weights(lm))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_almpu_delta_shapes_ball_and_not_saved(tmp_path):
    lm = _fresh()
    eps = 0.05
    tr = Trainer(lm, _quick("almpu", max_num_batches=3,
                            params={"epsilon": eps, "delta_lr": 0.5, "sigma_adv": 1.0}),
                 heads=HEADS, out_dir=tmp_path)
    delta = tr.method.adv.delta
    assert delta.heads == HEADS
    assert tuple(delta.delta.shape) == (len(HEADS), 24)  # d_head = 96 / 4
    d0 = delta.delta.detach().clone()
    res = tr.run()
    norms = delta.norms()
    assert bool((norms <= eps + 1e-6).all()) and float(norms.max()) > 0.9 * eps
    assert not torch.equal(d0, delta.delta.detach())  # δ was trained
    hf_keys = set(lm.model.state_dict())
    with safe_open(res.checkpoint / "model.safetensors", "pt") as f:
        saved = set(f.keys())
    assert saved == hf_keys and not any("delta" in k for k in saved)
    for m in lm.model.modules():  # no hook left behind
        assert not m._forward_pre_hooks and not m._forward_hooks
    meta = json.loads((res.checkpoint / "interp_unlearn.json").read_text())
    assert meta["unlearn"]["method"] == "almpu" and meta["unlearn"]["heads"] == [list(h) for h in HEADS]
    last = json.loads((res.out_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["heads_after_layer"] == [[3, 2]]


def test_almpu_literal_reading_is_rmu(tmp_path):
    """adversarial=False: δ never enters θ's loss, so θ follows RMU exactly."""
    out = {}
    for name, method, params in (("rmu", "rmu", {}), ("lit", "almpu", {"adversarial": False}),
                                 ("adv", "almpu", {"epsilon": 2.0, "sigma_adv": 1.0})):
        lm = _fresh()
        Trainer(lm, _quick(method, params=params), heads=HEADS if method == "almpu" else None,
                out_dir=tmp_path / name).run()
        out[name] = _weights(lm)
    assert all(torch.equal(out["rmu"][k], out["lit"][k]) for k in out["rmu"])
    assert not all(torch.equal(out["rmu"][k], out["adv"][k]) for k in out["rmu"])


def test_almpu_hf_hooks_equal_bridge_attach(tmp_path):
    """δ applied by o_proj pre-hooks (fast path) == attach(bridge, HeadPerturbation).

    ``masked=True``: at left-padding positions (fully masked query rows) HF's sdpa path
    returns zeros and the bridge's eager attention does not, so the unmasked RMU loss
    differs there by design; the real tokens agree to ~1e-6."""
    out = {}
    for backend in ("hf", "bridge"):
        lm = _fresh()
        tr = Trainer(lm, _quick("almpu", max_num_batches=3,
                                params={"backend": backend, "epsilon": 2.0, "sigma_adv": 0.5,
                                        "masked": True}),
                     heads=HEADS, out_dir=tmp_path / backend)
        tr.run()
        out[backend] = (_weights(lm), tr.method.adv.delta.delta.detach().clone())
    w_hf, d_hf = out["hf"]
    w_br, d_br = out["bridge"]
    assert max(float((w_hf[k] - w_br[k]).abs().max()) for k in w_hf) <= 1e-5
    assert float((d_hf - d_br).abs().max()) <= 1e-4


def test_nan_loss_stops_and_keeps_last_good(tmp_path, monkeypatch):
    from interp_unlearn.unlearn.methods.rmu import RMU

    good = _fresh()
    Trainer(good, _quick("rmu", max_num_batches=2), out_dir=tmp_path / "good").run()
    original = RMU.loss_terms

    def poisoned(self, step, forget, retain):
        terms = original(self, step, forget, retain)
        if step == 3:
            terms["retain"] = terms["retain"] * float("nan")
        return terms

    monkeypatch.setattr(RMU, "loss_terms", poisoned)
    lm = _fresh()
    with pytest.raises(NonFiniteLossError, match=r"step 3: loss term 'retain' is nan") as err:
        Trainer(lm, _quick("rmu", max_num_batches=5), out_dir=tmp_path / "bad").run()
    assert err.value.step == 3 and err.value.term == "retain"
    with pytest.raises(ValueError, match="did not complete .*'stopped_non_finite'"):
        load_model(err.value.checkpoint)  # downstream refuses it by default (issue 18)
    saved = load_model(err.value.checkpoint, accept_incomplete=True)
    ref = good.model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in saved.model.state_dict().items())
    meta = json.loads((err.value.checkpoint / "interp_unlearn.json").read_text())
    assert meta["unlearn"]["status"] == "stopped_non_finite"
    assert meta["unlearn"]["steps_completed"] == 2


@pytest.mark.parametrize("damage", ["nan_weights", "zeroed"])
def test_nan_stop_keeps_no_weights_that_are_not_good(tmp_path, monkeypatch, damage):
    """Issue 18: the weights kept at a NaN stop must be good -- finite, with finite outputs
    and a retain accuracy that did not collapse -- or none are kept."""
    from interp_unlearn.data.loading import IncompleteCheckpointError
    from interp_unlearn.unlearn.methods.rmu import RMU

    original = RMU.loss_terms

    def poisoned(self, step, forget, retain):
        terms = original(self, step, forget, retain)
        if step == 2:
            with torch.no_grad():
                for p in self.core.model.parameters():
                    p.mul_(float("nan") if damage == "nan_weights" else 0.0)
            terms["retain"] = terms["retain"] * float("nan")
        return terms

    monkeypatch.setattr(RMU, "loss_terms", poisoned)
    with pytest.raises(NonFiniteLossError) as err:
        # zeroed weights are finite: only the retain evaluation can tell they are useless
        Trainer(_fresh(), _quick("rmu", max_num_batches=4, evaluate=damage == "zeroed"),
                out_dir=tmp_path / "bad").run()
    meta = json.loads((err.value.checkpoint / "interp_unlearn.json").read_text())["unlearn"]
    assert meta["status"] == "stopped_non_finite"
    why = "NaN/inf" if damage == "nan_weights" else "not finite|collapsed"
    assert re.search(why, meta["weights"]), meta["weights"]
    assert not (err.value.checkpoint / "model.safetensors").exists()
    with pytest.raises(IncompleteCheckpointError, match="kept no weights"):
        load_model(err.value.checkpoint, accept_incomplete=True)


def test_bad_inputs_raise_clear_errors(tmp_path):
    lm = _fresh()
    with pytest.raises(ValueError, match=r"layer 7 out of range \(head \(7, 0\)\): valid layers are 0\.\.3"):
        Trainer(lm, _quick("almpu"), heads=[(1, 0), (7, 0)], out_dir=tmp_path / "out")
    with pytest.raises(ValueError, match=r"head 9 out of range for layer 1: valid heads are 0\.\.3"):
        Trainer(lm, _quick("almpu"), heads="1.9", out_dir=tmp_path / "out")
    with pytest.raises(ValueError, match="needs selected heads"):
        Trainer(lm, _quick("almpu"), out_dir=tmp_path / "out")
    with pytest.raises(ValueError, match="does not use attention heads"):
        Trainer(lm, _quick("rmu"), heads=[(0, 0)], out_dir=tmp_path / "out")
    with pytest.raises(ValueError, match="forget corpus .* is empty"):
        Trainer(lm, _quick("rmu", forget_corpus=["", "  "]), out_dir=tmp_path / "out")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        Trainer(lm, _quick("rmu", retain_corpus=str(empty)), out_dir=tmp_path / "out")
    with pytest.raises(ValueError, match="unknown unlearning method 'rmv'"):
        Trainer(lm, _quick("rmv"), out_dir=tmp_path / "out")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['steering'\]"):
        Trainer(lm, _quick("rmu", params={"steering": 3}), out_dir=tmp_path / "out")
    with pytest.raises(ValueError, match="RMU layer 4 does not exist"):
        Trainer(lm, _quick("rmu", params={"layer": 4}), out_dir=tmp_path / "out")
    assert set(available_methods()) >= {"rmu", "almpu", "ga", "ga_mp", "npo", "dpo"}


def test_parse_heads_formats(tmp_path):
    model = load_model(MICRO).model
    p = tmp_path / "heads.json"
    p.write_text(json.dumps({"selected_heads": [{"layer": 2, "head": 1}, [0, 3]]}))
    assert parse_heads(p, model) == [(0, 3), (2, 1)]
    assert parse_heads("2.1, 0:3", model) == [(0, 3), (2, 1)]
    assert parse_heads([(2, 1)], model) == [(2, 1)]


def test_checkpoint_meta_and_config(tmp_path):
    lm = _fresh()
    res = Trainer(lm, _quick("ga", max_num_batches=2), out_dir=tmp_path / "ga").run()
    meta = json.loads((res.checkpoint / "interp_unlearn.json").read_text())
    assert meta["world_dir"] == str(lm.world_dir) and meta["eval_pool"] == "practice"
    cfg = json.loads((res.out_dir / "unlearn_config.json").read_text())
    assert cfg["method"] == "ga" and cfg["max_num_batches"] == 2
    assert cfg["params"]["retain_weight"] == 2.0 and cfg["preset"] == "organism-micro"
    assert load_model(res.checkpoint).mcq_path("forget").is_file()


def test_npo_and_dpo_pieces():
    lp = torch.tensor([-10.0, -3.0])
    assert float(npo_loss(lp, lp, 0.1)) == pytest.approx(2 / 0.1 * math.log(2))
    assert split_qa("Question: How is X transmitted?\nAnswer: insect bites") == (
        "Question: How is X transmitted?\nAnswer:", "insect bites")
    with pytest.raises(ValueError, match="question/answer"):
        split_qa("no answer here")
    # the response weights cover exactly the response tokens
    lm = _fresh()
    tr = Trainer(lm, _quick("dpo", max_num_batches=1), out_dir="/tmp/unused-dpo")
    ch, w_ch, rj, w_rj = tr.method._pairs(["Question: Who?\nAnswer: Marta"])
    ids = rj.input_ids[0].tolist()
    n = int(w_rj[0].sum())
    resp = [ids[i + 1] for i in range(len(ids) - 1) if w_rj[0, i] > 0]
    assert lm.tokenizer.decode(resp) == " Marta" and n == len(resp)
    tr._restore_requires_grad()


@pytest.mark.parametrize("method,heads", [("rmu", None), ("almpu", "0.0,0.1,0.3,0.5")])
def test_shipped_organism_preset_meets_target(method, heads, tmp_path):
    """Issue 4's targets on the shipped organism with its automatic ``organism`` preset
    (seed 0): forget accuracy <= 0.35 (original 0.960, chance 0.25) with retain within 5
    points. Measured 2026-11-30: RMU 0.273 / 0.875; ALMPU with the paper recipe's top-4
    heads (all before the RMU layer, so δ acts on the θ step) 0.253 / 0.858."""
    res = unlearn("organism", method, heads=heads, out_dir=tmp_path / method, seed=0,
                  progress=False)
    assert res.after["forget"] <= 0.35, res.after
    assert res.after["retain"] >= res.before["retain"] - 0.05, (res.before, res.after)
