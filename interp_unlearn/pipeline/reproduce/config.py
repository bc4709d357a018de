"""What ``interp-unlearn reproduce`` runs: :class:`ReproduceConfig` and its quick / full presets.

The **full** protocol is the paper's grid (``/work/shared/reference/almpu-paper.md``):

* Table 1 -- fine-tuning on ``N`` forget-corpus documents, ``N`` in 0/5/10/15/20/30/40/50,
  the paper's six methods and the three baselines ALMPU must beat (:data:`METHODS`);
* Table 2 -- fine-tuning on ``N`` unrelated documents (the world's ``general`` text, the
  Wiki-text stand-in), ``N`` in 10/50/100/200/500 (plus the unattacked ``N = 0``), for
  the paper's three methods RMU, NPO, ALMPU;
* Table 3 -- ALMPU with heads chosen adaptively (top-K by score) / at random (25/50/75 %)
  / all heads, every choice restricted to the RMU layer; Table 4 -- ALMPU perturbing the
  early / middle / late / all layers vs the adaptive top-K; both attacked at N = 0/25/50;
* the logit lens of every method (Fig. 5) and the head-sensitivity heatmap (Fig. 4).

The attack is the ``lora`` preset (:data:`~interp_unlearn.attacks.FINETUNE_PRESETS`): Łucki
et al.'s LoRA recipe (rank 128, 3 epochs) with the learning rate scaled to the model family
(:data:`~interp_unlearn.attacks.finetune.ATTACK_LR`: calibrated on the organism by the E3
sweep, Łucki's 2e-4 on Zephyr); ``attack_config="paper"`` keeps 2e-4 on every model. It
runs on the paper's data protocol ``pool="same"``: forget
documents of every pool, the scored facts included (the never-learned twin, attacked
alike, shows what the attack teaches). Unlearning uses each method's automatic preset
(``organism`` / ``organism-micro`` for organisms).

**Quick** (``--quick``): one seed; localization for 2 epochs instead of 5; the LoRA
attack for 1 epoch instead of 3; Table 1 at N = 0/5/10/20/50; Table 2 at N = 0/10/100;
Table 3 with adaptive / random 50 % / all heads; Table 4 with adaptive / early / late.
Unlearning itself is not shortened (its presets are what the tables are about).

Everything is a plain field, so any of it can be changed (``--set FIELD=JSON`` on the
command line). Fields in :data:`EXECUTION_FIELDS` change how a run executes, not what
it computes, and are left out of :meth:`ReproduceConfig.config_hash`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from interp_unlearn.core.config import ConfigBase
from interp_unlearn.attacks.floor import parse_seeds

__all__ = ["ABLATION_SIZES", "CONFIG_FILE", "EXECUTION_FIELDS", "EXECUTORS",
           "EXECUTOR_OPTIONS", "HEAD_VARIANTS",
           "LOCATION_VARIANTS", "METHODS", "ReproduceConfig", "TABLE1_SIZES", "TABLE2_METHODS",
           "TABLE2_SIZES", "default_out", "parse_overrides", "parse_seeds"]

CONFIG_FILE = "reproduce_config.json"
#: Table 1's methods: the paper's six, then the baselines ALMPU must beat (issue 13):
#: RMU with a latent adversary (targeted LAT), Adaptive RMU and NPO with SAM.
METHODS = ("rmu", "almpu", "ga", "ga_mp", "npo", "dpo", "rmu_lat", "adaptive_rmu", "npo_sam")
TABLE1_SIZES = (0, 5, 10, 15, 20, 30, 40, 50)
TABLE2_SIZES = (0, 10, 50, 100, 200, 500)
TABLE2_METHODS = ("rmu", "npo", "almpu")
ABLATION_SIZES = (0, 25, 50)
#: Table 3 rows. ``adaptive``: the top-K heads *of the RMU layer* by localization score
#: (K = the main run's K, at most the layer's heads); ``random-p%``: p % of that layer's
#: heads drawn with the replicate's seed; ``all-heads``: every head of that layer.
HEAD_VARIANTS = ("adaptive", "random-25%", "random-50%", "random-75%", "all-heads")
#: Table 4 rows. ``adaptive``: the main ALMPU run (global top-K, the Table 1 model);
#: ``early`` / ``middle`` / ``late`` / ``all-layers``: every head of that band of layers
#: (:func:`interp_unlearn.core.selection.layer_bands`).
LOCATION_VARIANTS = ("adaptive", "early", "middle", "late", "all-layers")
EXECUTION_FIELDS = ("threads", "workers", "device", "progress", "formats", "figures",
                    "executor", "executor_options")
#: where cells run (:mod:`.executors`): this machine's process pool, or one cluster job each
EXECUTORS = ("local", "submitit")
#: ``executor_options`` of ``submitit``: ``cluster`` (``slurm`` / ``local`` / ``debug``;
#: default: SLURM when ``sbatch`` exists, else local), ``partition``, ``gpus_per_job``
#: (default 1 off the CPU, else 0), ``cpus_per_job``, ``mem_gb``, ``time_min`` (default
#: 240), ``max_jobs`` (in flight, default ``workers`` or 16), ``poll_s`` (default 1),
#: ``parameters`` (passed to ``submitit.AutoExecutor.update_parameters`` as is, e.g.
#: ``{"slurm_account": "lab"}``).
EXECUTOR_OPTIONS = ("cluster", "partition", "gpus_per_job", "cpus_per_job", "mem_gb",
                    "time_min", "max_jobs", "poll_s", "parameters")

_QUICK = {
    "seeds": [0],
    "localize": {"epochs": 2},
    "attack_overrides": {"epochs": 1},
    "table1_sizes": [0, 5, 10, 20, 50],
    "table2_sizes": [0, 10, 100],
    "head_variants": ["adaptive", "random-50%", "all-heads"],
    "location_variants": ["adaptive", "early", "late"],
}


def parse_overrides(items: Any) -> dict[str, Any]:
    """``["seeds=[0,1]", "table1_sizes=[0,5]"]`` -> ``{"seeds": [0, 1], "table1_sizes":
    [0, 5]}``: each value read by the :class:`ReproduceConfig` field's type (the same
    ``--set`` story as every config, :func:`interp_unlearn.core.config.parse_assignments`);
    an unknown field or an unreadable value raises before any work."""
    from interp_unlearn.core.config import parse_assignments

    return parse_assignments(items, ReproduceConfig)


def default_out(model: str, quick: bool) -> Path:
    """``runs/reproduce-<model name>-<quick|full>``."""
    return Path("runs") / f"reproduce-{Path(str(model)).name}-{'quick' if quick else 'full'}"


def _sizes(name: str, value: Any) -> list[int]:
    out = sorted({int(v) for v in value})
    if not out or out[0] < 0:
        raise ValueError(f"{name} must be a non-empty list of ints >= 0, got {value!r}")
    return out


@dataclass
class ReproduceConfig(ConfigBase):
    """The experiment grid of ``interp-unlearn reproduce`` (saved as ``reproduce_config.json``).

    Attributes:
        model: built-in organism (``organism``, ``organism-micro``), checkpoint directory or
            hub name. Its twin/original are derived as in :func:`~interp_unlearn.attacks.run_floor`.
        quick: recorded for the output names and the manifest (the preset is applied by
            :meth:`preset`).
        seeds: replicate seeds; each seeds the unlearning run, the random head draws and
            the attack (sampling, LoRA init, data order).
        methods: unlearning methods of Table 1 and the logit lens.
        table1_sizes, table2_sizes: attack sizes ``N`` on forget / unrelated data.
        table2_methods: methods attacked with unrelated data (``None``: the paper's RMU,
            NPO, ALMPU, those of them in ``methods``).
        ablation_sizes: ``N`` of Tables 3 and 4.
        head_variants, location_variants: rows of Tables 3 and 4 (see :data:`HEAD_VARIANTS`,
            :data:`LOCATION_VARIANTS`); an empty list skips the table; ``None``: all of
            them when ``methods`` has ALMPU, else none.
        ablation_seeds: seeds of Tables 3/4 (``None``: ``seeds``).
        top_k: ALMPU's K (``None``: the model family's,
            :func:`interp_unlearn.localize.config.localize_config`: **4** for the shipped organism,
            LoFiT's 10 % of all heads for the micro organism).
        localize: :class:`~interp_unlearn.localize.LocalizeConfig` field overrides (on top
            of the family's defaults). Phase 1 runs once per seed; seed ``s``'s ALMPU
            models use the heads localized with seed ``s``.
        unlearn: per-method :class:`~interp_unlearn.unlearn.UnlearnConfig` field
            overrides, ``{"rmu": {...}, "*": {...}}`` (``*``: every method; a method's own
            entry wins; ``params`` are merged).
        attack: the attack of every table (:data:`~interp_unlearn.attacks.ATTACKS`).
        attack_config: fine-tuning preset (``lora``: lr scaled to the model family,
            ``paper``: Łucki's lr 2e-4, ``full``); attack_overrides: its fields (checked
            when the config is built, e.g. ``{"lr": 1e-3}``).
        repeat_documents: let ``N`` exceed the attack corpus by repeating documents (Table
            2's N = 500 draws from the organism's 300 general documents: N/300 effective
            epochs; the tables say so); ``False`` makes such an ``N`` an error.
        pool: forget-data pool: ``same`` (paper) or ``attack`` (disjoint facts).
        forget_data, unrelated_data: attack corpora (``forget`` / ``unrelated`` or JSONL paths).
        attack_domains: MCQ domains scored after each attack; lens_domains: for the lens.
        depth: the unlearning depth (UDS, per layer and per head, on the forget questions;
            :mod:`interp_unlearn.evaluation.depth`) of every method's model against the
            never-learned twin; no cells when the model has no twin.
        mcq: ``{domain: MCQ JSONL}`` for models without a synthetic world (``None``: the
            model's own pools); also the questions every unlearning run scores.
        scoring: MCQ scoring of every cell (``letter`` / ``cloze``; ``None``: the model's
            own -- cloze for organisms, letter otherwise).
        forget_corpus, retain_corpus: JSONL corpora for a model without a synthetic world
            or shipped sets (a real checkpoint): the forget corpus is localization's
            training text, unlearning's forget data and the ``forget`` attack data; the
            retain corpus is unlearning's retain data and the ``unrelated`` attack data.
            ``None``: the model's own (a world, a packaged model's shipped corpora).
        eval_batch_size: questions per forward pass.
        threads, workers, device, progress, formats, figures: execution only (see
            :data:`EXECUTION_FIELDS`). ``workers``: processes that run cells side by side
            (``0``: one per CPU core on the CPU, one per visible GPU on CUDA; see
            :mod:`.parallel`); ``threads``: torch threads per process (``0``: torch's
            default with one worker, 1 with several); ``figures=False`` skips drawing.
            ``executor``: :data:`EXECUTORS` (:mod:`.executors`); ``executor_options``:
            :data:`EXECUTOR_OPTIONS`.
    """

    model: str = "organism"
    quick: bool = False
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    table1_sizes: list[int] = field(default_factory=lambda: list(TABLE1_SIZES))
    table2_sizes: list[int] = field(default_factory=lambda: list(TABLE2_SIZES))
    table2_methods: list[str] | None = None
    ablation_sizes: list[int] = field(default_factory=lambda: list(ABLATION_SIZES))
    head_variants: list[str] | None = None
    location_variants: list[str] | None = None
    ablation_seeds: list[int] | None = None
    top_k: int | None = None
    localize: dict[str, Any] = field(default_factory=dict)
    unlearn: dict[str, dict[str, Any]] = field(default_factory=dict)
    attack: str = "finetune"
    attack_config: str = "lora"
    attack_overrides: dict[str, Any] = field(default_factory=dict)
    repeat_documents: bool = True
    pool: str = "same"
    forget_data: str = "forget"
    unrelated_data: str = "unrelated"
    attack_domains: list[str] = field(default_factory=lambda: ["forget"])
    lens_domains: list[str] = field(default_factory=lambda: ["forget", "retain"])
    depth: bool = True
    mcq: dict[str, str] | None = None
    scoring: str | None = None
    forget_corpus: str | None = None
    retain_corpus: str | None = None
    eval_batch_size: int = 32
    threads: int = 0
    workers: int = 0
    device: str = "cpu"
    progress: bool = True
    formats: list[str] = field(default_factory=lambda: ["html", "png", "svg", "pdf"])
    figures: bool = True
    executor: str = "local"
    executor_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from interp_unlearn.attacks.floor import ATTACKS
        from interp_unlearn.unlearn.registry import available_methods, canonical_name

        self.seeds = parse_seeds(self.seeds)
        if self.ablation_seeds is not None:
            self.ablation_seeds = parse_seeds(self.ablation_seeds)
        valid = available_methods()
        has_almpu = "almpu" in [canonical_name(m) for m in self.methods]
        if self.table2_methods is None:
            self.table2_methods = [m for m in TABLE2_METHODS
                                   if m in [canonical_name(x) for x in self.methods]]
        if self.head_variants is None:
            self.head_variants = list(HEAD_VARIANTS) if has_almpu else []
        if self.location_variants is None:
            self.location_variants = list(LOCATION_VARIANTS) if has_almpu else []
        for name in ("methods", "table2_methods"):
            ms = [canonical_name(m) for m in getattr(self, name)]
            bad = [m for m in ms if m not in valid]
            if bad:
                raise ValueError(f"{name}: unknown method {bad[0]!r}; valid: {valid}")
            setattr(self, name, ms)
        missing = [m for m in self.table2_methods if m not in self.methods]
        if missing:
            raise ValueError(f"table2_methods {missing} are not in methods {self.methods}")
        needs_almpu = bool(self.head_variants or self.location_variants)
        if needs_almpu and "almpu" not in self.methods:
            raise ValueError("Tables 3 and 4 ablate ALMPU: add 'almpu' to methods or set "
                             "head_variants=[] and location_variants=[]")
        for name in ("table1_sizes", "table2_sizes", "ablation_sizes"):
            setattr(self, name, _sizes(name, getattr(self, name)))
        for name, allowed in (("head_variants", HEAD_VARIANTS),
                              ("location_variants", LOCATION_VARIANTS)):
            vs = list(getattr(self, name))
            bad = [v for v in vs if v not in allowed]
            if bad or len(set(vs)) != len(vs):
                raise ValueError(f"{name} must be distinct values of {allowed}, got {vs}")
            setattr(self, name, vs)
        if self.attack not in ATTACKS:
            raise ValueError(f"attack {self.attack!r} unknown; valid: {sorted(ATTACKS)}")
        if self.scoring not in (None, "letter", "cloze"):
            raise ValueError(f"scoring must be 'letter', 'cloze' or null, got {self.scoring!r}")
        if self.pool not in ("same", "attack"):
            raise ValueError(f"pool must be 'same' or 'attack', got {self.pool!r}")
        if self.attack == "finetune":  # bad presets / fields / lr fail here, not mid-grid
            from interp_unlearn.attacks.finetune import FinetuneAttackConfig
            FinetuneAttackConfig.preset(self.attack_config, **self.attack_overrides)
        if not isinstance(self.repeat_documents, bool):
            raise ValueError(f"repeat_documents must be true or false, got "
                             f"{self.repeat_documents!r}")
        if self.top_k is not None and (isinstance(self.top_k, bool) or int(self.top_k) < 1):
            raise ValueError(f"top_k must be a positive int or None, got {self.top_k!r}")
        bad = sorted(set(self.unlearn) - set(valid) - {"*"})
        if bad:
            raise ValueError(f"unlearn overrides for unknown method(s) {bad}; keys are method "
                             f"names or '*'")
        for name in ("threads", "workers"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0 (0: automatic), got {v!r}")
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, got {self.executor!r}")
        bad = sorted(set(self.executor_options) - set(EXECUTOR_OPTIONS))
        if bad:
            raise ValueError(f"executor_options: unknown option(s) {bad}; valid: "
                             f"{EXECUTOR_OPTIONS}")
        if isinstance(self.eval_batch_size, bool) or int(self.eval_batch_size) < 1:
            raise ValueError(f"eval_batch_size must be >= 1, got {self.eval_batch_size!r}")
        for name in ("attack_domains", "lens_domains", "formats"):
            setattr(self, name, list(getattr(self, name)))

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, model: str = "organism", quick: bool = False, **overrides: Any
               ) -> "ReproduceConfig":
        """The full protocol, or with ``quick`` the reduced one (module docstring); then
        ``overrides`` (any field)."""
        values: dict[str, Any] = {"model": model, "quick": bool(quick)}
        if quick:
            values.update(json.loads(json.dumps(_QUICK)))
            methods = [str(m).replace("-", "_").lower() for m in overrides.get("methods", METHODS)]
            if "almpu" not in methods:  # no ALMPU, no ablations
                values.pop("head_variants")
                values.pop("location_variants")
        values.update(overrides)
        return cls.from_dict(values)

    # -------------------------------------------------------------- derived values
    @property
    def all_ablation_seeds(self) -> list[int]:
        return list(self.ablation_seeds) if self.ablation_seeds is not None else list(self.seeds)

    def unlearn_overrides(self, method: str) -> dict[str, Any]:
        """UnlearnConfig fields for ``method``: ``unlearn["*"]`` updated by ``unlearn[method]``
        (their ``params`` merged)."""
        star = dict(self.unlearn.get("*", {}))
        own = dict(self.unlearn.get(method, {}))
        params = {**star.pop("params", {}), **own.pop("params", {})}
        out = {**star, **own}
        if params:
            out["params"] = params
        # a real checkpoint's data (the organisms' runs are unchanged: these are None)
        for key, value in (("forget_corpus", self.forget_corpus),
                           ("retain_corpus", self.retain_corpus),
                           ("forget_mcq", (self.mcq or {}).get("forget")),
                           ("retain_mcq", (self.mcq or {}).get("retain")),
                           ("eval_scoring", self.scoring)):
            if value is not None:
                out.setdefault(key, value)
        return out

    def attack_data(self, data: str) -> str:
        """The corpus of attack data ``forget`` / ``unrelated`` (a name or a JSONL path)."""
        spec = self.forget_data if data == "forget" else self.unrelated_data
        if spec == "forget" and self.forget_corpus is not None:
            return self.forget_corpus
        if spec == "unrelated" and self.retain_corpus is not None:
            return self.retain_corpus
        return spec

    def attack_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~interp_unlearn.attacks.run_floor` for the attack."""
        kw = dict(self.attack_overrides)
        if self.attack == "finetune":
            kw["config"] = self.attack_config
            kw["repeat"] = self.repeat_documents
        return kw

    # --------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    def config_hash(self) -> str:
        """SHA-1 (16 hex) of everything that changes results (not :data:`EXECUTION_FIELDS`)."""
        d = {k: v for k, v in self.to_dict().items() if k not in EXECUTION_FIELDS}
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        d = {**self.to_dict(), "config_hash": self.config_hash()}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(d, indent=1) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load_json(cls, path: str | Path) -> "ReproduceConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no reproduce config here (not a reproduce run "
                                    "directory?)")
        d = json.loads(path.read_text())
        d.pop("config_hash", None)
        return cls.from_dict(d)
