"""Figure 3 of the paper, drawn from a threshold report's sweep (never from a model).

CA and ASR measured at each multiplier γ of the adapter's scale, the ASR that the
per-sample linear crossings predict (dashed), and the ASR floor (dotted), on a symlog
x axis so that γ = 0 (the base model) shows beside the log-spaced multipliers; × marks a γ
where the model collapsed (one class for nearly every input).
"""

from __future__ import annotations

from typing import Any

from spectra.report.style import DEEP, pyplot
from spectra.report.tables import sweep_gamma


def sweep_figure(report: Any) -> Any:
    """Figure 3: CA(γ) and ASR(γ) against the adapter multiplier γ, predicted ASR dashed.

    ``report`` is a :class:`spectra.threshold.ThresholdReport`; vertical lines mark the
    predicted threshold (smallest γ where the predicted ASR < 50%) and the measured one
    (smallest grid γ where the measured ASR < 50%) when they are finite.
    """
    import math

    plt = pyplot()
    colours = DEEP[:6]
    sweep = sorted(report.sweep, key=sweep_gamma)
    ks = [sweep_gamma(r) for r in sweep]
    pct = lambda v: float("nan") if v is None else 100.0 * v  # noqa: E731

    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    for key, ci_key, label, colour, marker in (("ca", "ca_ci", "CA (clean accuracy)", colours[0], "o"),
                                               ("asr", "asr_ci", "ASR measured", colours[3], "s")):
        y = [pct(r[key]) for r in sweep]
        lo = [pct(r[ci_key][0]) if r.get(ci_key) else v for r, v in zip(sweep, y)]
        hi = [pct(r[ci_key][1]) if r.get(ci_key) else v for r, v in zip(sweep, y)]
        ax.plot(ks, y, marker=marker, ms=5, lw=1.6, color=colour, label=label)
        ax.fill_between(ks, lo, hi, color=colour, alpha=0.15, lw=0)
    pk, pa = report.predicted_curve()
    ax.plot(pk, [100.0 * v for v in pa], ls="--", lw=1.5, drawstyle="steps-post", color=colours[3], alpha=0.8,
            label="ASR predicted (linear in γ)")
    ax.plot(ks, [pct(r["asr_floor"]) for r in sweep], ls=":", lw=1.6, color="0.35", label="ASR floor")
    gone = [(k, pct(r["asr"])) for k, r in zip(ks, sweep) if r.get("collapsed")]
    if gone:  # a collapsed model answers one class whatever the input: its ASR there says nothing about the trigger
        ax.scatter(*zip(*gone), marker="x", s=55, color="black", zorder=4, label="collapsed: ASR meaningless")
    ax.axhline(50.0, color="0.6", lw=0.8, alpha=0.6)
    for value, label, colour in ((report.predicted_threshold_gamma, "predicted γ*", colours[3]),
                                 (report.measured_threshold_gamma, "measured γ*", colours[2])):
        if math.isfinite(value) and value <= max(ks):
            ax.axvline(value, color=colour, lw=1.0, ls="-." if "pred" in label else "-", alpha=0.8,
                       label=f"{label} = {value:.3g}")
    positive = [k for k in ks if k > 0]
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0, linscale=0.5)
    ax.set_xlim(left=0.0, right=max(ks) * 1.05 if max(ks) > 0 else 1.0)
    ax.set_xticks(ks)
    ax.set_xticklabels([f"{k:g}" for k in ks], fontsize=8)
    ax.set_ylim(-3, 103)
    ax.set_xlabel("γ  (multiplier of every adapted module's scale; 0 = base, 1 = adapter as trained)")
    ax.set_ylabel("%")
    ax.set_title(f"Scale sweep: {adapter_label(report.inputs['adapter']['path'])}", fontsize=10)
    ax.legend(fontsize=8, loc="best", framealpha=0.85)
    fig.tight_layout()
    return fig


def adapter_label(path: str) -> str:
    """A short name for an adapter folder: ``runs/x/lora/adapter`` reads as ``lora/adapter``
    since ``spectra fix`` names every adapter folder ``adapter``."""
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    return "/".join(parts[-2:]) if len(parts) >= 2 and parts[-1] == "adapter" else (parts[-1] if parts else path)
