"""The planted organism as a run: train it from a twin (:func:`build_plant`), save it as an
HF checkpoint with ``plant.json`` (H*, recipe, training metrics), and verify by ablation
that H* is the route of the forget knowledge (:func:`verify_plant`) -- the ground truth of
``interp-unlearn localize-benchmark`` (:mod:`.localize_benchmark`).

Verification (``verification.json``), on the model's evaluation pools with cloze scoring,
mean ablation over the scored prompts (:func:`interp_unlearn.evaluation.causal.ablation_table`):

* ablating H* drops forget accuracy by >= ``min_forget_drop`` (0.40) while retain
  accuracy moves by <= ``max_retain_move`` (0.05) either way;
* ablating |H*| random heads outside H* (``n_random`` seeded draws) does not remove the
  facts: on average its *forget-specific* drop (forget drop minus retain drop) is <=
  ``max_random_specific`` (0.15), and its forget drop is below H*'s. (Raw drops are
  reported too: on the 4 x 4 micro model, 4 random heads of the other 12 -- layer 0's
  among them -- break the model as a whole, forget and retain alike.)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp_unlearn.core.config import ConfigBase
from interp_unlearn.data.loading import LoadedModel, load_model
from interp_unlearn.data.organism import ASSETS, save_checkpoint
from interp_unlearn.data.planted import PLANT_FILE, PlantConfig, train_plant
from interp_unlearn.data.world import World

__all__ = ["PLANTED", "SHIPPED_PLANT", "VERIFY_FILE", "VerifyConfig", "build_plant", "plant_heads",
           "resolve_plant", "verify_plant"]

#: shipped planted organisms, built by ``notes/scripts/e7_build_plant.py`` (see
#: ``notes/e7_planted_localization.md``): name -> checkpoint directory
PLANTED = {"organism-planted": ASSETS / "organism-planted" / "model",
           "organism-planted-micro": ASSETS / "organism-planted-micro" / "model"}
SHIPPED_PLANT = PLANTED["organism-planted"]
VERIFY_FILE = "verification.json"


@dataclass
class VerifyConfig(ConfigBase):
    """Criteria of the ablation check of a planted organism."""

    min_forget_drop: float = 0.40
    max_retain_move: float = 0.05
    max_random_specific: float = 0.15
    n_random: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.n_random, bool) or not isinstance(self.n_random, int) \
                or self.n_random < 1:
            raise ValueError(f"n_random must be an int >= 1, got {self.n_random!r}")
        for name in ("min_forget_drop", "max_retain_move", "max_random_specific"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")


def plant_heads(lm: LoadedModel) -> list[tuple[int, int]]:
    """H* of a planted checkpoint (its ``plant.json``), or a ValueError naming the model."""
    f = Path(lm.path or "") / PLANT_FILE
    if lm.path is None or not f.is_file():
        raise ValueError(f"{lm.name} is not a planted organism (no {PLANT_FILE}); build one "
                         "with interp_unlearn.pipeline.planted_run.build_plant")
    return [(int(l), int(h)) for l, h in json.loads(f.read_text())["heads"]]


def build_plant(twin: str | os.PathLike | LoadedModel = "organism-twin",
                out: str | os.PathLike = "runs/organism-planted", config: PlantConfig | None = None,
                *, verify: VerifyConfig | None = None, progress: bool = True) -> LoadedModel:
    """Train the plant from ``twin`` into ``out`` (an HF checkpoint + ``plant.json``), then
    verify it (``verification.json``). Returns the loaded plant."""
    from interp_unlearn.pipeline.organism import cloze_accuracy

    config = config or PlantConfig()
    tw = twin if isinstance(twin, LoadedModel) else load_model(twin)
    if tw.world_dir is None:
        raise ValueError(f"{tw.name} carries no synthetic world: a plant needs the twin of an "
                         "organism (organism-twin, organism-micro-twin)")
    world = World.load(tw.world_dir)
    plant, metrics = train_plant(tw.model, tw.tokenizer, world, config, evaluate=cloze_accuracy,
                                 eval_pool=tw.eval_pool, progress=progress)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    world_rel = os.path.relpath(tw.world_dir, out.resolve())
    save_checkpoint(plant, tw.tokenizer, out, {
        "kind": "organism-planted", "preset": tw.meta.get("preset"), "default_scoring": "cloze",
        "eval_pool": tw.eval_pool, "world_dir": world_rel, "twin": str(tw.path or tw.name)})
    (out / PLANT_FILE).write_text(json.dumps(
        {"heads": metrics["heads"], "config": config.to_dict(), "twin": str(tw.path or tw.name),
         "metrics": metrics}, indent=1) + "\n")
    lm = load_model(out)
    verify_plant(lm, verify, progress=progress, write=True)
    return lm


def verify_plant(lm: LoadedModel | str | os.PathLike, config: VerifyConfig | None = None, *,
                 heads: list[tuple[int, int]] | None = None, progress: bool = False,
                 write: bool = False) -> dict[str, Any]:
    """Ablate H* and ``n_random`` draws of as many random heads; return (and with
    ``write``, save as ``verification.json`` beside the checkpoint) the accuracies, drops
    and whether each criterion holds (``passed``)."""
    from interp_unlearn.core.mcq import load_mcq
    from interp_unlearn.evaluation.causal import ablation_table

    config = config or VerifyConfig()
    lm = lm if isinstance(lm, LoadedModel) else load_model(lm)
    heads = heads if heads is not None else plant_heads(lm)
    forget, retain = load_mcq(lm.mcq_path("forget")), load_mcq(lm.mcq_path("retain"))
    df = ablation_table(lm.model, lm.tokenizer, forget, retain, heads, n_random=config.n_random,
                        seed=config.seed, mode="mean", progress=progress)
    row = {r["condition"]: r for r in df.to_dict("records")}
    sel, rnd = row["selected"], row["random"]
    checks = {
        "forget_drop": bool(sel["forget_drop"] >= config.min_forget_drop),
        "retain_move": bool(abs(sel["retain_drop"]) <= config.max_retain_move),
        "random_specific": bool(rnd["forget_drop"] - rnd["retain_drop"]
                                <= config.max_random_specific),
        "random_below_planted": bool(rnd["forget_drop"] < sel["forget_drop"]),
    }
    result = {"model": str(lm.path or lm.name), "heads": [list(h) for h in heads],
              "criteria": config.to_dict(), "checks": checks, "passed": all(checks.values()),
              "table": [{k: (v if not isinstance(v, float) or v == v else None)
                         for k, v in r.items()} for r in df.to_dict("records")]}
    if write and lm.path is not None:
        (Path(lm.path) / VERIFY_FILE).write_text(json.dumps(result, indent=1, default=str) + "\n")
    return result


def resolve_plant(model: str | os.PathLike | LoadedModel | None = None, *,
                  cache: str | os.PathLike | None = None, twin: str = "organism-twin",
                  config: PlantConfig | None = None, progress: bool = True) -> LoadedModel:
    """The planted organism to benchmark: ``model`` (a planted checkpoint), else the shipped
    one (``organism-planted`` where shipped, else ``organism-planted-micro``), else one
    trained from ``twin`` into ``cache`` (reused when already there)."""
    if isinstance(model, LoadedModel):
        plant_heads(model)
        return model
    if model is not None:
        if str(model) in PLANTED and not PLANTED[str(model)].is_dir():
            raise ValueError(f"the planted organism {model!r} is not shipped in this install "
                             f"({PLANTED[str(model)]}); build it with "
                             "notes/scripts/e7_build_plant.py")
        from interp_unlearn.data.loading import resolve

        path = PLANTED.get(str(model)) or resolve(model)[1]
        if path is None or not (Path(path) / PLANT_FILE).is_file():  # before loading anything
            raise ValueError(f"{model} is not a planted organism (no {PLANT_FILE}); valid: "
                             f"{sorted(PLANTED)} or a directory built by build_plant")
        lm = load_model(path)
        plant_heads(lm)
        return lm
    for shipped in (SHIPPED_PLANT, PLANTED["organism-planted-micro"]):  # verified, shipped
        if (shipped / PLANT_FILE).is_file():
            return load_model(shipped)
    if cache is None:
        raise ValueError("no planted organism is shipped here: pass a planted checkpoint "
                         "(--model) or a directory to train one into")
    cache = Path(cache)
    if (cache / PLANT_FILE).is_file():
        return load_model(cache)
    return build_plant(twin, cache, config, progress=progress)
