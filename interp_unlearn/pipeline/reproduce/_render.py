"""Worker script: render plotly figures to static files with kaleido (one browser start).

Run as a *file* (``python _render.py JOBS.json``), not as a module, so it imports only
plotly and kaleido. ``JOBS.json`` is a list of ``{"fig": figure JSON path, "path": output
file, "format", "scale", "width", "height"}``. :func:`~.figures.save_figures` runs it in
its own process session with a wall-clock limit, so a stuck headless browser can be
killed without touching the caller.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def render(jobs_file: str) -> None:
    import plotly.io as pio

    jobs = json.loads(Path(jobs_file).read_text())
    figs = [pio.from_json(Path(j["fig"]).read_text(), skip_invalid=True) for j in jobs]
    pio.write_images(figs, [j["path"] for j in jobs], format=[j["format"] for j in jobs],
                     scale=[j["scale"] for j in jobs], width=[j["width"] for j in jobs],
                     height=[j["height"] for j in jobs])


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {Path(__file__).name} JOBS.json")
    render(sys.argv[1])
