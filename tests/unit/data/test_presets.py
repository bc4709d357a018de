"""interp_unlearn.presets: model-family detection and the preset each family gets.

Models are built from configs in the test (no downloads)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

from interp_unlearn.data.loading import LoadedModel
from interp_unlearn.pipeline.presets import (FALLBACK, FAMILIES, UnknownFamilyWarning,
                                          UnvalidatedPresetWarning, detect_family, localize_config, method_preset,
                                          preset_table, scaled_layer)
from interp_unlearn.unlearn.registry import available_methods, get_method
from interp_unlearn.unlearn.methods.rmu import RMU_PRESETS
from interp_unlearn.unlearn.trainer import UnlearnConfig, resolve_config

torch.set_num_threads(1)
TINY = dict(hidden_size=16, intermediate_size=32, num_attention_heads=4, vocab_size=32)


def tiny(arch: str, n_layers: int = 2, name: str | None = None):
    torch.manual_seed(0)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(num_hidden_layers=n_layers, **TINY))
    elif arch == "mistral":
        model = MistralForCausalLM(MistralConfig(num_hidden_layers=n_layers,
                                                 num_key_value_heads=2, **TINY))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(num_hidden_layers=n_layers, num_key_value_heads=2,
                                             **TINY))
    elif arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_layer=n_layers, n_head=4, n_embd=16, vocab_size=32,
                                           n_positions=16))
    else:
        raise ValueError(arch)
    if name is not None:
        model.config._name_or_path = name
    return model


# ------------------------------------------------------------------------ detection


@pytest.mark.parametrize("arch,name,family", [
    ("llama", None, "llama"),
    ("mistral", None, "mistral"),
    ("mistral", "HuggingFaceH4/zephyr-7b-beta", "zephyr"),
    ("mistral", "/ckpt/Zephyr-7B-unlearned", "zephyr"),
    ("llama", "someone/zephyr-llama", "llama"),   # the hint needs model_type mistral
    ("qwen2", "Qwen/Qwen2.5-0.5B", "qwen2"),
])
def test_family_of_config_built_models(arch, name, family):
    model = tiny(arch, name=name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a known family never warns
        assert detect_family(model).name == family
        assert detect_family(model.config).name == family


def test_family_from_names_and_directories(tmp_path, micro):
    assert detect_family("organism-micro").name == "organism-micro"
    assert detect_family("organism").name == "organism"
    assert detect_family(micro).name == "organism-micro"
    assert detect_family(micro.model).name == "organism-micro"  # via name_or_path's meta
    assert detect_family("HuggingFaceH4/zephyr-7b-beta").name == "zephyr"  # hub name, no config
    # a saved Qwen2 checkpoint directory, and the same with an organism meta file
    model = tiny("qwen2")
    model.save_pretrained(tmp_path / "q")
    assert detect_family(tmp_path / "q").name == "qwen2"
    (tmp_path / "q" / "interp_unlearn.json").write_text(json.dumps(
        {"kind": "organism", "preset": "small"}))
    assert detect_family(str(tmp_path / "q")).name == "organism"


def test_unknown_family_falls_back_with_a_warning():
    model = tiny("gpt2", n_layers=3)
    with pytest.warns(UnknownFamilyWarning, match="model_type 'gpt2'.*round\\(7/32"):
        fam = detect_family(model)
    assert fam is FALLBACK and fam.scale_layer and not fam.validated
    with pytest.warns(UnknownFamilyWarning):
        assert method_preset("rmu", model) == ("zephyr", {"layer": scaled_layer(3)})
    with pytest.warns(UnknownFamilyWarning):
        detect_family("someone/brand-new-model")  # hub name, nothing to read
    with pytest.raises(TypeError, match="expected a LoadedModel"):
        detect_family(3.5)


# -------------------------------------------------------------------------- presets


def test_scaled_layer():
    assert scaled_layer(32) == 7  # Zephyr's own
    assert [scaled_layer(n) for n in (16, 24, 28, 40, 80)] == [4, 5, 6, 9, 18]  # half up
    assert scaled_layer(1) == 0 and scaled_layer(2) == 0 and scaled_layer(4) == 1
    with pytest.raises(ValueError, match="positive int"):
        scaled_layer(0)


@pytest.mark.parametrize("arch,n_layers,name,expected", [
    ("llama", 32, None, ("zephyr", {"layer": 7})),
    ("qwen2", 24, None, ("zephyr", {"layer": 5})),
    ("mistral", 16, None, ("zephyr", {"layer": 4})),
    ("mistral", 2, "HuggingFaceH4/zephyr-7b-beta", ("zephyr", {})),  # Zephyr: the recipe as is
])
def test_rmu_almpu_presets(arch, n_layers, name, expected):
    config = tiny(arch, n_layers=1, name=name).config
    config.num_hidden_layers = n_layers  # depth is all that matters; no need to build it
    assert method_preset("rmu", config) == expected
    assert method_preset("almpu", config) == expected
    assert method_preset("ga", config) == (None, {})  # no Zephyr preset: method defaults


def test_organisms_get_what_the_trainer_picks_today(micro, tmp_path):
    """The table reproduces the trainer's own choice (``resolve_config`` without a preset)
    for organisms, and for methods without a Zephyr preset on any model."""
    small = LoadedModel(micro.model, micro.tokenizer, "x", tmp_path,
                        {"kind": "organism", "preset": "small"})
    plain = LoadedModel(tiny("llama"), None, "tiny-llama", None, {})
    for name in available_methods():
        cls = get_method(name)
        cases = [micro, small] + ([plain] if "zephyr" not in cls.presets else [])
        for lm in cases:
            trainer_choice = resolve_config(UnlearnConfig(method=name), lm)[0].preset
            assert method_preset(name, lm) == (trainer_choice, {}), (name, lm.name)
        assert method_preset(name, micro)[0] == ("organism-micro" if "organism-micro"
                                                 in cls.presets else "organism")


def test_unvalidated_family_or_missing_preset_warns_only_then(micro):
    """A preset taken for a family it was not validated on, or no preset at all, says so;
    an organism with its own preset, or an explicit preset, does not."""
    llama = LoadedModel(tiny("llama", n_layers=12), None, "tiny-llama", None, {})
    with pytest.warns(UnvalidatedPresetWarning, match=r"rmu on tiny-llama \(family llama\): "
                                                       r"preset 'zephyr' with \{'layer': 3\}"):
        resolve_config(UnlearnConfig(method="rmu"), llama)
    with pytest.warns(UnvalidatedPresetWarning, match="no preset: the method's defaults"):
        resolve_config(UnlearnConfig(method="ga"), llama)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnvalidatedPresetWarning)
        resolve_config(UnlearnConfig(method="rmu"), micro)
        resolve_config(UnlearnConfig(method="rmu", preset="zephyr"), llama)


def test_table_feeds_the_trainer():
    lm = LoadedModel(tiny("llama", n_layers=12), None, "tiny-llama", None, {})
    preset, params = method_preset("rmu", lm)
    resolved, p = resolve_config(UnlearnConfig(method="rmu", preset=preset, params=params), lm)
    assert resolved.preset == "zephyr" and p.layer == scaled_layer(12) == 3
    assert p.steering_coeff == RMU_PRESETS["zephyr"]["params"]["steering_coeff"]
    assert resolved.lr == RMU_PRESETS["zephyr"]["config"]["lr"]
    # explicit parameters still win over the family's layer
    _, p = resolve_config(UnlearnConfig(method="rmu", preset=preset,
                                        params={**params, "layer": 1}), lm)
    assert p.layer == 1


def test_localize_defaults(micro):
    assert localize_config(micro).top_k is None  # organism: LoFiT's 10 %
    config = LlamaConfig(num_hidden_layers=32, num_attention_heads=32, hidden_size=64,
                         intermediate_size=8, vocab_size=8)
    assert localize_config(config).top_k == 32  # LoFiT's scripts: 32 of 1,024 heads
    assert localize_config(tiny("qwen2")).top_k == 1  # never 0
    cfg = localize_config(config, top_k=5, backend="nnsight", steps=3)
    assert (cfg.top_k, cfg.backend, cfg.steps) == (5, "nnsight", 3)
    with pytest.raises(TypeError, match="count the heads"):
        localize_config("HuggingFaceH4/zephyr-7b-beta")


def test_preset_table():
    df = preset_table(n_layers=32)
    assert len(df) == 2 * (len(FAMILIES) + 1)
    row = lambda fam, m: df[(df.family == fam) & (df.method == m)].iloc[0]  # noqa: E731
    z = RMU_PRESETS["zephyr"]["params"]
    for fam in ("zephyr", "llama", "qwen2", "unknown"):
        r = row(fam, "rmu")
        assert (r.preset, r.layer, r.steering_coeff, r.alpha) == \
               ("zephyr", 7, z["steering_coeff"], z["alpha"])
    assert row("organism-micro", "almpu").preset == "organism-micro"
    assert row("organism-micro", "rmu").layer == RMU_PRESETS["organism-micro"]["params"]["layer"]
    unvalidated = df[~df.validated]
    assert set(unvalidated.family) == {"mistral", "llama", "qwen2", "gemma", "unknown"}
    assert unvalidated.notes.str.contains("UNVALIDATED").all()
    assert (preset_table().query("family == 'llama'").layer == "round(7/32*L)").all()
