"""``reproduce`` on a checkpoint that is not an organism: a tiny config-built Llama (random
weights, the micro organism's tokenizer) given forget/retain corpora and MCQ files -- no
synthetic world, no twin. Localization trains on the given forget corpus, unlearning and
attacks use the given files, and recovery is reported as unavailable."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from interp_unlearn.data.loading import load_model
from interp_unlearn.pipeline.reproduce import (ReproduceConfig, build_plan, build_tables,
                                               load_results, run_reproduce)
from interp_unlearn.pipeline.reproduce.tables import to_markdown

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def real_like(tmp_path_factory):
    """A plain HF checkpoint (no interp_unlearn.json) and its data files."""
    micro = load_model("organism-micro")
    d = tmp_path_factory.mktemp("real")
    cfg = micro.model.config.to_dict()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in cfg.items()
                                            if k in LlamaConfig().to_dict()}))
    model.save_pretrained(d / "model")
    micro.tokenizer.save_pretrained(d / "model")
    world = micro.world_dir
    files = {"forget_corpus": world / "corpora" / "forget-practice.jsonl",
             "retain_corpus": world / "corpora" / "retain-practice.jsonl",
             "mcq": {"forget": str(world / "mcq" / "forget-practice.jsonl"),
                     "retain": str(world / "mcq" / "retain-practice.jsonl")}}
    return d / "model", {k: (str(v) if not isinstance(v, dict) else v) for k, v in files.items()}


def test_reduced_grid_on_a_non_organism_checkpoint(real_like, tmp_path):
    model, files = real_like
    cfg = ReproduceConfig.from_dict(dict(
        model=str(model), seeds=[0], methods=["rmu", "almpu"], table1_sizes=[0, 2],
        table2_sizes=[2], table2_methods=["rmu"], ablation_sizes=[0], head_variants=[],
        location_variants=[], top_k=2, unlearn={"*": {"max_num_batches": 2}},
        localize={"steps": 2}, attack_overrides={"epochs": 1, "lora_rank": 4},
        threads=1, workers=1, progress=False, figures=False, scoring="cloze", **files))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unvalidated family, no twin: asserted below
        summary = run_reproduce(cfg, tmp_path / "run")
    assert summary["ran"] == len(build_plan(cfg))
    df = load_results(tmp_path / "run")
    loc = df[(df["kind"] == "localize") & (df["metric"] == "selected")]
    assert len(loc) == model_heads(model) and loc["value"].sum() == 2
    un = df[(df["kind"] == "unlearn") & (df["metric"] == "accuracy")]
    assert set(un["model_id"]) == {"rmu", "almpu"} and set(un["domain"]) == {"forget", "retain"}
    # the unlearning runs used the given files, not a world (there is none)
    ucfg = json.loads(next((tmp_path / "run").rglob("unlearn_config.json")).read_text())
    assert ucfg["forget_corpus"] == files["forget_corpus"]
    assert ucfg["forget_mcq"] == files["mcq"]["forget"]
    # the run's scoring reaches every cell (the plain checkpoint's own would be letter)
    assert ucfg["eval_scoring"] == "cloze"
    assert set(df[df["kind"] == "attack"]["scoring"].dropna()) == {"cloze"}
    att = df[(df["kind"] == "attack") & (df["metric"] == "accuracy")]
    assert set(att["N"].astype(int)) == {0, 2}
    # Table 2's unrelated data is the given retain corpus
    t2 = df[(df["kind"] == "attack") & (df["table"] == "table2")]
    assert set(t2["data_spec"]) == {files["retain_corpus"]}
    tables = build_tables(tmp_path / "run")
    rec = tables["table1_recovery"]
    assert rec["mean"].isna().all()
    md = to_markdown(rec, "table1_recovery")
    assert "Recovery unavailable: no never-learned twin" in md


def model_heads(path) -> int:
    c = json.loads((path / "config.json").read_text())
    return c["num_hidden_layers"] * c["num_attention_heads"]


def test_missing_corpus_is_named(real_like, tmp_path):
    model, files = real_like
    cfg = ReproduceConfig.from_dict(dict(
        model=str(model), seeds=[0], methods=["almpu"], table1_sizes=[0], table2_sizes=[0],
        table2_methods=[], ablation_sizes=[0], head_variants=[], location_variants=[],
        threads=1, workers=1, progress=False, figures=False, mcq=files["mcq"]))
    with pytest.raises(Exception, match="forget_corpus=FILE"):
        run_reproduce(cfg, tmp_path / "run")
