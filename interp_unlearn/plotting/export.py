"""Write plotly figures to disk: self-contained HTML, and PNG/SVG through kaleido.

* **HTML** is written with ``include_plotlyjs=True``: plotly.js (about 4.7 MB) is inlined,
  so the file opens offline and never fetches a CDN script.
* **PNG / SVG** use kaleido >= 1, which renders in a headless Chromium/Chrome found on
  ``PATH`` (``chromium``, ``google-chrome`` ...), via ``BROWSER_PATH``, or downloaded by
  ``kaleido_get_chrome``. Without one, :func:`save_figure` raises
  :class:`StaticExportError` naming what is missing (after the HTML is written). On
  Debian/Ubuntu: ``apt-get install -y chromium``. All static formats of one call share
  one browser start (``plotly.io.write_images``); a start takes seconds.

Never displays a figure; it only writes files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

__all__ = ["FORMATS", "STATIC_FORMATS", "StaticExportError", "save_figure", "save_gallery",
           "static_export_problem"]

STATIC_FORMATS = ("png", "svg", "pdf", "jpeg", "webp")
FORMATS = ("html",) + STATIC_FORMATS


class StaticExportError(RuntimeError):
    """PNG/SVG export is impossible here (no kaleido, or no Chromium for it to drive)."""


def static_export_problem() -> str | None:
    """Why PNG/SVG export cannot work here, or ``None`` if kaleido and a browser are found."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return "the Python package 'kaleido' (>= 1.0) is not installed (pip install kaleido)"
    try:
        from choreographer.browsers.chromium import Chromium
        browser = Chromium.find_browser(skip_local=False)
    except Exception as err:  # noqa: BLE001 -- any failure to look is a missing browser
        return f"kaleido could not look for a Chromium browser ({type(err).__name__}: {err})"
    if browser is None:
        return ("kaleido needs a Chromium or Chrome browser, and none was found (looked on PATH "
                "for chromium / chromium-browser / google-chrome, in BROWSER_PATH and in "
                "kaleido's own download folder); install one, e.g. `apt-get install -y chromium`, "
                "or run `kaleido_get_chrome`")
    return None


def save_figure(fig: go.Figure, out_stem: str | Path,
                formats: Sequence[str] = ("html", "png", "svg"), *,
                scale: float = 2.0) -> dict[str, Path]:
    """Save ``fig`` as ``{out_stem}.{fmt}`` for every format; return ``{fmt: path}``.

    Args:
        fig: The figure.
        out_stem: Path without extension (an extension in it is kept as part of the name);
            parent folders are created.
        formats: Any of :data:`FORMATS` (``html``, ``png``, ``svg``, ``pdf``, ``jpeg``,
            ``webp``).
        scale: Pixel scale of raster formats (PNG/JPEG/WEBP); vector formats use 1.

    Raises:
        ValueError: an unknown or repeated format, or no format.
        StaticExportError: a static format was asked for but kaleido or its browser is
            missing, or the browser failed; the HTML (if asked for) is written first.
    """
    if not isinstance(fig, go.Figure):
        raise TypeError(f"fig must be a plotly Figure, got {type(fig).__name__}")
    if isinstance(formats, str):
        formats = (formats,)
    formats = [f.lower().lstrip(".") for f in formats]
    formats = ["jpeg" if f == "jpg" else f for f in formats]
    if not formats:
        raise ValueError("no formats given")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown format {unknown[0]!r}; valid: {', '.join(FORMATS)}")
    if len(set(formats)) != len(formats):
        raise ValueError(f"formats repeat: {formats}")
    stem = Path(out_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {f: stem.with_name(f"{stem.name}.{f}") for f in formats}

    if "html" in paths:
        fig.write_html(paths["html"], include_plotlyjs=True, full_html=True,
                       config={"displaylogo": False, "responsive": True})
    static = [f for f in formats if f in STATIC_FORMATS]
    if static:
        problem = static_export_problem()
        if problem is not None:
            raise StaticExportError(f"cannot write {', '.join(static)} for {stem}: {problem}")
        try:
            pio.write_images([fig] * len(static), [paths[f] for f in static], format=static,
                             scale=[scale if f in ("png", "jpeg", "webp") else 1 for f in static],
                             width=fig.layout.width, height=fig.layout.height)
        except Exception as err:  # kaleido / choreographer errors, browser crashes
            raise StaticExportError(
                f"kaleido failed to write {', '.join(static)} for {stem}: "
                f"{type(err).__name__}: {err}") from err
        missing = [str(paths[f]) for f in static if not paths[f].is_file()]
        if missing:
            raise StaticExportError(f"kaleido reported success but did not write {missing}")
    return paths


def save_gallery(figs: dict[str, go.Figure], path: str | Path, title: str = "Figures") -> Path:
    """Write several figures into one self-contained HTML page, plotly.js inlined once
    (~4.7 MB in all instead of per figure): for sharing a run's figures in one file.

    Args:
        figs: ``{name: figure}``, drawn in this order, each under an ``<h2>`` of its name.
        path: The ``.html`` file to write.
        title: The page title.
    """
    if not figs:
        raise ValueError("save_gallery needs at least one figure")
    path = Path(path)
    if path.suffix.lower() != ".html":
        raise ValueError(f"save_gallery writes HTML; got a path ending in {path.suffix!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = []
    for i, (name, fig) in enumerate(figs.items()):
        if not isinstance(fig, go.Figure):
            raise TypeError(f"figure {name!r} is a {type(fig).__name__}, not a plotly Figure")
        parts.append(f"<h2>{name}</h2>\n" + pio.to_html(fig, full_html=False,
                                                         include_plotlyjs=(i == 0)))
    path.write_text(f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>"
                    f"</head><body>\n<h1>{title}</h1>\n" + "\n".join(parts) + "\n</body></html>\n")
    return path
