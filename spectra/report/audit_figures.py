"""Figures 1 and 2 of the paper, drawn from an audit's rows (never from tensors).

Each function takes the audit's rows (one dict per adapter × module; a DataFrame of them
is accepted too) and returns a matplotlib Figure; adapters are drawn side by side, one
panel each, on shared axes so before/after comparisons read at a glance. Plain Python
over the rows, not pandas: ``spectra audit`` never imports it.
"""

from __future__ import annotations

import math
from typing import Any

from spectra.report.audit_rows import as_rows, finite_values, median
from spectra.report.style import palette, pyplot


def _positions(rows: list[dict[str, Any]]) -> tuple[list[float], list[float], list[str]]:
    """x position per row: transformer blocks first, then modules outside any block."""
    layers = sorted({int(r["layer"]) for r in rows if r.get("layer") is not None})
    top = layers[-1] + 1 if layers else 0
    outside = sorted({r["module_type"] for r in rows if r.get("layer") is None})
    extra = {name: top + i for i, name in enumerate(outside)}
    x = [float(r["layer"]) if r.get("layer") is not None else float(extra[r["module_type"]]) for r in rows]
    # label every block when there are few, every few otherwise, so ticks stay legible
    step = max(1, len(layers) // 12)
    tick_pos = [float(t) for t in layers[::step]] + [float(v) for v in extra.values()]
    tick_lab = [str(t) for t in layers[::step]] + list(extra.keys())
    return x, tick_pos, tick_lab


def _panels(plt: Any, n_adapters: int, rows: int = 1, height: float = 3.6) -> tuple[Any, Any]:
    fig, axes = plt.subplots(rows, n_adapters, figsize=(max(5.5, 4.6 * n_adapters), height * rows),
                             sharex=True, sharey="row", squeeze=False)
    return fig, axes


def _legend_outside(ax: Any) -> None:
    """The module legend to the right of the panels: inside, "best" still covered the first layers'
    points (seven module types on SmolLM2)."""
    ax.legend(title="module", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              borderaxespad=0.0)


def _value(row: dict[str, Any], column: str) -> float:
    value = row.get(column)
    value = float("nan") if value is None else float(value)
    return float("nan") if value == float("inf") else value  # an infinite ratio is not drawn


def _draw_lines(ax: Any, rows: list[dict[str, Any]], x: list[float], adapter: str, column: str,
                colours: dict[str, Any]) -> None:
    """One line per module type of ``adapter``, its points in x order."""
    for module_type in sorted({r["module_type"] for r in rows}):
        points = sorted((xi, _value(r, column)) for r, xi in zip(rows, x)
                        if r["adapter"] == adapter and r["module_type"] == module_type)
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=4, lw=1.4,
                    color=colours[module_type], label=module_type)


def chance_by_type(rows: list[dict[str, Any]], side: str) -> dict[str, float]:
    """Each module type's chance level (median ``cos_random_<side>``): it depends on the module's
    size, so one line for all would put a small module (a GQA k_proj's 192 rows: 0.17) above
    chance when it sits at it (the median over a model's modules: 0.10)."""
    types = sorted({r["module_type"] for r in rows})
    out = {t: median(finite_values((r for r in rows if r["module_type"] == t), f"cos_random_{side}")) for t in types}
    return {t: v for t, v in out.items() if not math.isnan(v)}


def _draw_chance(ax: Any, rows: list[dict[str, Any]], side: str, colours: dict[str, Any]) -> None:
    """The dotted chance line: one for the panel when every module type shares it (within 0.01),
    else one per type in that type's colour."""
    chance = chance_by_type(rows, side)
    if not chance:
        return
    if max(chance.values()) - min(chance.values()) < 0.01:
        ax.axhline(median(list(chance.values())), ls=":", lw=1.2, color="0.3", label="random")
        return
    for module_type, level in chance.items():
        ax.axhline(level, ls=":", lw=1.2, color=colours[module_type])
    ax.plot([], [], ls=":", lw=1.2, color="0.3", label="random (dotted, each type's colour)")


def ratio_figure(table: Any) -> Any:
    """Figure 1: σ_max(W_pre) / σ_max(s·ΔW) per layer and module type, log scale.

    The dashed line at 1 is where the update is as strong as the base layer (what RoRA's
    post-training rescaling aims for); LoRA adapters typically sit one or two orders of
    magnitude above it.
    """
    rows = as_rows(table)
    plt = pyplot()
    adapters = list(dict.fromkeys(r["adapter"] for r in rows))
    colours = palette(sorted({r["module_type"] for r in rows}))
    x, tick_pos, tick_lab = _positions(rows)
    fig, axes = _panels(plt, len(adapters))
    finite = [v for v in (_value(r, "ratio") for r in rows) if not math.isnan(v)]
    for col, adapter in enumerate(adapters):
        ax = axes[0, col]
        _draw_lines(ax, rows, x, adapter, "ratio", colours)
        ax.axhline(1.0, ls="--", lw=1, color="0.3")
        ax.set_yscale("log")
        ax.set_title(adapter, fontsize=10)
        ax.set_xlabel("layer")
        ax.set_xticks(tick_pos, tick_lab, rotation=0 if len(tick_lab) < 14 else 90, fontsize=8)
    if finite:
        axes[0, 0].set_ylim(min(0.5, min(finite) / 1.5), max(2.0, max(finite) * 1.5))
    axes[0, 0].set_ylabel(r"$\sigma_{\max}(W_{pre}) / \sigma_{\max}(s\,\Delta W)$")
    _legend_outside(axes[0, -1])
    fig.suptitle("Spectral ratio per layer (Figure 1)\nabove 1 = the update is weaker than the base layer", fontsize=10)
    fig.tight_layout()
    return fig


def alignment_figure(table: Any, top_k: int) -> Any:
    """Figure 2: max |cos| between ΔW's leading singular vectors and W_pre's top-k.

    Top row: left (output-space) vectors; bottom row: right (input-space) vectors. The
    dotted line is what a random direction would score against the same basis.
    """
    rows = as_rows(table)
    plt = pyplot()
    adapters = list(dict.fromkeys(r["adapter"] for r in rows))
    colours = palette(sorted({r["module_type"] for r in rows}))
    x, tick_pos, tick_lab = _positions(rows)
    fig, axes = _panels(plt, len(adapters), rows=2, height=3.0)
    for col, adapter in enumerate(adapters):
        for row, side in enumerate(("left", "right")):
            ax = axes[row, col]
            _draw_lines(ax, rows, x, adapter, f"cos_max_{side}", colours)
            _draw_chance(ax, [r for r in rows if r["adapter"] == adapter], side, colours)
            ax.set_ylim(0, 1.02)
            ax.set_xticks(tick_pos, tick_lab, rotation=0 if len(tick_lab) < 14 else 90, fontsize=8)
            if row == 0:
                ax.set_title(adapter, fontsize=10)
            else:
                ax.set_xlabel("layer")
        axes[0, 0].set_ylabel(f"left: max |cos| vs top-{top_k}")
        axes[1, 0].set_ylabel(f"right: max |cos| vs top-{top_k}")
    _legend_outside(axes[0, -1])
    fig.suptitle(f"Alignment of ΔW's leading singular vectors\nwith W_pre's top-{top_k} (Figure 2)", fontsize=10)
    fig.tight_layout()
    return fig


def figures(table: Any, top_k: int) -> dict[str, Any]:
    """``{"fig_ratio": Figure 1, "fig_alignment": Figure 2}``: an audit's two figures, named as
    the files ``spectra audit`` writes (``<name>.png``)."""
    rows = as_rows(table)
    return {"fig_ratio": ratio_figure(rows), "fig_alignment": alignment_figure(rows, top_k)}
