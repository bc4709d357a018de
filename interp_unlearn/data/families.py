"""Which RMU/ALMPU preset and which localization defaults a model gets, per model family.

One table (:data:`FAMILIES`) decides. A model's family is detected (:func:`detect_family`)
from, in this order:

1. its checkpoint's ``interp_unlearn.json`` (``kind: organism*``): ``organism-micro`` when
   its ``preset`` is ``micro``, else ``organism`` -- unlearned organism checkpoints keep
   the file, so they stay organisms;
2. the HF config's ``model_type`` together with a name hint (``zephyr`` in the hub name or
   path *and* ``model_type == "mistral"``);
3. the ``model_type`` alone (``mistral``, ``llama``, ``qwen2``/``qwen3``, ``gemma*``);
4. otherwise the fallback :data:`FALLBACK` (Zephyr's recipe scaled to the depth), with an
   :class:`UnknownFamilyWarning`.

The numbers stay in the methods' own preset tables (``unlearn/rmu.py``: ``RMU_PRESETS``;
``unlearn/almpu.py``: ``ALMPU.presets``; GA/GA-MP/NPO/DPO have organism presets only); a
family names which preset to take, and for families other than Zephyr and the organisms
overrides only RMU/ALMPU's ``layer``:

    ``layer = round(7/32 * n_layers)`` (rounded half up)

Only **Zephyr-7B's** recipe comes from the reference (``protocols.md`` §1: ℓ = 7, c = 6.5,
α = 1200, 150 batches of 4, lr 5e-5); the organisms' presets were tuned on the organisms.
For every other family the values are Zephyr's with the layer scaled by depth and are
**unvalidated**: the steering coefficient ``c`` depends on the residual-stream norm at
ℓ, which differs between families (the WMDP authors used c = 300, α = 350 for Yi-34B), so
check the forget/retain accuracies and tune ``c``/``α`` (``--set steering_coeff=...``).

Localization defaults: LoFiT's (:class:`~interp_unlearn.localize.LocalizeConfig`). K:

* the shipped organism (6 x 6 heads): **K = 4** -- the one K of the README, the reproduce
  grid, the notebooks and the E5 causal check (``notes/e5_phase1_signal.md``); LoFiT's
  10 % would give 3;
* the micro test organism: LoFiT's default 10 % of the heads (1 of 16);
* 7B-class real models: the ~3 % LoFiT's scripts use (32 of Llama-2-7B's 1,024 heads),
  ``K = max(1, round(K% * heads))``.

The phase-1 objective is ``auto`` everywhere (``LocalizeConfig.objective``): organisms,
which carry a synthetic world, get :data:`~interp_unlearn.localize.ORGANISM_OBJECTIVE`
(``answer-ce``: LoFiT's CE on the answer tokens of the practice pool's forget Q/A), real
models given a forget corpus the paper's ``corpus-ce``. The shipped organism also gets
**lambda = 1e-4** instead of LoFiT's 1e-3: on its memorised Q/A (answer CE 0.005 nats)
lambda = 1e-3 keeps most heads at Adam's dither scale (seed-to-seed Spearman 0.82, top-4
Jaccard 0.42), lambda = 1e-4 lifts the top scores ~2,600x above it (Spearman 0.98, Jaccard
0.73; seeds 0-2, ``notes/e5_phase1_signal.md``). Selection used only the practice pool;
the eval pool scored the causal check alone. The lambda goes with ``answer-ce``: overriding
the objective to the paper's ``corpus-ce`` keeps it, so pass ``l1_lambda=1e-3`` for the
paper's setting (at 1e-4 ``corpus-ce`` is reproducible but its heads are not causal). The
micro organism keeps LoFiT's lambda (not measured there).

    fam = detect_family(lm)                     # a LoadedModel, HF model/config, name or path
    preset, params = method_preset("rmu", lm)   # ("zephyr", {"layer": 5}) for a 24-layer Qwen2
    cfg = localize_config(lm)                   # LocalizeConfig with the family's top_k
    preset_table(n_layers=32)                   # the table as a DataFrame
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interp_unlearn.core.checkpoint import read_meta


__all__ = [
    "FALLBACK",
    "FAMILIES",
    "ORGANISM_L1_LAMBDA",
    "ORGANISM_TOP_K",
    "Family",
    "ModelInfo",
    "UnknownFamilyWarning",
    "UnvalidatedPresetWarning",
    "detect_family",
    "model_info",
    "scaled_layer",
]

ZEPHYR_LAYER, ZEPHYR_DEPTH = 7, 32  # RMU's layer for Zephyr-7B and its number of layers
LOFIT_SCRIPT_FRACTION = 32 / 1024   # LoFiT's scripts: 32 of Llama-2-7B's 1,024 heads
ORGANISM_TOP_K = 4                  # the shipped organism's K (module docstring)
ORGANISM_L1_LAMBDA = 1e-4           # its phase-1 L1 coefficient (module docstring)


class UnknownFamilyWarning(UserWarning):
    """The model's family is not in :data:`FAMILIES`; :data:`FALLBACK` is used."""


class UnvalidatedPresetWarning(UserWarning):
    """A method runs on a family its preset was not validated on (or with no preset)."""


@dataclass(frozen=True)
class Family:
    """One row of the preset table.

    Attributes:
        name: Family name (``organism``, ``zephyr``, ``llama`` ...).
        model_types: HF ``config.model_type`` values of the family.
        name_hints: Lower-case substrings of the model name/path that must also match.
        presets: Preset names tried, in order, in each method's own table (``{preset}``
            is the organism checkpoint's ``preset``); none found: the method's defaults.
        scale_layer: RMU/ALMPU ``layer`` := :func:`scaled_layer` of the model's depth.
        validated: Whether the values were validated on this family.
        top_k_fraction: Localization K as a fraction of all heads; ``None``: LoFiT's 10 %.
        localize: Other :class:`~interp_unlearn.localize.LocalizeConfig` overrides.
        notes: Where the values come from.
    """

    name: str
    model_types: tuple[str, ...] = ()
    name_hints: tuple[str, ...] = ()
    presets: tuple[str, ...] = ()
    scale_layer: bool = False
    validated: bool = False
    top_k_fraction: float | None = None
    localize: Mapping[str, Any] = field(default_factory=dict)
    notes: str = ""


_SCALED = ("Zephyr's RMU recipe (protocols.md §1) with layer = round(7/32 * n_layers); "
           "c, alpha, lr, steps unchanged. UNVALIDATED on this family: check accuracies "
           "and tune c/alpha.")

FAMILIES: tuple[Family, ...] = (
    Family("organism-micro", presets=("organism-{preset}", "organism"), validated=True,
           notes="the 4-layer test organism; presets tuned on it (unlearn/rmu.py "
                 "ORGANISM_NOTES); detected by interp_unlearn.json (kind organism, preset "
                 "micro)"),
    Family("organism", presets=("organism-{preset}", "organism"), validated=True,
           localize={"top_k": ORGANISM_TOP_K, "l1_lambda": ORGANISM_L1_LAMBDA},
           notes="the shipped organism; presets tuned on it (unlearn/rmu.py ORGANISM_NOTES); "
                 "detected by interp_unlearn.json (kind organism)"),
    Family("zephyr", model_types=("mistral",), name_hints=("zephyr",), presets=("zephyr",),
           validated=True, top_k_fraction=LOFIT_SCRIPT_FRACTION,
           notes="WMDP's RMU recipe for zephyr-7b-beta, the only one the reference gives "
                 "(protocols.md §1): layer 7, c 6.5, alpha 1200, 150 batches of 4, lr 5e-5. "
                 "ALMPU's delta values (sigma_adv, epsilon) are not in the paper."),
    Family("mistral", model_types=("mistral",), presets=("zephyr",), scale_layer=True,
           top_k_fraction=LOFIT_SCRIPT_FRACTION,
           notes="Zephyr-7B is a Mistral-7B fine-tune. " + _SCALED),
    Family("llama", model_types=("llama",), presets=("zephyr",), scale_layer=True,
           top_k_fraction=LOFIT_SCRIPT_FRACTION, notes=_SCALED),
    Family("qwen2", model_types=("qwen2", "qwen3"), presets=("zephyr",), scale_layer=True,
           top_k_fraction=LOFIT_SCRIPT_FRACTION, notes="Qwen2/2.5 and Qwen3. " + _SCALED),
    Family("gemma", model_types=("gemma", "gemma2", "gemma3_text"), presets=("zephyr",),
           scale_layer=True, top_k_fraction=LOFIT_SCRIPT_FRACTION,
           notes="Gemma scales embeddings by sqrt(d_model): residual norms (and so c) differ "
                 "most from Zephyr's. " + _SCALED),
)

#: Used for any other family, with an :class:`UnknownFamilyWarning`.
FALLBACK = Family("unknown", presets=("zephyr",), scale_layer=True,
                  top_k_fraction=LOFIT_SCRIPT_FRACTION,
                  notes="fallback for an unknown family: " + _SCALED + " RMU/ALMPU also need "
                        "model.layers[i].mlp.down_proj and self_attn.o_proj.")


# ----------------------------------------------------------------------- detection


@dataclass(frozen=True)
class ModelInfo:
    """What detection reads: ``model_type`` and depth (``None`` if unknown), the name or
    path, and the checkpoint's ``interp_unlearn.json`` (empty if none)."""

    model_type: str | None
    n_layers: int | None
    name: str
    meta: Mapping[str, Any]

    @property
    def label(self) -> str:
        """The name for messages (its first word; ``<unnamed>`` when empty)."""
        return (self.name.split() or ["<unnamed>"])[0]


def _config_fields(config: Any) -> tuple[str | None, int | None]:
    if isinstance(config, Mapping):
        config = config.get("text_config") or config
        layers = config.get("num_hidden_layers", config.get("n_layer"))
        return config.get("model_type"), None if layers is None else int(layers)
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    layers = getattr(config, "num_hidden_layers", None)
    return getattr(config, "model_type", None), None if layers is None else int(layers)


def model_info(model: Any) -> ModelInfo:
    """Read :class:`ModelInfo` from a ``LoadedModel``, an HF model or config, a built-in
    name (``organism`` ...), a local checkpoint directory or a hub name (no download: a hub
    name gives only its name)."""
    from transformers import PretrainedConfig, PreTrainedModel

    from interp_unlearn.data.loading import BUILTIN, LoadedModel, builtin_path

    if isinstance(model, LoadedModel):
        if model.model is not None:
            mtype, depth = _config_fields(model.model.config)
        else:  # a metadata-only handle (weights not loaded): read the checkpoint's config
            cfg_file = Path(model.path or "") / "config.json"
            mtype, depth = (_config_fields(json.loads(cfg_file.read_text()))
                            if model.path and cfg_file.is_file() else (None, None))
        name = str(model.path or model.name)
        return ModelInfo(mtype, depth, f"{model.name} {name}", dict(model.meta))
    if isinstance(model, (PreTrainedModel, PretrainedConfig)):
        config = model.config if isinstance(model, PreTrainedModel) else model
        mtype, depth = _config_fields(config)
        name = str(getattr(model, "name_or_path", "") or getattr(config, "name_or_path", ""))
        path = Path(name) if name and Path(name).is_dir() else None
        return ModelInfo(mtype, depth, name, read_meta(path))
    if isinstance(model, (str, os.PathLike)):
        s = str(model)
        path = builtin_path(s) if s in BUILTIN else Path(s).expanduser()
        if path.is_dir():
            cfg_file = path / "config.json"
            mtype, depth = (_config_fields(json.loads(cfg_file.read_text()))
                            if cfg_file.is_file() else (None, None))
            return ModelInfo(mtype, depth, f"{s} {path}", read_meta(path))
        return ModelInfo(None, None, s, {})
    raise TypeError(f"expected a LoadedModel, an HF model or config, a name or a path; got "
                    f"{type(model).__name__}")


def _organism_family(meta: Mapping[str, Any]) -> Family | None:
    if not str(meta.get("kind", "")).startswith("organism"):
        return None
    wanted = "organism-micro" if meta.get("preset") == "micro" else "organism"
    return next(f for f in FAMILIES if f.name == wanted)


def detect_family(model: Any, *, warn: bool = True) -> Family:
    """The :class:`Family` of ``model`` (see the module docstring for the order).

    Unknown families return :data:`FALLBACK` and, with ``warn``, issue an
    :class:`UnknownFamilyWarning` naming the ``model_type`` and the known ones."""
    info = model if isinstance(model, ModelInfo) else model_info(model)
    org = _organism_family(info.meta)
    if org is not None:
        return org
    name = info.name.lower()
    for fam in FAMILIES:
        if not fam.name_hints or not any(h in name for h in fam.name_hints):
            continue
        if info.model_type is None or info.model_type in fam.model_types:
            return fam
    for fam in FAMILIES:
        if not fam.name_hints and info.model_type in fam.model_types:
            return fam
    if warn:
        known = sorted({t for f in FAMILIES for t in f.model_types})
        warnings.warn(f"unknown model family for {info.label!r} (model_type "
                      f"{info.model_type!r}; known: {known}): using the fallback -- Zephyr's "
                      "RMU recipe with layer = round(7/32 * n_layers), unvalidated",
                      UnknownFamilyWarning, stacklevel=2)
    return FALLBACK


# ------------------------------------------------------------------------- presets


def scaled_layer(n_layers: int) -> int:
    """Zephyr's RMU layer scaled to a depth: ``round(7/32 * n_layers)``, half up, within
    ``0..n_layers-1``."""
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
    return min(n_layers - 1, int(ZEPHYR_LAYER * n_layers / ZEPHYR_DEPTH + 0.5))


