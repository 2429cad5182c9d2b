"""Figures 1 and 2 of the paper, drawn from an audit table (never from tensors).

Each function takes the audit DataFrame (one row per adapter × module) and returns a
matplotlib Figure; adapters are drawn side by side, one panel each, on shared axes so
before/after comparisons read at a glance.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from spectra.report.style import palette, pyplot


def _positions(table: pd.DataFrame) -> tuple[pd.Series, list[float], list[str]]:
    """x position per row: transformer blocks first, then modules outside any block."""
    layers = table["layer"].dropna().astype(int)
    top = int(layers.max()) + 1 if len(layers) else 0
    outside = sorted(table.loc[table["layer"].isna(), "module_type"].unique())
    extra = {name: top + i for i, name in enumerate(outside)}
    x = table.apply(lambda r: float(r["layer"]) if pd.notna(r["layer"]) else float(extra[r["module_type"]]), axis=1)
    ticks = sorted(set(layers.tolist()))
    # label every block when there are few, every few otherwise, so ticks stay legible
    step = max(1, len(ticks) // 12)
    tick_pos = [float(t) for t in ticks[::step]] + [float(v) for v in extra.values()]
    tick_lab = [str(t) for t in ticks[::step]] + list(extra.keys())
    return x, tick_pos, tick_lab


def _panels(plt: Any, n_adapters: int, rows: int = 1, height: float = 3.6) -> tuple[Any, Any]:
    fig, axes = plt.subplots(rows, n_adapters, figsize=(max(5.5, 4.6 * n_adapters), height * rows),
                             sharex=True, sharey="row", squeeze=False)
    return fig, axes


def _draw_lines(ax: Any, frame: pd.DataFrame, x: pd.Series, column: str, colours: dict[str, Any]) -> None:
    for module_type, group in frame.groupby("module_type", sort=True):
        order = x.loc[group.index].sort_values().index
        ax.plot(x.loc[order], group.loc[order, column], marker="o", ms=4, lw=1.4,
                color=colours[module_type], label=module_type)


def ratio_figure(table: pd.DataFrame) -> Any:
    """Figure 1: σ_max(W_pre) / σ_max(s·ΔW) per layer and module type, log scale.

    The dashed line at 1 is where the update is as strong as the base layer (what RoRA's
    post-training rescaling aims for); LoRA adapters typically sit one or two orders of
    magnitude above it.
    """
    plt = pyplot()
    adapters = list(dict.fromkeys(table["adapter"]))
    types = sorted(table["module_type"].unique())
    colours = palette(types)
    x, tick_pos, tick_lab = _positions(table)
    fig, axes = _panels(plt, len(adapters))
    finite = table["ratio"].replace([float("inf")], float("nan")).dropna()
    for col, adapter in enumerate(adapters):
        ax = axes[0, col]
        frame = table[table["adapter"] == adapter]
        _draw_lines(ax, frame.replace([float("inf")], float("nan")), x, "ratio", colours)
        ax.axhline(1.0, ls="--", lw=1, color="0.3")
        ax.set_yscale("log")
        ax.set_title(adapter, fontsize=10)
        ax.set_xlabel("layer")
        ax.set_xticks(tick_pos, tick_lab, rotation=0 if len(tick_lab) < 14 else 90, fontsize=8)
    if len(finite):
        axes[0, 0].set_ylim(min(0.5, finite.min() / 1.5), max(2.0, finite.max() * 1.5))
    axes[0, 0].set_ylabel(r"$\sigma_{\max}(W_{pre}) / \sigma_{\max}(s\,\Delta W)$")
    axes[0, -1].legend(title="module", fontsize=8, title_fontsize=8, loc="best")
    fig.suptitle("Spectral ratio per layer (Figure 1)\nabove 1 = the update is weaker than the base layer", fontsize=10)
    fig.tight_layout()
    return fig


def alignment_figure(table: pd.DataFrame, top_k: int) -> Any:
    """Figure 2: max |cos| between ΔW's leading singular vectors and W_pre's top-k.

    Top row: left (output-space) vectors; bottom row: right (input-space) vectors. The
    dotted line is what a random direction would score against the same basis.
    """
    plt = pyplot()
    adapters = list(dict.fromkeys(table["adapter"]))
    types = sorted(table["module_type"].unique())
    colours = palette(types)
    x, tick_pos, tick_lab = _positions(table)
    fig, axes = _panels(plt, len(adapters), rows=2, height=3.0)
    for col, adapter in enumerate(adapters):
        frame = table[table["adapter"] == adapter]
        for row, side in enumerate(("left", "right")):
            ax = axes[row, col]
            _draw_lines(ax, frame, x, f"cos_max_{side}", colours)
            chance = frame[f"cos_random_{side}"].median()
            ax.axhline(chance, ls=":", lw=1.2, color="0.3", label="random")
            ax.set_ylim(0, 1.02)
            ax.set_xticks(tick_pos, tick_lab, rotation=0 if len(tick_lab) < 14 else 90, fontsize=8)
            if row == 0:
                ax.set_title(adapter, fontsize=10)
            else:
                ax.set_xlabel("layer")
        axes[0, 0].set_ylabel(f"left: max |cos| vs top-{top_k}")
        axes[1, 0].set_ylabel(f"right: max |cos| vs top-{top_k}")
    axes[0, -1].legend(title="module", fontsize=8, title_fontsize=8, loc="best")
    fig.suptitle(f"Alignment of ΔW's leading singular vectors\nwith W_pre's top-{top_k} (Figure 2)", fontsize=10)
    fig.tight_layout()
    return fig
