"""The study's sweep run: Figure 3 (CA and ASR against the LoRA-scale multiplier γ, the head
as trained) for one adapter before Pt, the threshold predictions beside the measured
crossing, and where Pt lands on the same axis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SWEEP_KEYS = ("gamma", "ca", "asr", "asr_floor", "majority_share", "collapsed", "predicted_asr", "median_margin_trig",
              "n", "n_non_target")


def sweep_run(base: str, adapter: str, test: Any, trigger: str, target_label: int, recipe: Any,
              rescale: dict[str, Any] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Sweep ``adapter`` on ``test`` over ``recipe.grid`` and return the study's JSON record.

    The record keeps the sweep rows, the paper's linear prediction (``γ*_flip`` crossing),
    the adaptive search's estimate and cost, the measured crossing (grid and interpolated),
    the target-versus-rest margins of every triggered row at every k (so other predictors
    can be scored later without a model), and Pt's multipliers ``s'/s`` when given.
    """
    import time

    from spectra.threshold import ThresholdSettings, threshold

    t0 = time.time()
    settings = ThresholdSettings(grid=recipe.grid, max_length=recipe.max_length, device="cpu", head="trained",
                                 batch_size=64)
    report = threshold(base, adapter, test, trigger, target_label, settings)
    summary = report.result.summary()
    sweep = [{k: row.get(k) for k in SWEEP_KEYS} for row in report.sweep]
    log(f"sweep of {adapter}: measured crossing γ = {report.measured_crossing_gamma:.3g}, "
        f"linear prediction {report.predicted_threshold_gamma:.3g}, search {report.search_threshold_gamma:.3g} "
        f"({report.search.forward_passes} forward passes) in {time.time() - t0:.0f} s")
    forward_sweep = sum(int(r["n"]) + int(r["n_non_target"]) for r in report.sweep)
    return {
        "adapter": adapter,
        "sweep": sweep,
        "measured_threshold_gamma": report.measured_threshold_gamma,
        "measured_threshold_gamma_clean": report.measured_threshold_gamma_clean,
        "measured_crossing_gamma": report.measured_crossing_gamma,
        "predicted_threshold_gamma": report.predicted_threshold_gamma,
        "search_threshold_gamma": report.search_threshold_gamma,
        "search": report.search.to_dict(),
        "forward_passes": {"sweep": forward_sweep, "search": report.search.forward_passes},
        "gamma_star_flip": summary["gamma_star_flip"], "gamma_star_bound": summary["gamma_star_bound"],
        "rho": {name: summary[name] for name in ("rho_bd", "rho_cl", "rho_tr", "rho_eff")},
        "share_rho_eff_nonpositive": summary["share_rho_eff_nonpositive"],
        "module": report.module.to_dict(),
        "checks": report.checks,
        "pt": rescale,
        "margins_by_gamma": {f"{k:g}": [round(float(v), 4) for v in m] for k, m in report.margins_by_gamma.items()},
        "timings_s": report.timings,
    }
