"""export_hf: a standard HF checkpoint that transformers, lm-eval's ``hf`` model and
load_model all read back unchanged."""

import json
import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM

from interp_unlearn.data.export import export_hf
from interp_unlearn.data.loading import load_model
from interp_unlearn.data.organism import META_FILE

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def exported(micro, tmp_path_factory):
    return export_hf(micro.model, micro.tokenizer, tmp_path_factory.mktemp("export") / "ckpt",
                     meta={"method": "none", "default_scoring": "cloze"})


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def test_reload_with_transformers_is_identical(micro, exported):
    assert (exported / "model.safetensors").is_file() and (exported / "config.json").is_file()
    assert not list(exported.glob("*.bin"))
    reloaded = AutoModelForCausalLM.from_pretrained(exported, local_files_only=True).eval()
    ids = micro.tokenizer("Question: How is Vorkelvirus transmitted?\nAnswer: airborne droplets",
                          return_tensors="pt").input_ids
    assert torch.equal(logits(reloaded, ids), logits(micro.model, ids))
    assert reloaded.state_dict().keys() == micro.model.state_dict().keys()
    for k, v in micro.model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[k], v), k
    assert json.loads((exported / META_FILE).read_text()) == {"method": "none", "default_scoring": "cloze"}


def test_lm_eval_hf_loads_it(micro, exported):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    theirs = HFLM(pretrained=str(exported), device="cpu", batch_size=2, dtype="float32")
    ours = HFLM(pretrained=micro.model, tokenizer=micro.tokenizer, device="cpu", batch_size=2)
    reqs = [Instance("loglikelihood", {}, ("Question: How is Vorkelvirus transmitted?\nAnswer:",
                                           " airborne droplets"), 0),
            Instance("loglikelihood", {}, ("The baker sold", " an old map"), 1)]
    assert theirs.loglikelihood(reqs, disable_tqdm=True) == ours.loglikelihood(reqs, disable_tqdm=True)


def test_loaded_model_round_trip_keeps_world(micro, tmp_path):
    out = export_hf(micro, out_dir=tmp_path / "ckpt")  # LoadedModel: tokenizer and meta from it
    back = load_model(out)
    assert back.default_scoring == "cloze" and back.eval_pool == "practice"
    assert back.mcq_path("forget") == micro.mcq_path("forget")  # world_dir made absolute
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.equal(logits(back.model, ids), logits(micro.model, ids))


def test_refusals(micro, exported, tmp_path):
    with pytest.raises(FileExistsError, match="overwrite"):
        export_hf(micro.model, micro.tokenizer, exported)
    with pytest.raises(TypeError, match="PreTrainedModel"):
        export_hf(torch.nn.Linear(2, 2), micro.tokenizer, tmp_path / "a")
    with pytest.raises(ValueError, match="tokenizer is required"):
        export_hf(micro.model, None, tmp_path / "b")
    handle = micro.model.model.layers[0].self_attn.o_proj.register_forward_pre_hook(
        lambda m, args: None)
    try:
        with pytest.warns(RuntimeWarning, match="hooks are not saved"):
            export_hf(micro.model, micro.tokenizer, tmp_path / "c")
    finally:
        handle.remove()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        export_hf(micro.model, micro.tokenizer, tmp_path / "c", overwrite=True)
