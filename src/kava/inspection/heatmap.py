"""The student-vs-target cosine maps as one PNG: keys and values side by side, layers × slots."""

from __future__ import annotations

import math
from pathlib import Path

from kava.inspection.similarity import KVSimilarity


def save_heatmap(sim: KVSimilarity, path: str | Path, title: str = "") -> None:
    """Write the two panels (mean over KV heads; grey = a slot with no target) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    L, M = sim.keys.shape
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="lightgrey")
    fig, axes = plt.subplots(1, 2, figsize=(2.5 + 1.2 * M, 1.2 + 0.55 * L + 0.8), constrained_layout=True)
    for ax, name, grid in ((axes[0], f"keys ({sim.key_space})", sim.keys), (axes[1], "values", sim.values)):
        im = ax.imshow(grid.numpy(), cmap=cmap, vmin=-1, vmax=1, aspect="auto")
        ax.set_title(name)
        ax.set_xticks(range(M), [f"z{m + 1}" for m in range(M)])
        ax.set_yticks(range(L), [f"layer {l}" for l in range(L)])
        if L * M <= 400:  # numbers stay legible
            for l in range(L):
                for m in range(M):
                    v = grid[l, m].item()
                    if not math.isnan(v):
                        ax.text(m, l, f"{v:.2f}", ha="center", va="center", fontsize=8,
                                color="white" if abs(v) > 0.6 else "black")
    fig.colorbar(im, ax=axes, shrink=0.8, label="cosine")
    fig.suptitle(title or "cosine(student latent K/V, compressed teacher K/V), mean over KV heads")
    fig.savefig(path, dpi=120)
    plt.close(fig)
