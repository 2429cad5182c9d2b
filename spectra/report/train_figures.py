"""The training figure: losses per epoch and σ_Δ of Pt's modules against σ_pre.

Pure drawing from the training log table (:func:`spectra.train.trainer.log_table`, passed in by the caller);
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
    colour (Pt's target at factor 1). With a validation split, a third panel: (c) clean
    validation CA per epoch (what the learning rate is chosen from) and, dotted, the
    monitored validation ASR (recorded, never used to choose)."""
    from spectra.report.style import pyplot

    plt = pyplot()
    has_val = table is not None and len(table) > 0 and "val_ca" in table
    fig, axes = plt.subplots(1, 3 if has_val else 2, figsize=(16 if has_val else 11, 4))
    ax_loss, ax_sig = axes[0], axes[1]
    if table is None or len(table) == 0:
        for ax in (ax_loss, ax_sig):
            ax.text(0.5, 0.5, "no training log", ha="center", va="center", transform=ax.transAxes)
        return fig
    if has_val:
        _validation_panel(axes[2], table)
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


def _validation_panel(ax: Any, table: Any) -> None:
    """(c) clean validation CA per epoch, and the monitored validation ASR (dotted)."""
    # each series over the rows that hold it (a NaN between two points would break the line), and a
    # margin around 0-100 %: an ASR of 0 drawn on the axis line could not be seen; the "x" marker needs an
    # edge width of its own (the style sets 0, which left it invisible)
    ca = table.dropna(subset=["val_ca"])
    ax.plot(ca["epoch"], 100 * ca["val_ca"], "-", marker="o", color="tab:blue", label="validation CA (clean)")
    if "val_asr_monitor" in table and table["val_asr_monitor"].notna().any():
        asr = table.dropna(subset=["val_asr_monitor"])
        ax.plot(asr["epoch"], 100 * asr["val_asr_monitor"], ":", marker="x", markeredgewidth=1.5, color="tab:red",
                label="validation ASR (monitor only)")
    ax.set_ylim(-3, 103)
    ax.set_xlabel("epoch")
    ax.set_ylabel("%")
    ax.set_title("(c) validation curve")
    ax.legend(fontsize=8, loc="lower left")
