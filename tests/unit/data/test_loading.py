import json
import shutil
import time

import pytest
import torch

from interp_unlearn.data.loading import (BUILTIN, CheckpointError, OfflineError,
                                         check_checkpoint, load_model, resolve)
from interp_unlearn.data.organism import build_model, get_preset, save_checkpoint
from interp_unlearn.data.tokenizer import train_tokenizer
from interp_unlearn.data.world import World, WorldConfig


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    world = World.generate(WorldConfig(n_pathogens=10, n_towns=10, n_general_docs=10))
    out = tmp_path_factory.mktemp("ckpt")
    world.save(out / "world")
    tok = train_tokenizer(world, 400)
    model = build_model(get_preset("micro", n_layers=2), tok)
    save_checkpoint(model, tok, out / "model", {"default_scoring": "cloze", "world_dir": "../world"})
    return out / "model", model


def test_local_directory_round_trip(checkpoint):
    path, model = checkpoint
    lm = load_model(str(path))
    x = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(lm.model(x).logits, model(x).logits)
    assert lm.default_scoring == "cloze"
    assert lm.mcq_path("forget").is_file()


def test_unknown_builtin_lists_valid_names():
    with pytest.raises(ValueError) as err:
        load_model("organism-huge")
    for name in BUILTIN:
        assert name in str(err.value)


def test_hub_name_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.time()
    with pytest.raises(OfflineError, match="local checkpoint directory"):
        load_model("HuggingFaceH4/zephyr-7b-beta")
    assert time.time() - t < 5
    assert resolve("HuggingFaceH4/zephyr-7b-beta") == ("hub", None)


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors", "tokenizer.json"])
def test_partial_checkpoint_names_missing_file(checkpoint, tmp_path, missing):
    path, _ = checkpoint
    for f in path.iterdir():
        if f.name != missing:
            (tmp_path / f.name).write_bytes(f.read_bytes())
    with pytest.raises(CheckpointError, match=missing.replace(".", r"\.")):
        check_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match=missing.replace(".", r"\.")):
        load_model(tmp_path)


def test_missing_shard_and_pickles_refused(checkpoint, tmp_path):
    path, _ = checkpoint
    for f in path.iterdir():
        if f.name != "model.safetensors":
            (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="safetensors only"):
        check_checkpoint(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(CheckpointError, match="model-00001-of-00002"):
        check_checkpoint(tmp_path)


def test_missing_directory():
    with pytest.raises(CheckpointError, match="not found"):
        load_model("./no/such/dir")


def test_tokenizer_larger_than_the_embedding_is_named(checkpoint, tmp_path):
    from interp_unlearn.data.loading import VocabMismatchError
    from transformers import AutoTokenizer

    path, _ = checkpoint
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    tok = AutoTokenizer.from_pretrained(bad)
    rows = len(tok)
    tok.add_tokens([f"extra{i}" for i in range(5)])
    tok.save_pretrained(bad)
    (bad / "checksums.json").unlink(missing_ok=True)  # the edit is deliberate
    with pytest.raises(VocabMismatchError, match=rf"{rows + 5} tokens but .* {rows} rows"):
        load_model(str(bad))
