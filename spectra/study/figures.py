"""The study's figures, drawn from :class:`spectra.study.tables.Results` alone (no model).

- :func:`rows_figure`: CA and ASR per method (mean and Student-t 95 % interval over seeds), ASR floors, collapses;
- :func:`curves_figure`: the training curves of the learning-rate pick (validation CA per
  epoch, the monitored ASR dotted);
- :func:`sweep_figure`: Figure 3 — CA and ASR against the LoRA-scale multiplier γ for LoRA
  and for RoRA before Pt (head as trained), and where Pt lands;
- :func:`predictor_figure`: predicted against measured crossings, with the 2× band.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from spectra.report.tables import sweep_gamma
from spectra.study.tables import Results, collapsed_gammas


def rows_figure(results: Results, rows: Sequence[str], attacks: Sequence[str]) -> Any:
    """CA and ASR (mean with Student-t 95 % error bars) of the given table rows, one panel per attack."""
    from spectra.report.style import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, len(attacks), figsize=(7 * len(attacks), 4.4), squeeze=False, sharey=True)
    for ax, attack in zip(axes[0], attacks):
        cells = [results.row_cell(r, attack) for r in rows]
        for offset, key, color in ((-0.2, "ca", "tab:blue"), (0.2, "asr", "tab:red")):
            means = [c.mean(key) for c in cells]
            half = [(m - c.interval(key)[0]) for m, c in zip(means, cells)]  # the Student-t 95 % half-width
            ax.bar([i + offset for i in range(len(rows))], [0 if math.isnan(m) else m for m in means], 0.4,
                   yerr=[0 if math.isnan(h) else h for h in half], color=color, capsize=3, label=key.upper())
        floors = [c.mean("asr_floor") for c in cells]
        ax.scatter([i + 0.2 for i in range(len(rows))], floors, marker="_", s=400, color="black", zorder=3,
                   label="ASR floor (no trigger)")
        for i, c in enumerate(cells):
            label = f"n={c.n}" + (f"\ncollapsed {c.collapsed}" if c.collapsed else "")
            ax.text(i, 101, label, ha="center", va="bottom", fontsize=7,
                    color="darkred" if c.collapsed else "dimgray")
        ax.set_xticks(range(len(rows)), rows, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 112)
        ax.set_title(f"{attack}: MiniLM, rt → CR test (mean and 95 % t-interval over seeds; the base: over bases)",
                     fontsize=10)
    axes[0, 0].set_ylabel("%")
    # above the panels: inside one, the legend covered the bars of the last rows
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def curves_figure(results: Results, families: Sequence[str] = ("lora", "rora", "fft")) -> Any:
    """Validation CA per epoch of each family's learning-rate pick runs, one panel per family (how the rate
    was picked)."""
    from spectra.report.style import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, len(families), figsize=(5.2 * len(families), 3.8), squeeze=False, sharey=True)
    for ax, family in zip(axes[0], families):
        for i, (lr, doc) in enumerate(results.picks(family).items()):
            epochs = doc.get("epochs", [])
            x = [e["epoch"] for e in epochs]
            color = f"C{i}"
            ax.plot(x, [100 * e["val_ca"] for e in epochs], "-o", ms=3, color=color, label=f"lr {lr:g} val CA")
            if any(e.get("val_asr_monitor") is not None for e in epochs):
                ax.plot(x, [100 * (e.get("val_asr_monitor") or math.nan) for e in epochs], ":", color=color,
                        label=f"lr {lr:g} val ASR (monitor)")
        ax.set_title(f"{family}: BadNet, seed 0", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 100)
        if not results.picks(family):  # say so rather than leave an empty frame that reads like a plotting bug
            ax.text(0.5, 0.5, "runs pending", transform=ax.transAxes, ha="center", va="center", color="0.5")
    axes[0, 0].set_ylabel("% (validation split of CR train)")
    # one legend above the panels (a rate has one colour in every panel); inside, it covered the curves
    legend: dict[str, Any] = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="upper center", ncol=len(legend), fontsize=7,
                   frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return fig


def _mean_curve(sweeps: list[dict[str, Any]], key: str) -> tuple[list[float], list[float], list[float]]:
    ks = sorted({sweep_gamma(r) for s in sweeps for r in s["sweep"]})
    mean, std = [], []
    for k in ks:
        vals = [100 * float(r[key]) for s in sweeps for r in s["sweep"] if sweep_gamma(r) == k]
        m = sum(vals) / len(vals)
        mean.append(m)
        std.append(math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0)
    return ks, mean, std




def sweep_figure(results: Results, attack: str) -> Any:
    """Figure 3 for one attack: LoRA (dashed) and RoRA before Pt (solid), mean over the
    fine-tuning seeds on base 0 (as Table 2; the other bases' crossings are in the threshold table)."""
    from spectra.report.style import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.4))
    styles = {"lora": ("--", "LoRA"), "rora": ("-", "RoRA before Pt (CI+Tr)")}
    most = 0  # the most seeds behind a curve: the title says "seed 0" when that is all there is
    for method, (ls, name) in styles.items():
        sweeps = results.runs("sweep", attack, method, base_seeds=(0,))
        if not sweeps:
            continue
        most = max(most, len(sweeps))
        curves = {}
        for key, color in (("ca", "tab:blue"), ("asr", "tab:red")):
            ks, mean, std = curves[key] = _mean_curve(sweeps, key)
            x = [max(k, 0.25) for k in ks]  # γ = 0 drawn at the left edge of the log axis
            ax.plot(x, mean, ls, color=color, marker="o", ms=3, label=f"{name} {key.upper()} (n={len(sweeps)})")
            ax.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], color=color,
                            alpha=0.08)
        if all("asr_floor" in r for sw in sweeps for r in sw["sweep"]):
            ks, floor, _ = _mean_curve(sweeps, "asr_floor")
            ax.plot([max(k, 0.25) for k in ks], floor, ls, color="tab:red", lw=0.8, alpha=0.45,
                    label=f"{name} ASR floor (no trigger)")
        # a collapsed model answers one class whatever the input: its ASR there says nothing about the trigger
        ks, asr, _ = curves["asr"]
        collapsed = collapsed_gammas(sweeps)
        gone = [(max(k, 0.25), a) for k, a in zip(ks, asr) if k in collapsed]
        if gone:
            label = "collapsed there (≥ 1 seed): ASR meaningless"
            ax.scatter(*zip(*gone), marker="x", s=45, color="black", zorder=4,
                       label=None if label in ax.get_legend_handles_labels()[1] else label)
        pts = [s["pt"] for s in sweeps if s.get("pt") and s["pt"].get("multiplier_median")]
        if pts:
            lo = min(p["multiplier_min"] for p in pts)
            hi = max(p["multiplier_max"] for p in pts)
            ax.axvspan(lo, hi, color="gray" if method == "lora" else "tab:green", alpha=0.12,
                       label=f"Pt's multipliers s'/s, {name.split()[0]} (top-3 blocks)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("γ: multiplier of every LoRA scale s (head as trained; 1 = as trained; leftmost point: γ = 0)")
    ax.set_ylabel("% on CR test")
    ax.set_ylim(0, 102)
    spread = "mean over seeds, band ± std" if most > 1 else "seed 0"
    ax.set_title(f"Figure 3 analogue, {attack} (MiniLM, rt → CR; base 0, {spread})", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside: inside, it hid curves
    else:
        ax.text(0.5, 0.5, "sweeps pending", transform=ax.transAxes, ha="center", va="center", color="0.5")
    fig.tight_layout()
    return fig


def predictor_figure(rows: list[dict[str, Any]]) -> Any:
    """Predicted (linear bound and search) against measured crossing, log-log, with the 2× band."""
    from spectra.report.style import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 5))
    finite = [r for r in rows if r["measured"] and math.isfinite(r["measured"])]
    if finite:
        lo = min(r["measured"] for r in finite) / 4
        hi = max(r["measured"] for r in finite) * 4
        for key, marker, name in (("linear", "x", "Prop. 4.2 linearisation (γ = 0 → 1)"),
                                  ("search", "o", "adaptive search (64 rows)")):
            pts = [(r["measured"], r[key]) for r in finite if r[key] is not None and math.isfinite(r[key])]
            if pts:
                ax.scatter(*zip(*pts), marker=marker, label=name)
                hi = max(hi, max(p for _, p in pts) * 1.5)
        xs = [lo, hi]
        ax.plot(xs, xs, "k-", lw=0.8)
        ax.fill_between(xs, [x / 2 for x in xs], [x * 2 for x in xs], color="gray", alpha=0.15, label="within 2×")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    for axis in (ax.xaxis, ax.yaxis):  # after set_*scale, which resets them
        # base-2 ticks written as plain numbers: matplotlib's default minor labels ("3×10⁻¹4×10⁻¹…") overlapped
        axis.set_major_locator(LogLocator(base=2))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("measured crossing γ (ASR = 50%, interpolated)")
    ax.set_ylabel("predicted γ")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("Where ASR crosses 50%: predicted vs measured", fontsize=10)
    fig.tight_layout()
    return fig
