"""Figure for E2 (notes/e2_own_threat_model.md): per-seed forget accuracy of RMU and ALMPU
before and after a head-δ attack at ALMPU's heads, from notes/data/e2_rows.csv.

    python notes/scripts/e2_figure.py notes/data/e2_rows.csv notes/figures/e2_own_threat_model.png
"""
from __future__ import annotations

import sys

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp_unlearn.plotting.style import method_style


def main(src: str, dst: str) -> None:
    df = pd.read_csv(src)
    radii = [("eps1", "head δ, ε = 1"), ("eps4", "head δ, ε = 4"), ("kappa1", "head δ, κ = 1")]
    fig = make_subplots(rows=1, cols=3, shared_yaxes=True,
                        subplot_titles=[t for _, t in radii])
    for col, (r, _) in enumerate(radii, start=1):
        for method in ("rmu", "almpu"):
            st = method_style(method)
            g = df[df.method == method].pivot_table(index="seed", columns="radius",
                                                     values="forget")
            for seed, row in g.iterrows():
                fig.add_trace(go.Scatter(
                    x=["no attack", "attacked"], y=[row["none-attack0"], row[r]],
                    mode="lines+markers", line=dict(color=st.color, width=1.5),
                    marker=dict(symbol=st.symbol, size=7), name=st.label,
                    legendgroup=method, showlegend=(col == 1 and seed == 0),
                    hovertemplate=f"{st.label} seed {seed}: %{{y:.3f}}<extra></extra>"),
                    row=1, col=col)
    fig.add_hline(y=0.25, line=dict(color="#777", dash="dot"), annotation_text="chance",
                  annotation_position="bottom right")
    fig.update_yaxes(title_text="forget accuracy (eval pool, 150 q)", row=1, col=1)
    fig.update_layout(template="plotly_white", width=1000, height=420,
                      title="E2: a head δ at ALMPU's heads restores RMU, barely ALMPU "
                            "(shipped organism, seeds 0–4, N = 50 attack-pool docs)",
                      legend=dict(orientation="h", y=-0.15))
    fig.write_image(dst, scale=2)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
