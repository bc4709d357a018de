"""Issue 16, 7B memory features on the micro organism: the frozen reference shares what is
not trained (oracle: the old full deep copy trains identical weights, with more copied
parameters), gradient checkpointing, LoRA unlearning, the 8-bit optimiser option."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from interp_unlearn.data.loading import load_model
from interp_unlearn.unlearn import memory
from interp_unlearn.unlearn.config import UnlearnConfig
from interp_unlearn.unlearn.memory import OptimizerUnavailableError, copied_parameters
from interp_unlearn.unlearn.trainer import Trainer

pytestmark = pytest.mark.filterwarnings("ignore:.*INERT:RuntimeWarning")
STEPS = 3
HEADS = [(0, 1), (1, 0), (2, 3)]


def _trainer(tmp, method, name, **kw):
    lm = load_model("organism-micro")
    cfg = UnlearnConfig(method=method, max_num_batches=STEPS, evaluate=False, progress=False,
                        **kw)
    return lm, Trainer(lm, cfg, heads=HEADS if method == "almpu" else None,
                       out_dir=tmp / name)


def _copied(t: Trainer) -> int:
    core = getattr(t.method, "core", None)
    n = copied_parameters(t.reference_copied, t.model)
    if core is not None and t.reference_copied is None:
        n += copied_parameters(core.frozen, t.model)
    return n


def _state(lm) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in lm.model.state_dict().items()}


@pytest.mark.parametrize("method,params", [
    ("rmu", {}), ("rmu", {"fast_forward": False}),
    pytest.param("almpu", {}, marks=pytest.mark.slow),
    ("npo", {"trainable": "mlp", "layers": [3]})])
def test_shared_reference_same_weights_fewer_copies(tmp_path, one_thread, method, params):
    runs = {}
    for mode in ("deepcopy", "shared"):
        lm, t = _trainer(tmp_path, method, mode, frozen_reference=mode, params=dict(params))
        runs[mode] = (_copied(t), t)
        t.run()
        runs[mode] = (runs[mode][0], _state(lm))
    (n_deep, w_deep), (n_shared, w_shared) = runs["deepcopy"], runs["shared"]
    assert all(torch.equal(w_deep[k], w_shared[k]) for k in w_deep)
    trained = sum(p.numel() for p in t.trainable.values())
    assert n_shared == trained < n_deep, (n_shared, trained, n_deep)


def test_gradient_checkpointing_is_used_and_exact(tmp_path, one_thread):
    base_lm, base = _trainer(tmp_path, "ga", "base")
    base.run()
    lm, t = _trainer(tmp_path, "ga", "gc", gradient_checkpointing=True)
    before = memory._CALLS["n"]
    t.run()
    n_layers = len(lm.model.model.layers)
    # forget + retain forward per step, every layer checkpointed
    assert memory._CALLS["n"] - before == 2 * n_layers * STEPS
    assert all("forward" not in vars(layer) for layer in lm.model.model.layers)  # removed
    a, b = _state(base_lm), _state(lm)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6


def test_lora_trains_low_rank_update_and_merges(tmp_path, one_thread):
    orig = _state(load_model("organism-micro"))
    lm, t = _trainer(tmp_path, "rmu", "lora", lora_rank=2)
    assert all(".lora_" in n for n in t.trainable)
    t.run()
    saved = load_file(str(tmp_path / "lora" / "model.safetensors"))
    assert set(saved) <= set(orig) and not any("lora" in k for k in saved)
    changed = {k for k in orig if not torch.equal(orig[k], saved[k])}
    assert changed == {f"model.layers.{l}.mlp.down_proj.weight" for l in (0, 1, 2)}
    for k in changed:
        delta = (saved[k] - orig[k]).double()
        assert torch.linalg.matrix_rank(delta, atol=1e-4 * float(delta.abs().max())) <= 2
        assert float(delta.abs().max()) > 1e-4


def test_lora_reference_copies_nothing(tmp_path, one_thread):
    _, t = _trainer(tmp_path, "npo", "npo-lora", lora_rank=4)
    assert copied_parameters(t.reference_copied, t.model) == 0
    _, full = _trainer(tmp_path, "npo", "npo-full")
    assert copied_parameters(full.reference_copied, full.model) == \
        sum(p.numel() for p in full.trainable.values())


def _bnb_imports() -> bool:
    try:
        memory.import_bitsandbytes("adamw8bit")
        return True
    except OptimizerUnavailableError:
        return False


def test_8bit_optimizer_or_clear_error(tmp_path, one_thread, monkeypatch):
    if _bnb_imports():
        _, t = _trainer(tmp_path, "rmu", "bnb", optimizer="adamw8bit")
        assert type(t.optimizer).__module__.startswith("bitsandbytes")
        assert type(t.optimizer).__name__ == "AdamW8bit"
    import builtins

    real_import = builtins.__import__

    def no_bnb(name, *a, **k):
        if name.startswith("bitsandbytes"):
            raise ImportError("No module named 'bitsandbytes'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_bnb)
    with pytest.raises(OptimizerUnavailableError, match="'paged_adamw8bit' needs bitsandbytes"):
        _trainer(tmp_path, "rmu", "nobnb", optimizer="paged_adamw8bit")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        _trainer(tmp_path, "rmu", "bad", optimizer="sgd")
