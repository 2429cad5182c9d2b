"""``report.md`` for ``spectra threshold``: estimates, predicted vs measured sweep, an honest reading."""

from __future__ import annotations

import math
from typing import Any

from spectra.provenance import strict_json
from spectra.report.tables import fmt, fmt_interval, fmt_pct, markdown_table, provenance_sections
from spectra.report.tables import fmt_multiplier
from spectra.report.tables import sweep_gamma


def _pct(v: Any) -> str:
    return fmt_pct(v, missing="n/a")


_ci = fmt_interval


def render_threshold_markdown(report: Any) -> str:
    """Render a :class:`spectra.threshold.ThresholdReport` as a self-contained Markdown report."""

    s = report.result.summary()
    m = report.module
    st = report.settings
    kb, kf = s["gamma_star_bound"], s["gamma_star_flip"]
    sb, sf = s["s_star"]["bound"], s["s_star"]["flip"]
    estimates = [
        {"estimate": "γ*_bound (Prop. 4.2, sufficient)", "worst": kb["worst"], "median": kb["median"], "p90": kb["p90"],
         "uniform constants": kb["uniform"], "share ∞": s["share_gamma_star_bound_inf"]},
        {"estimate": "γ*_flip (linear crossing)", "worst": kf["worst"], "median": kf["median"], "p90": kf["p90"],
         "uniform constants": None, "share ∞": s["share_gamma_star_flip_inf"]},
        {"estimate": f"s*_bound = γ*_bound·s (s = {fmt(m.scale)})", "worst": sb["worst"], "median": sb["median"],
         "p90": sb["p90"], "uniform constants": sb["uniform"], "share ∞": None},
        {"estimate": "s*_flip = γ*_flip·s", "worst": sf["worst"], "median": sf["median"], "p90": sf["p90"],
         "uniform constants": None, "share ∞": None},
    ]
    thresholds = [{"threshold (ASR < 50%)": "predicted (from γ*_flip, exact)", "γ": report.predicted_threshold_gamma,
                   "s = γ·s_module": report.predicted_threshold_gamma * m.scale},
                  {"threshold (ASR < 50%)": "measured (smallest grid γ)", "γ": report.measured_threshold_gamma,
                   "s = γ·s_module": report.measured_threshold_gamma * m.scale},
                  {"threshold (ASR < 50%)": "measured, model still working", "γ": report.measured_threshold_gamma_clean,
                   "s = γ·s_module": report.measured_threshold_gamma_clean * m.scale}]
    sweep_rows = [{"γ": sweep_gamma(r), "CA": _pct(r["ca"]), "CA 95% CI": _ci(r.get("ca_ci")), "ASR": _pct(r["asr"]),
                   "ASR 95% CI": _ci(r.get("asr_ci")), "ASR predicted": _pct(r["predicted_asr"]),
                   "ASR floor": _pct(r["asr_floor"]), "collapsed": "yes" if r.get("collapsed") else "",
                   "median M_γ(x̃)": r.get("median_margin_trig"),
                   "median |M_γ(x̃) − linear|": r.get("median_abs_nonlinearity")}
                  for r in sorted(report.sweep, key=sweep_gamma)]
    rho_rows = [{"ρ": name, **{k: v for k, v in s[name].items()}} for name in ("rho_bd", "rho_cl", "rho_tr", "rho_eff")]
    parts = [
        "# spectra threshold\n",
        f"Base: `{report.inputs['base']['path']}`  \n"
        f"Adapter: `{report.inputs['adapter']['path']}` ({report.inputs['adapter']['modules']} adapted modules)  \n"
        f"Data: `{report.inputs['data'].get('source')}` — {report.inputs['evaluated_rows']:,} rows evaluated, "
        f"{report.inputs['non_target_rows']:,} non-target  \n"
        f"Trigger: `{st['trigger']}`, target label {st['target_label']}, seed {st['seed']}\n",
        "## Reading\n",
        _reading(report, s),
        "## Thresholds: predicted and measured\n",
        markdown_table(thresholds),
        "\n## Per-sample estimates (non-target samples)\n",
        markdown_table(estimates),
        f"\nρ's normalised by module `{m.name}` ({m.why}): σ_pre = {fmt(m.sigma_pre)}, σ_Δ = {fmt(m.sigma_delta)}, "
        f"σ_pre/σ_Δ = {fmt(m.sigma_pre / m.sigma_delta) if m.sigma_delta > 0 else '∞'}, PEFT scale s = {fmt(m.scale)}, "
        f"shape {fmt(tuple(m.shape))}, {m.update_kind}.\n",
        markdown_table(rho_rows),
        "\n## Scale sweep (Figure 3)\n",
        "![Figure 3: CA and ASR against the adapter multiplier γ](fig_sweep.png)\n",
        markdown_table(sweep_rows),
        "\nPer-sample values are in `threshold_samples.csv`; every number is in `threshold.json`.\n",
        "## Definitions\n",
        "".join(f"- **{name}**: {text}\n" for name, text in report.definitions.items()),
        "- **x, x̃**: a non-target evaluation sample and its triggered twin (the trigger inserted with the "
        "recorded seed); only non-target samples enter the estimates.\n",
        "- **Caveat**: Proposition 4.2 is about a linear classifier with ‖x‖ = 1. For a transformer the margins "
        "come from the whole network and σ_pre, σ_Δ from one module, so the ρ's are normalised proxies; the γ*'s "
        "do not depend on that normalisation (σ's cancel), but they assume margins linear in γ, which a "
        "transformer is not — hence the measured sweep beside them.\n",
        "\n## Checks\n",
        "```json\n" + strict_json(report.checks) + "\n```\n",
    ]
    if report.notes:
        parts += ["## Notes\n", "".join(f"- {n}\n" for n in report.notes)]
    parts += provenance_sections(st, report.inputs, report.versions, report.timings)
    return "\n".join(parts)


def _reading(report: Any, s: dict[str, Any]) -> str:
    """Plain sentences on what the numbers say — including when they say little."""
    lines: list[str] = []
    n = s["n_samples"]
    sweep = sorted(report.sweep, key=sweep_gamma)
    if n == 0:
        return "- No non-target samples: nothing to estimate.\n"
    base_row = next((r for r in sweep if sweep_gamma(r) == 0.0), None)
    one_row = next((r for r in sweep if sweep_gamma(r) == 1.0), None)
    lines.append(
        f"- The base model (γ = 0) flips {_pct(s['share_flipped_by_base'])} of the {n:,} triggered non-target "
        f"samples (margin M_0(x̃) < 0); the adapter as trained (γ = 1) leaves a measured ASR of "
        f"{_pct(one_row['asr']) if one_row else 'n/a'} (floor {_pct(one_row['asr_floor']) if one_row else 'n/a'}).")
    if s["share_flipped_by_base"] < 0.5:
        lines.append(
            "- The backdoor is weak on this data (the base flips fewer than half of the triggered samples): most "
            "per-sample γ* are 0 and the aggregates describe a minority of samples.")
    share_vacuous = s["share_rho_eff_nonpositive"]
    flipped_vacuous = s["share_rho_eff_nonpositive_flipped"]
    among = (f" and {_pct(flipped_vacuous)} of the {s['n_flipped_by_base']:,} the base flips"
             if s["n_flipped_by_base"] else "")
    if share_vacuous is None or not math.isfinite(share_vacuous):  # NaN ρ's compare false everywhere: say so
        lines.append("- ρ_eff is undefined for some samples (a ρ normalised by a zero σ): Proposition 4.2's condition "
                     "cannot be checked; read γ*_flip and the measured sweep instead.")
    elif share_vacuous > 0.5 or (flipped_vacuous is not None and flipped_vacuous > 0.5):
        lines.append(
            f"- ρ_eff = ρ_cl − ρ_tr ≤ 0 for {_pct(share_vacuous)} of the samples{among}: there the adapter's push on "
            "the clean input does not dominate what the trigger changes, so Proposition 4.2's sufficient condition "
            f"is vacuous and γ*_bound is ∞ (for {_pct(s['share_gamma_star_bound_inf'])} of all samples; the others are "
            "0 because the base does not flip them). The theorem gives no finite guarantee for this adapter on "
            "those samples; read γ*_flip and the measured sweep instead.")
    elif share_vacuous > 0:
        lines.append(f"- ρ_eff ≤ 0 for {_pct(share_vacuous)} of the samples{among} (where the base flips them, "
                     "γ*_bound is ∞: the theorem's condition is vacuous there).")
    else:
        lines.append("- ρ_eff > 0 for every sample: Proposition 4.2 applies sample by sample.")
    above = s.get("share_rho_bd_above_1")
    if above is not None and math.isfinite(above) and above > 0:
        lines.append(
            f"- ρ_bd > 1 for {_pct(above)} of the samples the base flips (median ρ_bd {s['rho_bd']['median']:.3g}): "
            "Assumption A1 takes ρ_bd ≤ 1 — a unit-norm input passing through W_pre alone — which a transformer's "
            "head, fed by every layer before it, does not satisfy; there γ*_bound is a formula, not the paper's "
            "bound, and the measured sweep is the evidence.")
    kb_worst = s["gamma_star_bound"]["worst"]
    if math.isfinite(kb_worst):
        lines.append(f"- Worst-case sufficient multiplier γ*_bound = {fmt(kb_worst)} (s* = {fmt(kb_worst * report.module.scale)}); "
                     f"median {fmt(s['gamma_star_bound']['median'])}.")
    pred, meas = report.predicted_threshold_gamma, report.measured_threshold_gamma
    lines.append(f"- Predicted threshold (ASR < 50%): γ = {fmt_multiplier(pred)}; measured on the grid: γ = {fmt_multiplier(meas)}. "
                 + _agreement(pred, meas, [sweep_gamma(r) for r in sweep]))
    clean = report.measured_threshold_gamma_clean
    if clean != meas:
        lines.append(f"- At the measured γ = {fmt_multiplier(meas)} the model no longer works (collapsed to one class, or clean "
                     f"accuracy at or below the majority share), so its low ASR is not a removed backdoor. Counting only "
                     f"grid points where the model still works: γ = {fmt_multiplier(clean)}"
                     + (" (no scale on the grid removes the trigger while the classifier still works)." if math.isinf(clean) else "."))
    worst_gap = max(sweep, key=lambda r: abs(r["asr"] - r["predicted_asr"]))
    gap = abs(worst_gap["asr"] - worst_gap["predicted_asr"])
    if gap <= 1.0 / max(n, 1) + 1e-12:
        lines.append("- Predicted and measured ASR agree at every grid γ (to one sample)." + _linearity(sweep))
    else:
        lines.append(f"- Largest gap between predicted and measured ASR on the grid: {_pct(gap)} at γ = "
                     f"{fmt(sweep_gamma(worst_gap))} (predicted {_pct(worst_gap['predicted_asr'])}, measured "
                     f"{_pct(worst_gap['asr'])}). The prediction extrapolates the γ = 0 → 1 change of each margin "
                     "linearly; a transformer's margins are not linear in γ, and the gap shows by how much."
                     + _linearity(sweep))
    collapsed = [sweep_gamma(r) for r in sweep if r.get("collapsed")]
    if collapsed:
        lines.append(f"- The model predicts (nearly) one class at γ ∈ {{{', '.join(fmt(g) for g in collapsed)}}}: "
                     "ASR there says nothing about the trigger (compare it with the floor).")
    near_floor = [sweep_gamma(r) for r in sweep if r["asr"] > 0.5 and r["asr_floor"] >= r["asr"] - 0.05]
    if near_floor:
        lines.append(f"- At γ ∈ {{{', '.join(fmt(g) for g in near_floor)}}} ASR is within 5 points of its floor: "
                     "the model assigns the target without the trigger too.")
    chk = report.checks.get("m0_equals_base", {})
    if chk.get("ok") is False:
        lines.append(f"- **Check failed**: M_0 differs from the base model's margins by {fmt(chk.get('max_abs_diff'))}.")
    if base_row and base_row.get("asr") is not None and abs(base_row["asr"] - base_row["predicted_asr"]) > 1e-9 \
            and report.inputs["label_names"] and len(report.inputs["label_names"]) > 2:
        lines.append("- With more than two classes a negative margin z_y − z_ybd does not imply the target is the argmax, "
                     "so predicted and measured ASR can differ even at γ = 0.")
    return "\n".join(lines) + "\n"


def _linearity(sweep: list[dict[str, Any]]) -> str:
    """One sentence on how far the triggered margins depart from M_0 + γ·D at the largest γ."""
    last = max(sweep, key=sweep_gamma)
    dev, med = last.get("median_abs_nonlinearity"), last.get("median_margin_trig")
    if dev is None or med is None or (isinstance(dev, float) and math.isnan(dev)):
        return ""
    g = fmt(sweep_gamma(last))
    if dev <= 0.1 * max(abs(med), 1e-12):
        return f" The triggered margins stay close to linear in γ (median departure {fmt(dev)} at γ = {g})."
    return (f" The triggered margins are not linear in γ, though: at γ = {g} they depart from M_0(x̃) + γ·D(x̃) by a "
            f"median {fmt(dev)} (median margin {fmt(med)}), so agreement of the ASR curves is partly a matter of "
            "signs, not of the linear model being right.")


def _agreement(pred: float, meas: float, grid: list[float]) -> str:
    if math.isinf(pred) and math.isinf(meas):
        return "Both say the backdoor survives every multiplier tried."
    if math.isinf(meas):
        return (f"The sweep never brings ASR below 50% (up to γ = {fmt(max(grid))}) although the linear prediction "
                "does: they disagree." if pred <= max(grid) else
                "The prediction lies beyond the grid; extend --grid to check it.")
    if math.isinf(pred):
        return "The linear prediction never crosses 50% but the measured ASR does: they disagree."
    below = [k for k in grid if k < meas]
    prev = max(below) if below else 0.0
    if prev < pred <= meas or pred == meas:
        return f"They agree to the grid's resolution (the prediction lies in ({fmt(prev)}, {fmt(meas)}])."
    ratio = pred / meas if meas > 0 else float("inf")
    return f"They disagree: the prediction is {fmt(ratio)}× the measured grid threshold."
