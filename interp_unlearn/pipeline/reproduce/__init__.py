"""``interp-unlearn reproduce``: the ALMPU paper's experiment grid, resumable, with its
tables and figures.

    from interp_unlearn.pipeline.reproduce import ReproduceConfig, run_reproduce, load_results
    cfg = ReproduceConfig.preset("organism", quick=True)
    run_reproduce(cfg, "runs/quick")          # resumes if runs/quick has finished cells
    df = load_results("runs/quick")           # one tidy DataFrame
    draw_figures("runs/quick"); write_tables("runs/quick")   # redraw, no recomputation

:mod:`.config` (what runs), :mod:`.plan` (the cells), :mod:`.grid` (running them),
:mod:`.parallel` (worker processes), :mod:`.executors` (local pool or one submitit / SLURM
job per cell), :mod:`.shard` (``--shard i/n`` and the merge), :mod:`.store` (the append-only results),
:mod:`.manifest` (provenance), :mod:`.tables` and :mod:`.figures` (outputs).
"""

from interp_unlearn.pipeline.reproduce.config import CONFIG_FILE, ReproduceConfig, parse_seeds
from interp_unlearn.pipeline.reproduce.figures import build_figures, draw_figures, save_figures
from interp_unlearn.pipeline.reproduce.grid import GridRunner, run_reproduce
from interp_unlearn.pipeline.reproduce.plan import Cell, build_plan
from interp_unlearn.pipeline.reproduce.store import ResultsStore, load_results
from interp_unlearn.pipeline.reproduce.tables import build_tables, write_tables

__all__ = ["CONFIG_FILE", "Cell", "GridRunner", "ReproduceConfig", "ResultsStore",
           "build_figures", "build_plan", "build_tables", "draw_figures", "load_results",
           "parse_seeds", "run_reproduce", "save_figures", "write_tables"]
