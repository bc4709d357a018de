"""The preset table across model families and methods (``interp-unlearn presets``), and the
old ``interp_unlearn.data.families`` namespace in one place.

The family table and detection live in :mod:`interp_unlearn.data.families`; a method's
preset for a model in :func:`interp_unlearn.unlearn.config.method_preset`; the
localization defaults in :func:`interp_unlearn.localize.config.localize_config`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from interp_unlearn.data.families import *  # noqa: F401,F403 - the old presets namespace
from interp_unlearn.data.families import FALLBACK, FAMILIES, scaled_layer
from interp_unlearn.data.families import __all__ as _families_all
from interp_unlearn.localize.config import localize_config
from interp_unlearn.unlearn.config import method_preset

__all__ = [*_families_all, "localize_config", "method_preset", "preset_table"]


def preset_table(n_layers: int | None = None, methods: tuple[str, ...] = ("rmu", "almpu")
                 ) -> pd.DataFrame:
    """The table, one row per family and method, with the values each gets (read from the
    methods' own preset tables). ``layer`` is resolved for ``n_layers`` when given, else
    shown as the rule. Organism rows show the shipped organism's presets."""
    from interp_unlearn.unlearn.registry import get_method

    rows = []
    for fam in (*FAMILIES, FALLBACK):
        meta = {"preset": "micro" if fam.name == "organism-micro" else "small"}
        for method in methods:
            cls = get_method(method)
            names = [p.format(**meta) for p in fam.presets]
            preset = next((n for n in names if n in cls.presets), None)
            pre = cls.presets.get(preset, {}) if preset else {}
            params = {**{f: getattr(cls.Params(), f) for f in cls.param_names()},
                      **pre.get("params", {})}
            config = {**cls.defaults, **pre.get("config", {})}
            layer: Any = params.get("layer")
            if fam.scale_layer and "layer" in params:
                layer = scaled_layer(n_layers) if n_layers else "round(7/32*L)"
            rows.append({
                "family": fam.name, "model_types": ",".join(fam.model_types) or "-",
                "method": method, "preset": preset, "layer": layer,
                "steering_coeff": params.get("steering_coeff"), "alpha": params.get("alpha"),
                "lr": config.get("lr"), "max_num_batches": config.get("max_num_batches"),
                "batch_size": config.get("batch_size"),
                "top_k": (fam.localize["top_k"] if "top_k" in fam.localize
                          else "10% (LoFiT)" if fam.top_k_fraction is None
                          else f"{fam.top_k_fraction:.2%} of heads"),
                "validated": fam.validated, "notes": fam.notes})
    return pd.DataFrame(rows)
