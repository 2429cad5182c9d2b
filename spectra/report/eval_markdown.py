"""``report.md`` of ``spectra eval``: the table, each definition, warnings, settings, versions."""

from __future__ import annotations

from typing import Any

from spectra.report.tables import fmt_interval, fmt_pct

_pct, _ci = fmt_pct, fmt_interval


def eval_markdown(r: Any) -> str:
    """A Markdown report: the table, each definition, warnings, settings and provenance."""
    meta = r.meta or {}
    settings = meta.get("settings", {})
    inputs = meta.get("inputs", {}) or {}
    lines = ["# spectra eval", ""]
    base = (inputs.get("base") or {}).get("path")
    adapter = (inputs.get("adapter") or {}).get("path") if inputs.get("adapter") else None
    if base:
        lines.append(f"Model: `{base}`" + (f" + adapter `{adapter}` at scale γ = {meta.get('scale', 1.0):g}" if adapter else " (no adapter)"))
    data = inputs.get("data") or {}
    if data:
        lines.append(f"Data: {data.get('source')} (sha256 `{str(data.get('sha256', ''))[:16]}…`)")
        evaluated = inputs.get("evaluated") or {}
        if evaluated.get("summary"):
            lines.append(f"Evaluated: {evaluated['summary']}")
    lines.append(f"Trigger: `{r.trigger}` · target label {r.label_text(r.target_label)} · seed {r.seed}")
    lines += ["", "| metric | value | 95% interval | n |", "|---|---|---|---|",
              f"| CA | {_pct(r.ca)} | {_ci(r.ca_ci)} | {r.n_clean:,} |",
              f"| ASR | {_pct(r.asr)} | {_ci(r.asr_ci)} | {r.n_triggered:,} |",
              f"| Δ = CA − ASR | {100 * r.delta:+.1f} pts | [{100 * r.delta_ci[0]:+.1f}, {100 * r.delta_ci[1]:+.1f}] | |",
              f"| ASR floor | {_pct(r.asr_floor)} | {_ci(r.asr_floor_ci)} | {r.n_triggered:,} |",
              f"| ASR − floor | {100 * r.asr_above_floor:+.1f} pts | | |",
              f"| majority-class share | {_pct(r.majority_share)} | | {r.n_clean:,} |",
              f"| collapsed | {'yes' if r.collapsed else 'no'} | | |",
              ""]
    lines += ["Predicted class shares (clean / triggered):", ""]
    for c, name in enumerate(r.label_names):
        lines.append(f"- {r.label_text(c)}: {_pct(r.predicted_share[c])} / {_pct(r.triggered_predicted_share[c])}")
    lines += ["", "## Warnings", ""]
    lines += [f"- {w}" for w in r.warnings] or ["- none"]
    lines += ["", "## Definitions", "",
              "- **CA** (clean accuracy): share of all clean test texts predicted as their label.",
              "- **ASR** (attack success rate): share of non-target test texts (label ≠ target) whose triggered "
              "twin is predicted as the target label. Target-label texts are left out.",
              "- **Δ = CA − ASR**: high when the model is useful and the backdoor is gone.",
              "- **ASR floor**: share of the same non-target texts already predicted as the target *without* the "
              "trigger; ASR − floor is what the trigger itself adds.",
              f"- **collapsed**: CA within {100 * r.COLLAPSE_CA_MARGIN:.0f} point of the majority-class share, or ≥ "
              f"{100 * r.COLLAPSE_TOP_SHARE:.0f}% of clean predictions in one class; such a model's ASR is ~0 or "
              "~100% for reasons unrelated to the trigger.",
              "- Intervals: Wilson score intervals (95%) for CA, ASR and the floor; Newcombe's hybrid score "
              "interval (method 10, 1998) for Δ, which treats CA and ASR as independent although they share texts.",
              "- γ (scale): every LoRA scaling multiplied by γ; a fully trained saved module (`modules_to_save`, "
              "e.g. the classification head) is used as trained unless the settings say head = scaled, which sets it "
              "to W_base + γ·(W_saved − W_base). γ = 1 is the adapter as trained.",
              ""]
    if settings:
        lines += ["## Settings", "", "| setting | value |", "|---|---|"]
        lines += [f"| {k} | `{v}` |" for k, v in settings.items()]
        lines.append("")
    versions = meta.get("versions") or {}
    if versions:
        lines += ["## Versions", "", ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    return "\n".join(lines)
