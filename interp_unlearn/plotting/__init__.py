"""Figures: plotly builders (one per file) and :func:`save_figure` (HTML + PNG/SVG)."""

from .export import FORMATS, StaticExportError, save_figure, static_export_problem
from .heatmap import sensitivity_heatmap

__all__ = ["FORMATS", "StaticExportError", "save_figure", "sensitivity_heatmap",
           "static_export_problem"]
