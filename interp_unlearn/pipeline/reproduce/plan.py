"""The cells of the reproduce grid, in the order they run.

A :class:`Cell` is the unit of work that is written to the results store at once:

``localize``   phase 1 for one seed: head scores and the top-K (one cell per seed; the
               ALMPU models of seed ``s`` -- Table 1 and every Table 3/4 variant -- use
               the heads localized with seed ``s``, so selection variance is sampled);
``unlearn``    one unlearned model (method or ALMPU ablation variant) for one seed;
``lens``       the logit lens of one model (a method's, or the original / the twin);
``depth``      the unlearning depth (UDS) of one method's model against the twin;
``reference``  the twin and the original attacked with ``N`` samples of one data kind
               for one seed (shared by every method: the floor);
``attack``     one unlearned model attacked with ``N`` samples for one seed, as a row
               of Table 1, 2, 3 or 4.

A cell's key hashes the inputs that decide its numbers (model, method, heads choice,
seed, overrides, attack settings, ``N`` ...), so a rerun -- even with a grown grid (more
seeds, more sizes) -- skips every cell it already finished.

Unlearned-model ids: a method's name (``rmu`` ...) is its Table 1 model; ALMPU's
ablation models are ``almpu[VARIANT]``: ``layer-top-k``, ``layer-random-25%`` ...,
``layer-all`` (Table 3: heads of the RMU layer only) and ``early`` / ``middle`` /
``late`` / ``all-layers`` (Table 4). Table 4's ``adaptive`` row is the Table 1 ALMPU
model itself.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from interp_unlearn.pipeline.reproduce.config import ReproduceConfig

__all__ = ["Cell", "TABLE3_MODEL", "TABLE4_MODEL", "build_plan", "model_method"]

#: Table 3 row -> unlearned-model id.
TABLE3_MODEL = {"adaptive": "almpu[layer-top-k]", "random-25%": "almpu[layer-random-25%]",
                "random-50%": "almpu[layer-random-50%]", "random-75%": "almpu[layer-random-75%]",
                "all-heads": "almpu[layer-all]"}
#: Table 4 row -> unlearned-model id.
TABLE4_MODEL = {"adaptive": "almpu", "early": "almpu[early]", "middle": "almpu[middle]",
                "late": "almpu[late]", "all-layers": "almpu[all-layers]"}
#: The reference models and their ``method`` label in attack rows.
REFERENCE_METHOD = {"original": "original", "twin": "never-learned"}


def model_method(model_id: str) -> str:
    """The registry method of an unlearned-model id (``almpu[early]`` -> ``almpu``)."""
    return model_id.split("[", 1)[0]


@dataclass(frozen=True)
class Cell:
    """One unit of the grid (see the module docstring).

    Attributes:
        kind: ``localize | unlearn | lens | depth | reference | attack``.
        table: ``localize | unlearn | lens | depth | reference | table1 | table2 | table3 |
            table4``.
        model: unlearned-model id (``rmu``, ``almpu[early]`` ...), or ``original`` /
            ``twin`` for reference lens cells; ``""`` otherwise.
        variant: the row label in its table (method, Table 3/4 variant, reference role).
        seed, data, N: the replicate seed, the data kind (``forget`` / ``unrelated``) and
            the number of attack samples, where they apply.
        spec: JSON text of the inputs that decide the cell's numbers (hashed into ``key``).
    """

    kind: str
    table: str
    model: str
    variant: str
    seed: int | None
    data: str | None
    N: int | None
    spec: str

    @property
    def key(self) -> str:
        return hashlib.sha1(self.spec.encode()).hexdigest()[:20]

    @property
    def label(self) -> str:
        parts = [self.table, self.variant or self.model]
        if self.data is not None:
            parts.append(self.data)
        if self.N is not None:
            parts.append(f"N={self.N}")
        if self.seed is not None:
            parts.append(f"seed={self.seed}")
        return "/".join(p for p in parts if p)

    def columns(self) -> dict[str, Any]:
        """The columns every row of this cell carries in the store."""
        out: dict[str, Any] = {"kind": self.kind, "table": self.table, "variant": self.variant,
                               "model_id": self.model, "seed": self.seed, "cell_label": self.label}
        if self.data is not None:
            out["data"] = self.data
        if self.N is not None:
            out["N"] = self.N
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "kind": self.kind, "table": self.table,
                "model": self.model, "variant": self.variant, "seed": self.seed,
                "data": self.data, "N": self.N}


def _spec(**parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


class _Specs:
    """The inputs behind each kind of cell (what goes into its key)."""

    def __init__(self, cfg: ReproduceConfig):
        self.cfg = cfg

    def localize(self, seed: int) -> dict[str, Any]:
        c = self.cfg
        # "phase1": bumped when the default objective / K changed, so a rerun does not
        # reuse localizations (and ALMPU models) made under the old defaults.
        return {"model": c.model, "localize": c.localize, "top_k": c.top_k, "seed": seed,
                "phase1": 2}

    def unlearn(self, model_id: str, seed: int) -> dict[str, Any]:
        method = model_method(model_id)
        d: dict[str, Any] = {"model": self.cfg.model, "id": model_id, "seed": seed,
                             "overrides": self.cfg.unlearn_overrides(method)}
        if method == "almpu":  # heads come from this seed's localization
            d["localize"] = self.localize(seed)
        return d

    def attack(self, data: str, n: int, seed: int) -> dict[str, Any]:
        c = self.cfg
        return {"attack": c.attack, "kw": c.attack_kwargs(), "pool": c.pool, "N": n, "seed": seed,
                "data": c.attack_data(data),
                "domains": c.attack_domains, "mcq": c.mcq, "batch_size": c.eval_batch_size}

    def lens(self) -> dict[str, Any]:
        c = self.cfg
        return {"domains": c.lens_domains, "mcq": c.mcq, "batch_size": c.eval_batch_size}

    def depth(self) -> dict[str, Any]:
        c = self.cfg
        return {"mcq": (c.mcq or {}).get("forget"), "batch_size": c.eval_batch_size,
                "heads": True}


def _has_twin(model: str) -> bool:
    """Whether ``model`` has a never-learned twin (read from its metadata, no weights)."""
    from interp_unlearn.attacks.common import related_models
    try:
        return related_models(model)[1] is not None
    except (OSError, ValueError):
        return False


def build_plan(cfg: ReproduceConfig) -> list[Cell]:
    """Every cell of the grid, dependencies first (see the module docstring)."""
    sp = _Specs(cfg)
    cells: list[Cell] = []
    seen: set[str] = set()

    def add(cell: Cell) -> None:
        if cell.key not in seen:
            seen.add(cell.key)
            cells.append(cell)

    seeds = list(dict.fromkeys(cfg.seeds + cfg.all_ablation_seeds))
    twin = cfg.depth and _has_twin(cfg.model)
    for seed in seeds:
        add(Cell("localize", "localize", "", "", seed, None, None,
                 _spec(kind="localize", **sp.localize(seed))))
    first = cfg.seeds[0]
    for role, label in REFERENCE_METHOD.items():
        add(Cell("lens", "lens", role, label, first, None, None,
                 _spec(kind="lens", model=cfg.model, role=role, **sp.lens())))
    t3 = [(v, TABLE3_MODEL[v]) for v in cfg.head_variants]
    t4 = [(v, TABLE4_MODEL[v]) for v in cfg.location_variants]
    for seed in seeds:
        main = seed in cfg.seeds
        ablate = seed in cfg.all_ablation_seeds
        models = list(cfg.methods) if main else []
        if ablate:
            models += [m for _, m in t3 + t4 if m not in models]
        for m in models:
            add(Cell("unlearn", "unlearn", m, m, seed, None, None,
                     _spec(kind="unlearn", **sp.unlearn(m, seed))))
        if main:
            for m in cfg.methods:
                add(Cell("lens", "lens", m, m, seed, None, None,
                         _spec(kind="lens", unlearn=sp.unlearn(m, seed), **sp.lens())))
            if cfg.depth and twin:
                for m in cfg.methods:
                    add(Cell("depth", "depth", m, m, seed, None, None,
                             _spec(kind="depth", unlearn=sp.unlearn(m, seed), **sp.depth())))
        tables = []
        if main:
            tables += [("table1", "forget", cfg.table1_sizes, [(m, m) for m in cfg.methods]),
                       ("table2", "unrelated", cfg.table2_sizes,
                        [(m, m) for m in cfg.table2_methods])]
        if ablate:
            tables += [("table3", "forget", cfg.ablation_sizes, t3),
                       ("table4", "forget", cfg.ablation_sizes, t4)]
        for table, data, sizes, rows in tables:
            if not rows:
                continue
            for n in sizes:
                att = sp.attack(data, n, seed)
                add(Cell("reference", "reference", "", "reference", seed, data, n,
                         _spec(kind="reference", model=cfg.model, **att)))
                for variant, model_id in rows:
                    add(Cell("attack", table, model_id, variant, seed, data, n,
                             _spec(kind="attack", table=table, variant=variant,
                                   unlearn=sp.unlearn(model_id, seed), **att)))
    return cells
