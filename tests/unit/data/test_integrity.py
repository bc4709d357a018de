"""Issue 18 integrity: checksums beside every checkpoint the toolkit saves, verified on
load; truncated weights named; shard paths confined to the checkpoint directory."""

from __future__ import annotations

import json
import shutil

import pytest

from interp_unlearn.core.checkpoint import CHECKSUM_FILE, IntegrityError, verify_checksums
from interp_unlearn.data.loading import CheckpointError, builtin_path, load_model


@pytest.fixture
def micro_copy(tmp_path):
    dst = tmp_path / "m"
    shutil.copytree(builtin_path("organism-micro"), dst)
    return dst


@pytest.mark.parametrize("name", ["organism", "organism-twin", "organism-micro",
                                  "organism-micro-twin"])
def test_shipped_checkpoints_carry_and_pass_their_checksums(name):
    assert verify_checksums(builtin_path(name)) is True


def test_same_size_corruption_is_named(micro_copy):
    f = micro_copy / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-100] ^= 0xFF  # one weight byte, same size: used to score like unlearning
    f.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"model\.safetensors: contents differ"):
        load_model(micro_copy)


def test_truncated_weights_are_named(micro_copy):
    f = micro_copy / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-1000])
    (micro_copy / CHECKSUM_FILE).unlink()  # even without a manifest
    with pytest.raises(CheckpointError, match=r"model\.safetensors: truncated"):
        load_model(micro_copy)
    f.write_bytes(b"\x00" * 4)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors"):
        load_model(micro_copy)


def test_changed_metadata_is_caught(micro_copy):
    meta = json.loads((micro_copy / "interp_unlearn.json").read_text())
    meta["kind"] = "something-else"
    (micro_copy / "interp_unlearn.json").write_text(json.dumps(meta))
    with pytest.raises(IntegrityError, match=r"interp_unlearn\.json: (contents differ|\d+ bytes)"):
        load_model(micro_copy)


def test_shard_paths_stay_inside_the_checkpoint(micro_copy, tmp_path):
    shutil.move(micro_copy / "model.safetensors", tmp_path / "outside.safetensors")
    (micro_copy / CHECKSUM_FILE).unlink()
    (micro_copy / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"lm_head.weight": "../outside.safetensors"}}))
    with pytest.raises(CheckpointError, match="points outside the checkpoint directory"):
        load_model(micro_copy)


def test_saved_runs_verify(tmp_path):
    from interp_unlearn.unlearn import Trainer, UnlearnConfig

    res = Trainer(load_model("organism-micro"),
                  UnlearnConfig(method="ga", max_num_batches=1, progress=False,
                                evaluate=False), out_dir=tmp_path / "ga").run()
    assert verify_checksums(res.checkpoint) is True
    files = json.loads((res.checkpoint / CHECKSUM_FILE).read_text())["files"]
    assert {"model.safetensors", "config.json", "interp_unlearn.json"} <= set(files)
