"""The threshold's result object: the sweep, the estimates, their definitions, and
``write(out)`` (threshold.json, threshold_samples.csv, fig_sweep.png, report.md)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from spectra.provenance import json_safe, strict_json
from spectra.report.tables import sweep_gamma
from spectra.threshold.margins import INF, ThresholdResult
from spectra.threshold.modules import ModuleChoice

#: threshold.json keys of 0.1 (the multiplier was called k) → their 0.2 names; both are
#: written for one release
KEY_ALIASES = {"k_star_bound": "gamma_star_bound", "k_star_flip": "gamma_star_flip",
               "predicted_threshold_k": "predicted_threshold_gamma", "measured_threshold_k": "measured_threshold_gamma",
               "measured_threshold_k_clean": "measured_threshold_gamma_clean",
               "share_k_star_bound_inf": "share_gamma_star_bound_inf",
               "share_k_star_flip_inf": "share_gamma_star_flip_inf"}

#: One sentence per number, printed in every report.
DEFINITIONS = {
    "γ": "multiplier of every LoRA module's scale s (the s of the paper's Figure 3): γ = 1 is the adapter as "
         "trained, γ = 0 removes every LoRA update. A trained classification head (modules_to_save) is used as "
         "trained, unless the report says it was extrapolated (head = scaled: W_base + γ·(W_saved − W_base)).",
    "M_γ(x)": "margin z_y(x) − z_ybd(x) of the model at multiplier γ (y: the sample's true label, ybd: the target label); "
              "negative on a triggered sample means the backdoor wins against the true label.",
    "D(x)": "M_1(x) − M_0(x), the adapter's margin gain; exactly ⟨c, s·ΔW x⟩ for a linear model.",
    "gamma_star_bound": "−M_0(x̃) / (D(x) − |D(x̃) − D(x)|) when that denominator is positive, else ∞; 0 when M_0(x̃) > 0. "
                    "Proposition 4.2's sufficient multiplier for one sample (it becomes exact in the linear case only as a bound).",
    "gamma_star_flip": "−M_0(x̃) / D(x̃) when D(x̃) > 0, else ∞; 0 when M_0(x̃) > 0. The multiplier at which a linear model's "
                   "triggered margin M_0(x̃) + γ·D(x̃) crosses zero.",
    "s_star": "γ*·s with s the chosen module's PEFT scale (α/r or α/√r): the scale that module would need.",
    "rho_bd": "−M_0(x̃) / (‖c‖·σ_pre), ‖c‖ = √2: how strongly the base pushes x̃ to the target, in units of σ_pre.",
    "rho_cl": "D(x) / (‖c‖·σ_Δ): how strongly the adapter pushes the clean x towards its label, in units of σ_Δ.",
    "rho_tr": "|D(x̃) − D(x)| / (‖c‖·σ_Δ): how much the trigger changes the adapter's push.",
    "rho_eff": "ρ_cl − ρ_tr; Proposition 4.2 needs ρ_eff > 0, otherwise its sufficient condition is vacuous (γ*_bound = ∞).",
    "sigma_pre": "σ_max(W_pre) of the chosen module.",
    "sigma_delta": "σ_max(s·ΔW) of the chosen module (low-rank SVD for LoRA, dense for a modules_to_save head).",
    "worst": "the largest per-sample value (Proposition 4.2 over the whole sample set); ∞ when any sample's value is ∞.",
    "uniform": "Proposition 4.2 stated with uniform constants: (max ρ_bd / (min ρ_cl − max ρ_tr))·σ_pre/σ_Δ; "
               "∞ when min ρ_cl ≤ max ρ_tr, 0 when max ρ_bd ≤ 0.",
    "predicted_asr(γ)": "share of triggered non-target samples whose linearised margin M_0(x̃) + γ·D(x̃) is negative: those "
                        "with γ < γ*_flip, plus the few the adapter drives into the target (M_0(x̃) > 0, D(x̃) < 0, "
                        "γ > −M_0(x̃)/D(x̃)). Exact for a linear model.",
    "predicted_threshold_gamma": "smallest γ ≥ 0 where predicted_asr(γ) < 50%, computed exactly from the per-sample crossings.",
    "measured_threshold_gamma": "smallest γ on the sweep grid where the measured ASR < 50%.",
    "measured_crossing_gamma": "where the measured ASR crosses 50%, interpolated log-linearly between the two grid points "
                           "around the first one below 50%.",
    "search_threshold_gamma": "the cheap estimate: an adaptive search (doubling γ from 1, then regula falsi in log γ) for "
                          "the γ where the median target-versus-rest margin of a seeded subsample of triggered rows "
                          "turns positive, i.e. where ASR falls below 50%; `search.forward_passes` is its cost.",
    "measured_threshold_gamma_clean": "the same, counting only grid points where the model still works: not collapsed to one "
                                  "class, and clean accuracy above the majority-class share (a collapsed or worse-than-"
                                  "constant model has a low ASR whatever the trigger does).",
    "asr_floor": "share of non-target samples the model already assigns to the target label without the trigger.",
}



@dataclass
class ThresholdReport:
    """The result of :func:`threshold`; ``.write(out)`` writes the report folder."""

    result: ThresholdResult
    sweep: list[dict[str, Any]]
    module: ModuleChoice
    settings: dict[str, Any]
    inputs: dict[str, Any]
    versions: dict[str, str]
    checks: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    search: Any = None  # spectra.threshold_search.CrossingSearch
    margins_by_gamma: dict[float, list[float]] = field(default_factory=dict)  # target-vs-rest margins of x̃ per k

    @property
    def definitions(self) -> dict[str, str]:
        """One sentence per number (what reports print beside the numbers)."""
        return DEFINITIONS

    @property
    def measured_crossing_gamma(self) -> float:
        """Where the measured ASR crosses 50%, interpolated log-linearly between grid points
        (∞ if it never does)."""
        return measured_crossing(self.sweep)

    @property
    def search_threshold_gamma(self) -> float:
        """The adaptive search's crossing (``nan`` when no search ran)."""
        return float(self.search.gamma) if self.search is not None else float("nan")

    @property
    def measured_threshold_gamma(self) -> float:
        """Smallest grid γ with measured ASR < 50% (∞ if none)."""
        return measured_threshold(self.sweep)

    @property
    def measured_threshold_gamma_clean(self) -> float:
        """Smallest grid γ with measured ASR < 50% on a model that still works (∞ if none):
        see :func:`measured_threshold_working`."""
        return measured_threshold_working(self.sweep)

    @property
    def predicted_threshold_gamma(self) -> float:
        return self.result.predicted_threshold()

    def predicted_curve(self, points: int = 400) -> tuple[list[float], list[float]]:
        """(k, predicted ASR) on a dense grid from 0 to the largest swept k, crossings included."""
        kmax = max([sweep_gamma(r) for r in self.sweep] + [1.0])
        dense = torch.cat([torch.linspace(0.0, 1.0, points // 4, dtype=torch.float64),
                           torch.logspace(0.0, math.log10(kmax), points, dtype=torch.float64) if kmax > 1 else
                           torch.zeros(0, dtype=torch.float64)])
        cross = torch.cat([self.result.gamma_star_flip, self.result.gamma_enter])
        cross = cross[torch.isfinite(cross) & (cross > 0) & (cross <= kmax)]
        eps = 1e-9 * max(kmax, 1.0)
        ks = torch.unique(torch.cat([dense, cross - eps, cross]).clamp(min=0.0))
        return ks.tolist(), self.result.predicted_asr(ks).tolist()

    def to_json(self) -> dict[str, Any]:
        """``threshold.json``: the summary, the sweep, the module and its σ's, the checks, with the 0.1 key
        names beside the new ones (:data:`KEY_ALIASES`)."""
        s = self.result.summary()
        out: dict[str, Any] = {
            "gamma_star_bound": s["gamma_star_bound"],
            "gamma_star_flip": s["gamma_star_flip"],
            "s_star": s["s_star"],
            "rho_bd": s["rho_bd"], "rho_cl": s["rho_cl"], "rho_tr": s["rho_tr"], "rho_eff": s["rho_eff"],
            "share_rho_eff_nonpositive": s["share_rho_eff_nonpositive"],
            "share_rho_eff_nonpositive_flipped": s["share_rho_eff_nonpositive_flipped"],
            "share_gamma_star_bound_inf": s["share_gamma_star_bound_inf"],
            "share_gamma_star_flip_inf": s["share_gamma_star_flip_inf"],
            "n_samples": s["n_samples"],
            "n_flipped_by_base": s["n_flipped_by_base"],
            "share_flipped_by_base": s["share_flipped_by_base"],
            "n_entering": s["n_entering"],
            "predicted_threshold_gamma": self.predicted_threshold_gamma,
            "measured_threshold_gamma": self.measured_threshold_gamma,
            "measured_threshold_gamma_clean": self.measured_threshold_gamma_clean,
            "measured_crossing_gamma": self.measured_crossing_gamma,
            "search_threshold_gamma": self.search_threshold_gamma,
            "search": self.search.to_dict() if self.search is not None else None,
            "sweep": self.sweep,
            "module": self.module.name,
            "module_info": self.module.to_dict(),
            "sigma_pre": self.module.sigma_pre,
            "sigma_delta": self.module.sigma_delta,
            "scale": self.module.scale,
            "checks": self.checks,
            "notes": self.notes,
            "settings": self.settings,
            "inputs": self.inputs,
            "versions": self.versions,
            "timings_s": self.timings,
            "definitions": DEFINITIONS,
            "conventions": {"null": "∞ (no finite value: the estimate never crosses, or no grid γ qualified)"},
        }
        # the names of 0.1, kept for one release (CHANGELOG): k was the multiplier now called γ
        out.update({old: out[new] for old, new in KEY_ALIASES.items()})
        return json_safe(out)

    def write(self, out: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write threshold.json, threshold_samples.csv, fig_sweep.png and report.md atomically."""
        import csv

        from spectra.io.output import atomic_output_dir
        from spectra.report.style import save_figure
        from spectra.report.threshold_figures import sweep_figure
        from spectra.report.threshold_markdown import render_threshold_markdown

        with atomic_output_dir(out, overwrite=overwrite) as tmp:
            (tmp / "threshold.json").write_text(strict_json(self.to_json()) + "\n",
                                                encoding="utf-8")
            columns = ["index", "M0_clean", "M0_trig", "D_clean", "D_trig", "gamma_star_bound", "gamma_star_flip",
                       "rho_bd", "rho_cl", "rho_tr", "k_star_bound", "k_star_flip"]  # k_*: 0.1 names, one release
            with open(tmp / "threshold_samples.csv", "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=columns)
                writer.writeheader()
                for row in self.result.rows():
                    row.update(k_star_bound=row["gamma_star_bound"], k_star_flip=row["gamma_star_flip"])
                    writer.writerow({k: (repr(float(v)) if isinstance(v, float) else v) for k, v in row.items()})
            save_figure(sweep_figure(self), tmp / "fig_sweep.png")
            (tmp / "report.md").write_text(render_threshold_markdown(self), encoding="utf-8")
        return Path(out)


def measured_crossing(sweep: Sequence[dict[str, Any]], level: float = 0.5) -> float:
    """The first γ where the measured ASR falls below ``level``, interpolated between the two
    grid points around it (log-linear in γ; linear when the lower one is γ = 0). 0 when the
    smallest γ is already below; ∞ when no γ is."""
    rows = sorted((sweep_gamma(r), float(r["asr"])) for r in sweep
                  if r.get("asr") is not None and not math.isnan(float(r["asr"])))
    for i, (k, asr) in enumerate(rows):
        if asr < level:
            if i == 0:
                return k
            k0, a0 = rows[i - 1]
            t = (a0 - level) / (a0 - asr)
            if k0 <= 0:
                return k0 + t * (k - k0)
            return math.exp(math.log(k0) + t * (math.log(k) - math.log(k0)))
    return INF


def crossing_interval(sweep: Sequence[dict[str, Any]], level: float = 0.5) -> tuple[float, float]:
    """Where the ASR's ``level`` crossing may lie given each grid point's Wilson 95 % interval
    (``asr_ci``): (the crossing of the lower bounds, the crossing of the upper bounds) — the lower
    bounds fall below ``level`` first. ∞ for an end that never crosses; a point without ``asr_ci``
    counts at its measured ASR. Pointwise intervals: the range says how sharply the sweep places
    the crossing, it is not a simultaneous 95 % band."""
    def at(i: int) -> list[dict[str, Any]]:
        return [{**row, "asr": (row.get("asr_ci") or [row.get("asr"), row.get("asr")])[i]} for row in sweep]

    return measured_crossing(at(0), level), measured_crossing(at(1), level)


def measured_threshold(sweep: Sequence[dict[str, Any]], level: float = 0.5) -> float:
    for row in sorted(sweep, key=sweep_gamma):
        asr = row.get("asr")
        if asr is not None and not math.isnan(float(asr)) and float(asr) < level:
            return sweep_gamma(row)
    return INF


def measured_threshold_working(sweep: Sequence[dict[str, Any]], majority_share: float | None = None,
                               level: float = 0.5) -> float:
    """Smallest grid γ with measured ASR < ``level`` where the model still works: not
    collapsed to one class, and clean accuracy above the majority-class share (what a
    constant guess scores). An ASR of 0 from a model that never predicts the target, or
    from one that has turned the target into its default answer, is not a removed backdoor.
    ``majority_share`` stands in for rows written before sweeps recorded their own."""
    def works(row: dict[str, Any]) -> bool:
        majority = row.get("majority_share", majority_share)
        return not row.get("collapsed") and (majority is None or float(row["ca"]) > float(majority))

    return measured_threshold([r for r in sweep if works(r)], level)
