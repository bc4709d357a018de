import os
from pathlib import Path

# A stray hub call must fail at once, never download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# pytest-xdist (CI runs ``-n auto``): split the cores between the workers, for torch here
# and for every process a test starts (CLI launches, notebooks, submitit jobs)
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
if _WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _WORKERS))

import pytest  # noqa: E402 - after the environment above
import torch  # noqa: E402

if _WORKERS > 1:
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

def pytest_collection_modifyitems(config, items):
    """Under ``--dist loadgroup``, a module with an expensive module- or session-scoped
    fixture of its own (a reference grid run, a shared CLI run) keeps all its tests on one
    worker, so the fixture is built once; every other test is scheduled on its own (better
    balance than whole files). conftest's shared fixtures are cheap (a micro load)."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.values() if info is not None else ()
        own = any(d.scope in ("module", "session") and Path(str(d.baseid)).name
                  == item.path.name for fixdefs in defs for d in fixdefs)
        if own:
            item.add_marker(pytest.mark.xdist_group(item.path.name))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the module: tiny models on a shared 2-core machine, where
    intra-op threads only add contention (measured ~80x slower forwards with 2 threads
    under load). Restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

@pytest.fixture(scope="module")
def micro():
    """A fresh load of the shipped micro organism, shared by one test module."""
    from interp_unlearn.data.loading import load_model

    return load_model("organism-micro")

# ---- the tiny config-built Llama (4 layers x 4 heads x d_head 16) on a small world, shared
# by the intervention and localization tests (nnsight/pyvene style: built, not loaded)
TINY_LAYERS, TINY_HEADS, TINY_D_HEAD = 4, 4, 16

@pytest.fixture(scope="module")
def world():
    return _world().generate(_world_config()(n_pathogens=20, n_towns=20, n_general_docs=20))

@pytest.fixture(scope="module")
def tokenizer(world):
    return _train_tokenizer()(world, 400)

@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = _llama()[0](hidden_size=TINY_HEADS * TINY_D_HEAD, num_hidden_layers=TINY_LAYERS,
                         num_attention_heads=TINY_HEADS, num_key_value_heads=2,
                         intermediate_size=128, vocab_size=len(tokenizer),
                         max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return _llama()[1](config).eval()

def _world():
    from interp_unlearn.data.world import World
    return World

def _world_config():
    from interp_unlearn.data.world import WorldConfig
    return WorldConfig

def _train_tokenizer():
    from interp_unlearn.data.tokenizer import train_tokenizer
    return train_tokenizer

def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM
    return LlamaConfig, LlamaForCausalLM
