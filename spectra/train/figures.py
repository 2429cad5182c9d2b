"""The training figure: losses per epoch and σ_Δ of Pt's modules against σ_pre.

Pure drawing from the training log table (:func:`spectra.train.trainer.log_table`);
nothing here trains or computes spectra. matplotlib's object-oriented API on the Agg
backend (via :func:`spectra.report.style.pyplot`), returning the ``Figure``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def short_module_name(name: str) -> str:
    """``bert.encoder.layer.5.attention.self.query`` → ``L5.query``."""
    from spectra.io.keys import parse_layer

    layer = parse_layer(name)
    tail = name.rsplit(".", 1)[-1]
    return f"L{layer}.{tail}" if layer is not None else tail


def train_figure(table: Any, sigma_pre: Mapping[str, float] | None = None, title: str = "") -> Any:
    """Two panels: (a) loss / task loss / Tr penalty per epoch; (b) σ_Δ = σ_max(s·B·A) per
    epoch for the modules Pt rescales, with each module's σ_max(W_pre) dashed in the same
    colour (Pt's target at factor 1)."""
    from spectra.report.style import pyplot

    plt = pyplot()
    fig, (ax_loss, ax_sig) = plt.subplots(1, 2, figsize=(11, 4))
    if table is None or len(table) == 0:
        for ax in (ax_loss, ax_sig):
            ax.text(0.5, 0.5, "no training log", ha="center", va="center", transform=ax.transAxes)
        return fig
    x = table["epoch"]
    for col, label, style in (("loss", "loss (task + penalty)", "-"), ("task_loss", "task loss", "--")):
        if col in table:
            ax_loss.plot(x, table[col], style, marker="o", label=label)
    if "penalty" in table and table["penalty"].abs().sum() > 0:
        ax_loss.plot(x, table["penalty"], ":", marker="s", label="Tr penalty λ·Σ")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("(a) training loss")
    ax_loss.legend(fontsize=8)

    cols = [c for c in table.columns if c.startswith("sigma_delta/")]
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for i, col in enumerate(cols):
        name = col.split("/", 1)[1]
        color = colors[i % len(colors)]
        ax_sig.plot(x, table[col], "-", marker="o", color=color, label=short_module_name(name))
        if sigma_pre and name in sigma_pre:
            ax_sig.axhline(sigma_pre[name], color=color, linestyle="--", linewidth=0.8)
    if cols:
        ax_sig.set_yscale("log")
        ax_sig.legend(fontsize=7, ncol=2)
    else:
        ax_sig.text(0.5, 0.5, "no module monitored", ha="center", va="center", transform=ax_sig.transAxes)
    ax_sig.set_xlabel("epoch")
    ax_sig.set_ylabel("σ_max(s·B·A)   (dashed: σ_max(W_pre))")
    ax_sig.set_title("(b) σ_Δ of Pt's modules before rescaling")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
