"""Issue 16: the effective batch is defined once -- one process, gradient accumulation and
two processes under ``accelerate launch`` train the same weights (within 1e-5 in fp32).

Power of these tests: a token mean normalised per micro-batch instead of over the global
batch (a bug the first version had: the global count truncated to an int) moved the GA
weights by 5e-4 after 3 steps, 50x the tolerance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import interp_unlearn
from interp_unlearn.core.distributed import (BatchSplitError, ShardedEngineError, dist_env,
                                             row_slices, split_batch)
from interp_unlearn.data.loading import load_model
from interp_unlearn.unlearn import unlearn
from interp_unlearn.unlearn.config import UnlearnConfig
from interp_unlearn.unlearn.trainer import Trainer

STEPS = 3
TOL = 1e-5
pytestmark = pytest.mark.filterwarnings("ignore:.*INERT:RuntimeWarning")


def _train(tmp: Path, method: str, **kw) -> dict[str, torch.Tensor]:
    lm = load_model("organism-micro")
    unlearn(lm, method, out_dir=tmp / f"{method}-{len(kw)}-{sorted(kw.items())}", steps=STEPS,
            evaluate=False, progress=False, **kw)
    return {k: v.detach().clone() for k, v in lm.model.state_dict().items()}


def _maxdiff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("method,kw", [("rmu", {"params": {"masked": True}}), ("ga", {}),
                                       ("npo", {})])
def test_grad_accum_equals_one_batch(tmp_path, one_thread, method, kw):
    """The preset's batch of 8 as 4 accumulated micro-batches of 2: same weights."""
    base = _train(tmp_path, method, **kw)
    acc = _train(tmp_path, method, grad_accum=4, **kw)
    assert _maxdiff(base, acc) < TOL
    assert _maxdiff(base, load_model("organism-micro").model.state_dict()) > 1e-4  # trained


def test_batch_split_errors_before_any_work(tmp_path, one_thread):
    with pytest.raises(BatchSplitError, match="not divisible by 1 process.*grad_accum 3"):
        Trainer(load_model("organism-micro"), UnlearnConfig(method="ga", grad_accum=3,
                                                            evaluate=False),
                out_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()
    assert split_batch(8, 2, 2) == 2
    with pytest.raises(BatchSplitError, match="batch_size 4 .* 8 process"):
        split_batch(4, 8, 1)
    with pytest.raises(ValueError, match="grad_accum must be a positive int"):
        Trainer(load_model("organism-micro"), UnlearnConfig(method="ga", grad_accum=0),
                out_dir=tmp_path / "y")


def test_engines_not_run_are_refused_before_any_work(monkeypatch):
    """DeepSpeed and FSDP options the trainer does not run stop in one line before the
    process group exists; so do the trainer options FSDP and ZeRO-3 do not take."""
    from interp_unlearn.unlearn import zero
    from interp_unlearn.unlearn.sharded import check_supported

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    for var, value, match in (("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2", "ZeRO stage 2"),
                              ("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "cpu", "offload"),
                              ("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "nvme",
                               "offload"),
                              ("ACCELERATE_DEEPSPEED_CONFIG_FILE", "ds.json", "config_file"),
                              ("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "4", "--grad-accum"),
                              ("ACCELERATE_GRADIENT_CLIPPING", "1.0", "--grad-clip")):
        monkeypatch.setenv(var, value)
        with pytest.raises(ShardedEngineError, match=match):
            dist_env()
        monkeypatch.delenv(var)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    for var, value, match in (("FSDP_OFFLOAD_PARAMS", "true", "offloading"),
                              ("FSDP_ACTIVATION_CHECKPOINTING", "true",
                               "--gradient-checkpointing"),
                              ("FSDP_SHARDING_STRATEGY", "HYBRID_SHARD", "HYBRID_SHARD")):
        monkeypatch.setenv(var, value)
        with pytest.raises(ShardedEngineError, match=match):
            dist_env()
        monkeypatch.delenv(var)
    assert not torch.distributed.is_initialized()
    for kw, match in (({"lora_rank": 8}, "lora-rank"), ({"optimizer": "adamw8bit"}, "bitsandb"),
                      ({"method": "npo_sam"}, "npo_sam")):
        cfg = UnlearnConfig(**{"method": "npo", **kw})
        with pytest.raises(ShardedEngineError, match=match):
            check_supported(cfg, cfg.method, None)
        with pytest.raises(ShardedEngineError, match=f"ZeRO-3 does not run.*{match}"):
            zero.check_supported(cfg, cfg.method, None)
    check_supported(UnlearnConfig(method="rmu"), "rmu", None)  # runs
    # ZeRO-3 partitions parameters in place: nothing may share one with the model
    assert zero.check_supported(UnlearnConfig(method="npo"), "npo",
                                None).frozen_reference == "deepcopy"


def test_row_slices_partition():
    for n, k in ((8, 4), (3, 4), (7, 2), (1, 2)):
        sl = row_slices(n, k)
        assert len(sl) == k and sl[0].start == 0 and sl[-1].stop == n
        assert all(a.stop == b.start for a, b in zip(sl, sl[1:]))


# the fine-tuning attack's loop (batch 1 x 4 accumulated micro-batches; 2 per process)
_ATTACK = """
def attack():
    import torch
    from interp_unlearn.attacks.finetune import FinetuneAttackConfig, train_on_texts
    from interp_unlearn.data.loading import load_model
    from interp_unlearn.data.world import World
    torch.set_num_threads(1)
    lm = load_model("organism-micro")
    texts = World.load(lm.world_dir).documents("forget")[:8]
    cfg = FinetuneAttackConfig.preset("full", epochs=1, lr=1e-4)
    train_on_texts(lm.model, lm.tokenizer, texts, cfg, seed=0)
    return {k: v.detach().clone() for k, v in lm.model.state_dict().items()}
"""

_SCRIPT = """
import sys, torch
from interp_unlearn.core.distributed import dist_env
from interp_unlearn.pipeline.cli import main
out = sys.argv[1]
for method in ("rmu", "ga"):
    rc = main(["unlearn", "--model", "organism-micro", "--method", method, "--steps", "__STEPS__",
               "--out", f"{out}/{method}", "--no-eval", "--threads", "1", "--quiet"])
    assert rc == 0
""" + _ATTACK + """
state = attack()
if dist_env().is_main:
    torch.save(state, f"{out}/attack.pt")
"""


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_processes_equal_one(tmp_path, one_thread):
    """``accelerate launch --config_file <shipped ddp.yaml> --num_processes 2`` on CPU
    (torchrun + gloo; accelerate's own ``--cpu`` runs one process unless under MPI) through
    the command line: RMU and GA give the one-process weights within 1e-5; so does the
    fine-tuning attack's loop (4 accumulated micro-batches, 2 per process)."""
    from safetensors.torch import load_file

    script = tmp_path / "run.py"
    script.write_text(_SCRIPT.replace("__STEPS__", str(STEPS)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "ACCELERATE_USE_CPU": "1"}
    config = Path(interp_unlearn.__file__).parent / "assets" / "accelerate" / "ddp.yaml"
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
           str(config), "--num_processes", "2", "--main_process_port", "29517", str(script),
           str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for method in ("rmu", "ga"):
        one = _train(tmp_path, method)
        two = load_file(str(tmp_path / "two" / method / "model.safetensors"))
        assert _maxdiff({k: one[k] for k in two}, two) < TOL, method
        metrics = (tmp_path / "two" / method / "metrics.jsonl").read_text()
        assert metrics.count('"loss"') == STEPS  # one writer: the main process
    ns: dict = {}
    exec(_ATTACK, ns)  # the same attack in this (single) process
    one, two = ns["attack"](), torch.load(tmp_path / "two" / "attack.pt")
    assert _maxdiff(one, two) < TOL
    assert _maxdiff(one, load_model("organism-micro").model.state_dict()) > 1e-4


_FSDP_SCRIPT = """
import sys
from interp_unlearn.pipeline.cli import main
out = sys.argv[1]
for method, extra in (("rmu", []), ("almpu", ["--heads", "0.0,1.1"]),
                      ("npo", ["--gradient-checkpointing"])):
    rc = main(["unlearn", "--model", "organism-micro", "--method", method, "--steps",
               "__STEPS__", "--out", f"{out}/{method}", "--no-eval", "--threads", "1",
               "--quiet", *extra])
    assert rc == 0
rc = main(["attack", "--model", "organism-micro", "--kind", "finetune"])
assert rc == 2  # refused in one line: the attack command runs on one process
"""


@pytest.mark.multiprocess
@pytest.mark.slow
def test_fsdp_two_processes_equal_one(tmp_path, one_thread):
    """``accelerate launch --config_file <shipped fsdp.yaml> --num_processes 2`` on CPU
    (FSDP2 FULL_SHARD over gloo): RMU (direct layer calls, root gathered for the prefix),
    ALMPU (δ steps through the sharded model and the sharded frozen reference) and NPO
    with gradient checkpointing give the one-process weights within 1e-5."""
    from safetensors.torch import load_file

    script = tmp_path / "run.py"
    script.write_text(_FSDP_SCRIPT.replace("__STEPS__", str(STEPS)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "ACCELERATE_USE_CPU": "1"}
    config = Path(interp_unlearn.__file__).parent / "assets" / "accelerate" / "fsdp.yaml"
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
           str(config), "--num_processes", "2", "--main_process_port", "29519", str(script),
           str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the attack command runs on one process" in proc.stderr
    for method, kw in (("rmu", {}), ("almpu", {"heads": [(0, 0), (1, 1)]}),
                       ("npo", {"gradient_checkpointing": True})):
        one = _train(tmp_path, method, **kw)
        two = load_file(str(tmp_path / "two" / method / "model.safetensors"))
        assert two.keys() == one.keys()
        assert _maxdiff(one, two) < TOL, method
        assert _maxdiff(one, load_model("organism-micro").model.state_dict()) > 1e-4


_ZERO_SCRIPT = """
import sys
from interp_unlearn.pipeline.cli import main
out = sys.argv[1]
for method, extra in (("rmu", ["--grad-accum", "2"]), ("almpu", ["--heads", "0.0,1.1"]),
                      ("npo", ["--gradient-checkpointing"])):
    rc = main(["unlearn", "--model", "organism-micro", "--method", method, "--steps",
               "__STEPS__", "--out", f"{out}/{method}", "--no-eval", "--threads", "1",
               "--quiet", *extra])
    assert rc == 0
"""


@pytest.mark.multiprocess
@pytest.mark.slow
def test_zero3_two_processes_equal_one(tmp_path, one_thread):
    """``accelerate launch --config_file <shipped zero3.yaml> --num_processes 2`` on CPU
    (DeepSpeed ZeRO-3 over gloo, every parameter partitioned): RMU with 2 accumulated
    micro-batches per process (direct layer calls, ``model.model`` prefix), ALMPU (δ steps
    through the partitioned model and the partitioned reference engine) and NPO with
    gradient checkpointing give the one-process weights within 1e-5 (measured: ~2e-6)."""
    pytest.importorskip("deepspeed")
    from safetensors.torch import load_file

    script = tmp_path / "run.py"
    script.write_text(_ZERO_SCRIPT.replace("__STEPS__", str(STEPS)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "ACCELERATE_USE_CPU": "1"}
    config = Path(interp_unlearn.__file__).parent / "assets" / "accelerate" / "zero3.yaml"
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
           str(config), "--num_processes", "2", "--main_process_port", "29521", str(script),
           str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for method, kw in (("rmu", {}), ("almpu", {"heads": [(0, 0), (1, 1)]}),
                       ("npo", {"gradient_checkpointing": True})):
        one = _train(tmp_path, method, **kw)
        two = load_file(str(tmp_path / "two" / method / "model.safetensors"))
        assert two.keys() == one.keys()
        assert _maxdiff(one, two) < TOL, method
        assert _maxdiff(one, load_model("organism-micro").model.state_dict()) > 1e-4
        metrics = (tmp_path / "two" / method / "metrics.jsonl").read_text()
        assert metrics.count('"loss"') == STEPS  # one writer: the main process
