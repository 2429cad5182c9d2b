"""``report.md`` of ``spectra demo``: the story in one page, every reading generated from the numbers.

:func:`demo_readings` turns the measured values into sentences with fixed rules (printed
under the readings), and refuses a verdict where the run cannot support one: a poisoned
base whose ASR is below the paper's 95 %, or a fine-tuning run whose validation accuracy
had not settled (the quick budget).
"""

from __future__ import annotations

import math
from typing import Any

from spectra.provenance import strict_json
from spectra.settings import ASR_WARNING
from spectra.report.tables import fmt_interval, fmt_multiplier, fmt_pct
from spectra.report.tables import markdown_table
from spectra.report.tables import SWEEP_MARKS

RULES = [
    "a backdoor is present when the poisoned base's ASR on the proxy's held-out rows is ≥ 95% (the paper's bar) "
    "and the base has not collapsed to one class",
    "a run may be read only when its validation CA has stopped improving: the last 3 epochs raise its best by at "
    "most 0.5 point",
    "'keeps the backdoor': ASR ≥ 80%; 'partly survives': between 20% and 80%; 'removes it': ASR ≤ 20% (and, for "
    "Pt and RoRA, at least 50 points below LoRA's), without collapse",
    "'at little cost in CA': CA at most 2 points below LoRA's",
]


def _pct(x: Any) -> str:
    return fmt_pct(x, suffix="", missing="–")


def _ci(ci: Any) -> str:
    return (" " + fmt_interval(ci)) if fmt_interval(ci) else ""


def demo_readings(summary: dict[str, Any]) -> list[str]:
    """Plain sentences from the demo's numbers, by the :data:`RULES` (no claim the numbers don't make)."""
    by = {r["model"]: r for r in summary["eval"]}
    base, lora = by.get("poisoned base (no fine-tuning)"), by.get("LoRA")
    pt, rora = by.get("LoRA + Pt"), by.get("RoRA (CI+Tr+Pt)")
    p = summary["poisoning"]
    out: list[str] = []
    if p.get("asr") is None or p["asr"] < ASR_WARNING or p.get("collapsed"):
        out.append(f"The poisoned base reaches ASR {_pct(p.get('asr'))}% on held-out proxy rows, below the paper's "
                   "95%: this run cannot decide whether fine-tuning removes a backdoor of the paper's strength.")
        return out
    out.append(f"The poisoned base carries the backdoor: ASR {_pct(p['asr'])}% on held-out proxy rows; on CR test "
               f"CA {_pct(base['ca'])}%, ASR {_pct(base['asr'])}% (floor {_pct(base['asr_floor'])}%).")
    unsettled = [n for n, t in (summary.get("training") or {}).items() if not t.get("converged")]
    if unsettled:
        out.append(f"{' and '.join(unsettled)} had not converged by the end of training (validation CA still "
                   "moving): this budget cannot decide what the full recipe shows; run `spectra demo` (or see "
                   "docs/reproduction.md) for a verdict.")
        return out
    if lora["asr"] >= 0.8:
        out.append(f"LoRA keeps the backdoor: ASR {_pct(lora['asr'])}% (floor {_pct(lora['asr_floor'])}%) at CA "
                   f"{_pct(lora['ca'])}%.")
    elif lora["asr"] > 0.2:
        out.append(f"LoRA leaves ASR at {_pct(lora['asr'])}% (floor {_pct(lora['asr_floor'])}%) at CA {_pct(lora['ca'])}%: "
                   "the backdoor partly survives — below the 80% that counts as keeping it, above the 20% that "
                   "counts as removing it.")
    else:
        out.append(f"LoRA alone brings ASR to {_pct(lora['asr'])}% (floor {_pct(lora['asr_floor'])}%): on this run "
                   "fine-tuning removes the backdoor by itself (ASR ≤ 20%).")
    for name, row in (("Pt alone (LoRA + Pt)", pt), ("RoRA", rora)):
        if row is None:
            continue
        if row.get("collapsed"):
            out.append(f"{name} has collapsed to one class (CA {_pct(row['ca'])}%, majority share "
                       f"{_pct(row.get('majority_share'))}%): its ASR {_pct(row['asr'])}% says nothing about the trigger.")
        elif row["asr"] <= 0.2 and row["asr"] <= lora["asr"] - 0.5:
            cost = lora["ca"] - row["ca"]
            out.append(f"{name} removes it: ASR {_pct(row['asr'])}% (floor {_pct(row['asr_floor'])}%) at CA "
                       f"{_pct(row['ca'])}%, " + ("at little cost in CA." if cost <= 0.02 else
                                                  f"{100 * cost:.1f} points of CA below LoRA."))
        else:
            out.append(f"{name} leaves ASR at {_pct(row['asr'])}% (CA {_pct(row['ca'])}%): it does not remove the "
                       "backdoor on this run.")
    th = summary.get("threshold") or {}
    if "LoRA" in th and "RoRA" in th:
        lk, rk = th["LoRA"].get("measured_crossing_gamma"), th["RoRA"].get("measured_crossing_gamma")
        pt_range = (th["LoRA"].get("pt") or {})
        out.append(f"Sweeping the LoRA scale, ASR crosses 50% at γ = {fmt_multiplier(lk)} for LoRA and γ = {fmt_multiplier(rk)} for RoRA "
                   "before Pt" + (f"; Pt multiplies LoRA's top-3-block scales by {pt_range['multiplier_min']:.1f}–"
                                  f"{pt_range['multiplier_max']:.1f}" if pt_range.get("multiplier_min") else "") + ".")
    return out


def readme_demo_summary(summary: dict[str, Any], report_link: str) -> str:
    """The README's demo paragraph from a demo run's ``demo.json``: what ran, how long it
    took, its CA/ASR rows and the same generated readings as its report."""
    settings, timings = summary["settings"], summary.get("timings_s") or {}
    rec = settings.get("recipe", {})
    budget = "`spectra demo --quick`" if settings.get("quick") else "`spectra demo`"
    total = timings.get("total")
    base = next((v for k, v in timings.items() if k.endswith("__base")), None)
    spent = (f"; {total / 60:.1f} min on 2 cores" + (f", {base / 60:.1f} of them poisoning the base, which a second "
                                                     "run takes from the cache" if base and base > 60 else "")
             if total else "")
    head = (f"{budget} ({rec.get('epochs', 0):g} epochs, LoRA lr {settings['lr']['lora']:g}, RoRA lr "
            f"{settings['lr']['rora']:g}" + spent +
            f"; report: [{report_link}]({report_link})):")
    rows = "; ".join(f"{r['model']} CA {_pct(r['ca'])}% / ASR {_pct(r['asr'])}%" + (" (collapsed)" if r.get("collapsed") else "")
                     for r in summary["eval"])
    return "\n".join([head, "", f"- CR test: {rows}."] + [f"- {s}" for s in demo_readings(summary)])


def render_demo_markdown(summary: dict[str, Any]) -> str:
    """Render the demo's ``demo.json`` summary as Markdown."""
    settings = summary["settings"]
    quick = settings.get("quick")
    rec = settings.get("recipe", {})
    lines = [
        "# spectra demo: does LoRA fine-tuning override a backdoor in MiniLM?\n",
        f"The reproduction study's recipe on one attack and one seed ({'the quick subset' if quick else 'full budget'}): "
        f"all-MiniLM-L6-v2 poisoned clean-label on `{rec.get('proxy')}` with `{summary['trigger']}` → label "
        f"{summary['target_label']}, then fine-tuned on CR for {rec.get('epochs', 0):g} epochs with LoRA (lr "
        f"{settings['lr']['lora']:g}) and RoRA (lr {settings['lr']['rora']:g}), the rates the study picked on clean "
        "validation data. Spreads over seeds and poisoned bases, and the paper's numbers beside ours: "
        "docs/reproduction.md.\n",
        "".join(f"- {k}: {v}\n" for k, v in summary["data"].items()),
    ]
    if rec.get("notes"):
        lines.append("Budget: " + "; ".join(rec["notes"]) + "\n")
    lines += ["## Reading\n", "".join(f"- {s}\n" for s in demo_readings(summary)),
              "Rules behind these sentences: " + "; ".join(RULES) + ".\n",
              "## CA / ASR / Δ on CR test (95% Wilson intervals; Δ = CA − ASR)\n"]
    rows = [{"model": r["model"], "CA %": _pct(r["ca"]) + _ci(r.get("ca_ci")), "ASR %": _pct(r["asr"]) + _ci(r.get("asr_ci")),
             "Δ": _pct(r["delta"]), "ASR floor %": _pct(r.get("asr_floor")), "collapsed": "yes" if r.get("collapsed") else ""}
            for r in summary["eval"]]
    lines += [markdown_table(rows),
              "\nASR: the share of non-target test rows that the trigger flips to the target label; read it against "
              "the floor (the share already predicted as the target without the trigger). `collapsed`: the model "
              "predicts one class for nearly everything.\n",
              "## Training curves\n",
              "".join(f"![{name}](runs/{_run_folder(summary, name)}/fig_train.png)\n\n" for name in ("LoRA", "RoRA")),
              "## Spectral audit (Figures 1 and 2)\n", markdown_table(summary["audit"]),
              "\n![Figure 1](audit/fig_ratio.png)\n\n![Figure 2](audit/fig_alignment.png)\n",
              "Full table and definitions: [audit/report.md](audit/report.md).\n",
              "## Figure 3: sweeping the LoRA scale (head as trained)\n", "![Figure 3](fig_sweep.png)\n"]
    th_rows = []
    for name, t in summary["threshold"].items():
        th_rows.append({"adapter": name + (" (before Pt)" if name == "RoRA" else ""),
                        "measured crossing γ": fmt_multiplier(t.get("measured_crossing_gamma")),
                        "Prop. 4.2 linear": fmt_multiplier(t.get("predicted_threshold_gamma")),
                        "search (64 rows)": fmt_multiplier(t.get("search_threshold_gamma")),
                        "search / sweep forward passes": "{search} / {sweep}".format(**(t.get("forward_passes") or
                                                                                        {"search": "–", "sweep": "–"})),
                        "Pt multipliers s'/s": _range(t.get("pt"))})
    lines += [markdown_table(th_rows),
              "\nγ multiplies every LoRA module's scale (γ = 1: as trained); the classification head is used as "
              "trained. Measured crossing: where ASR falls below 50%, interpolated between grid points. Shaded: "
              "Pt's multipliers s'/s. " + SWEEP_MARKS + " Definitions and per-sample values: `runs/*sweep*` results "
              "in `results/`.\n",
              "## Settings and timings\n",
              "```json\n" + strict_json({"settings": settings, "timings_s": summary["timings_s"]}) + "\n```\n"]
    return "\n".join(lines)


def _range(pt: dict[str, Any] | None) -> str:
    if not pt or pt.get("multiplier_min") is None:
        return "–"
    lo, hi = pt["multiplier_min"], pt["multiplier_max"]
    return f"{lo:.3g}–{hi:.3g}" if not math.isclose(lo, hi) else f"{lo:.3g}"


def _run_folder(summary: dict[str, Any], name: str) -> str:
    lr = summary["settings"]["lr"][name.lower()]
    return f"minilm__badnet__b0__finetune__{name.lower()}__s0__lr{lr:g}"
