"""The grid's ``depth`` cells: one method's model scored for unlearning depth (UDS, per
layer and per head; :mod:`interp_unlearn.evaluation.depth`) against the never-learned
twin, on the forget questions, with the retain questions as the reference's control."""

from __future__ import annotations

from typing import Any

from interp_unlearn.core.checkpoint import META_FILE
from interp_unlearn.pipeline.reproduce.plan import Cell, model_method

__all__ = ["DEPTH_COLUMNS", "depth_rows", "depth_table"]

#: the depth table's columns: metric -> column
DEPTH_COLUMNS = {"uds": "UDS", "uds_heads": "UDS (heads)",
                 "control_ratio": "twin control Δ1 ratio"}


def depth_rows(runner: Any, cell: Cell) -> list[dict[str, Any]]:
    """Rows ``metric`` = ``uds`` / ``uds_heads`` / ``control_ratio`` (no layer), and per
    layer (``layer``) and per head (``layer``, ``head``) ``delta_s1``, ``delta_s2``,
    ``erasure``."""
    import warnings

    from interp_unlearn.attacks.common import related_models
    from interp_unlearn.core.mcq import load_mcq
    from interp_unlearn.data.loading import load_model
    from interp_unlearn.evaluation.depth import DepthConfig, depth_scores

    cfg = runner.cfg
    ckpt = runner.checkpoint(cell.model, int(cell.seed))
    if not (ckpt / META_FILE).is_file():
        raise FileNotFoundError(f"{ckpt}: the unlearned model of {cell.label} is missing "
                                "(its unlearn cell must run first)")
    _, twin = related_models(cfg.model)
    full = load_model(cfg.model, device=cfg.device)
    ref = load_model(twin, device=cfg.device)
    unl = load_model(str(ckpt), device=cfg.device)
    mcq = (cfg.mcq or {})
    items = load_mcq(mcq.get("forget") or full.mcq_path("forget"))
    control = load_mcq(mcq.get("retain") or full.mcq_path("retain"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        res = depth_scores(full.model, ref.model, unl.model, full.tokenizer, items,
                           DepthConfig(heads=True, batch_size=cfg.eval_batch_size),
                           control=control)
    for w in caught:  # the control's warning goes on, once, with the cell's name
        warnings.warn(f"{cell.label}: {w.message}", RuntimeWarning, stacklevel=2)
    method = model_method(cell.model)
    summ = res["summary"]
    rows: list[dict[str, Any]] = [
        {"method": method, "metric": m, "value": float(summ[m])}
        for m in ("uds", "uds_heads", "control_ratio") if summ.get(m) is not None]
    for r in res["layers"].to_dict("records"):
        for m in ("delta_s1", "delta_s2", "erasure"):
            rows.append({"method": method, "layer": int(r["layer"]), "metric": m,
                         "value": float(r[m])})
    for r in res["heads"].to_dict("records"):
        for m in ("delta_s1", "delta_s2", "erasure"):
            rows.append({"method": method, "layer": int(r["layer"]), "head": int(r["head"]),
                         "metric": f"head_{m}", "value": float(r[m])})
    return rows


def depth_table(df: Any, methods: list[str], summarize: Any) -> Any:
    """Methods x (UDS, per-head UDS, the control ratio), mean and CI over seeds; empty
    without depth rows (``summarize``: the tables' ``_summarize``)."""
    import pandas as pd

    if "kind" not in df.columns:
        return pd.DataFrame()
    dep = df[(df["kind"] == "depth") & df["metric"].isin(list(DEPTH_COLUMNS))].copy()
    if dep.empty:
        return pd.DataFrame()
    dep["column"] = dep["metric"].map(DEPTH_COLUMNS)
    return summarize(dep, "model_id", "column", methods, list(DEPTH_COLUMNS.values()))
