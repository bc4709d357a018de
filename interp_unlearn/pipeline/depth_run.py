""":func:`run_depth`: load the unlearned, full and reference models -> UDS per layer (and
head) -> ``uds.csv``, ``uds_heads.csv``, ``per_question.csv``, ``summary.json``,
``depth_config.json`` and figures (the CLI's ``depth``; :mod:`interp_unlearn.evaluation.depth`)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from interp_unlearn.core.mcq import MCQ, load_mcq
from interp_unlearn.data.loading import LoadedModel, load_model
from interp_unlearn.evaluation.depth import DepthConfig, depth_scores

__all__ = ["run_depth"]


def _items(lm: LoadedModel, mcq: Any) -> list[MCQ]:
    if isinstance(mcq, str) and mcq in ("forget", "retain"):
        return load_mcq(lm.mcq_path(mcq))
    if isinstance(mcq, (str, os.PathLike)):
        return load_mcq(mcq)
    return list(mcq)


def run_depth(model: Any, out: str | os.PathLike | None = None, *, full: Any = None,
              reference: Any = None, mcq: Any = "forget", control: Any = "retain",
              config: DepthConfig | None = None, device: str = "auto",
              dtype: str | None = None, progress: bool = True,
              formats: Sequence[str] = ("html", "png")) -> pd.DataFrame:
    """The depth of ``model``'s unlearning (a name, path or loaded model).

    ``full`` (the model before unlearning) and ``reference`` (the never-learned model)
    default to the checkpoint's own (:func:`~interp_unlearn.attacks.common.related_models`:
    an unlearned organism's source and its twin); a model without a never-learned
    reference is an error naming ``--reference``. ``mcq``: the questions (``forget`` --
    the full model's own set -- or a file); ``control``: questions the reference knows
    (``retain``; ``None``: no control), see
    :func:`~interp_unlearn.evaluation.depth.depth_scores`. Returns the per-layer table
    (``df.attrs["summary"]``, ``df.attrs["heads"]``)."""
    from interp_unlearn.attacks.common import model_label, related_models

    config = config or DepthConfig()
    name = model.name if isinstance(model, LoadedModel) else str(model)
    orig, twin = related_models(model)
    full = full if full is not None else orig
    reference = reference if reference is not None else twin
    if full is None:
        raise ValueError(f"cannot derive the model before unlearning of {name}; pass full= "
                         "(CLI: --full)")
    if reference is None:
        raise ValueError(f"{name} has no never-learned reference model (a twin): pass "
                         "reference= (CLI: --reference) -- UDS needs one")
    for given in (mcq, control):  # files are read (and so checked) before any model loads
        if isinstance(given, (str, os.PathLike)) and str(given) not in ("forget", "retain"):
            load_mcq(given)

    def get(spec: Any) -> LoadedModel:
        return spec if isinstance(spec, LoadedModel) else load_model(spec, device=device,
                                                                      dtype=dtype)

    f_lm = get(full)
    key = {"full": model_label(full), "reference": model_label(reference)}
    r_lm = f_lm if key["reference"] == key["full"] else get(reference)
    label = model_label(model)
    u_lm = (f_lm if label == key["full"] else r_lm if label == key["reference"]
            else get(model))
    for role, other in (("reference", r_lm), ("unlearned", u_lm)):
        if other is not f_lm and other.tokenizer.get_vocab() != f_lm.tokenizer.get_vocab():
            raise ValueError(f"the {role} model {other.name}'s tokenizer differs from the full "
                             f"model {f_lm.name}'s ({len(other.tokenizer)} vs "
                             f"{len(f_lm.tokenizer)} tokens or other ids): depth patches "
                             "activations position by position, so they must tokenize alike")
    items = _items(f_lm, mcq)
    ctl = None if control is None else _items(f_lm, control)
    res = depth_scores(f_lm.model, r_lm.model, u_lm.model, f_lm.tokenizer, items, config,
                       control=ctl, progress=progress)
    summary = {**res["summary"], "model": name, "full": str(f_lm.path or f_lm.name),
               "reference": str(r_lm.path or r_lm.name),
               "mcq": str(mcq) if isinstance(mcq, (str, os.PathLike)) else f"<{len(items)}>"}
    layers = res["layers"]
    layers.attrs["summary"] = summary
    layers.attrs["heads"] = res["heads"]
    if out is not None:
        _write(Path(out), res, summary, config, name, formats)
        layers.attrs["out"] = str(out)
    return layers


def _write(out: Path, res: dict[str, Any], summary: dict[str, Any], config: DepthConfig,
           name: str, formats: Sequence[str]) -> None:
    from interp_unlearn.plotting import depth_curve, save_figure, sensitivity_heatmap

    out.mkdir(parents=True, exist_ok=True)
    res["layers"].to_csv(out / "uds.csv", index=False)
    res["per_question"].to_csv(out / "per_question.csv", index=False)
    if res["heads"] is not None:
        res["heads"].to_csv(out / "uds_heads.csv", index=False)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    config.save_json(out / "depth_config.json")
    if not formats:
        return
    save_figure(depth_curve(res["layers"], tau=config.tau, uds=summary["uds"],
                            title=f"{Path(name).name}: unlearning depth per layer"),
                out / "depth_layers", formats)
    if res["heads"] is not None:
        h = res["heads"]
        for col, label, stem, zr in (
                ("delta_s1", "Δ1 (nats)", "depth_heads_knowledge", None),
                ("erasure", "erasure Δ2/Δ1", "depth_heads_erasure", (0.0, 1.0))):
            scores = h[["layer", "head"]].assign(score=h[col].fillna(0.0).clip(lower=0.0))
            fig = sensitivity_heatmap(
                scores, None, value_label=label, zrange=zr,
                title=f"{Path(name).name}: per-head depth, {label}")
            save_figure(fig, out / stem, formats)
