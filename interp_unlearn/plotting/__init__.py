"""Figures: plotly builders (one per file) and :func:`save_figure` (HTML + PNG/SVG).

* :func:`sensitivity_heatmap` -- head sensitivity ``||A[l, h]||_2`` (ALMPU Fig. 4);
* :func:`robustness_curves` -- UE vs attack size N per method, the twin's floor (Fig. 3,
  Table 2 as a figure);
* :func:`logit_lens_curves` -- accuracy per block per method (Fig. 5);
* :func:`ablation_bars` -- head-selection / location ablations (Tables 3-4 as figures);
* :func:`depth_curve` -- the unlearning depth's stage-1/stage-2 drops per layer (UDS);
* :func:`best_so_far` -- the worst-case attacker's trials and best value so far.

All share one colour-blind-safe palette per method (:mod:`.style`) and never display a
figure; they return ``plotly.graph_objects.Figure``. :func:`save_gallery` writes many
figures into one offline HTML page (plotly.js inlined once).
"""

from interp_unlearn.plotting.bars import ablation_bars
from interp_unlearn.plotting.curves import robustness_curves
from interp_unlearn.plotting.depth import depth_by_method, depth_curve
from interp_unlearn.plotting.export import (FORMATS, StaticExportError, save_figure,
                                            save_gallery, static_export_problem)
from interp_unlearn.plotting.heatmap import sensitivity_heatmap
from interp_unlearn.plotting.lens import logit_lens_curves
from interp_unlearn.plotting.style import method_style
from interp_unlearn.plotting.worst_case import best_so_far

__all__ = ["FORMATS", "StaticExportError", "ablation_bars", "best_so_far", "depth_by_method", "depth_curve",
           "logit_lens_curves",
           "method_style",
           "robustness_curves", "save_figure", "save_gallery", "sensitivity_heatmap",
           "static_export_problem"]
