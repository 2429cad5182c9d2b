"""``report.md`` for an audit: summary, figures, the full table, definitions, provenance."""

from __future__ import annotations

import math
from typing import Any

from spectra.report.audit_figures import chance_by_type
from spectra.report.tables import markdown_table, provenance_sections

_TABLE_COLUMNS = ["adapter", "module", "layer", "module_type", "shape", "rank", "scale", "sigma_pre",
                  "sigma_delta", "ratio", "cos_max_left", "cos_max_right", "overlap", "cos_random_left",
                  "cos_random_right", "spectrum_method"]


def render_audit_markdown(report: Any, figures: bool = True) -> str:
    """Render an :class:`spectra.audit.AuditReport` as a self-contained Markdown report
    (``figures=False``: the figures were not written, so the report does not link them)."""
    s = report.settings
    parts = [
        "# spectra audit\n",
        f"Base: `{report.inputs['base']['path']}`  \n"
        f"Adapters: {', '.join(f'`{a}`' for a in report.adapters)}  \n"
        f"top-k = {s['top_k']}, dtype = {s['dtype']}, device = {s['device']}, "
        f"{'exact SVD' if s['exact'] else 'certified top-k (Gram or block Krylov, whichever the cost model says is cheaper)'}\n",
        "## Summary\n",
        markdown_table(report.summary_rows()),
        _reading(report),
        _forgetting(report),
        _policy(report),
        *(["## Figures\n", "![Figure 1: spectral ratio](fig_ratio.png)\n",
            "![Figure 2: alignment with W_pre's top-k](fig_alignment.png)\n"] if figures else []),
        "## Per-module table\n",
        markdown_table(report.rows, [c for c in _TABLE_COLUMNS if c in report.columns]),
        "## Definitions\n",
        "".join(f"- **{name}**: {text}\n" for name, text in report.definitions.items()),
        *provenance_sections(s, report.inputs, report.versions, report.timings),
    ]
    return "\n".join(parts)


def _policy(report: Any) -> str:
    """The policy in force, its findings, and what the gate decided (also in audit.sarif)."""
    policy = report.policy
    if policy is None or not policy.active:
        return "## Policy\n\nNo policy rule was active: no gate.\n"
    rules = [{"rule": rid, "max": s.max, "per module type": ", ".join(f"{k} {v:g}" for k, v in s.module_types.items()),
              "severity": s.severity} for rid, s in policy.rules.items()]
    failing = policy.failing(report.findings)
    source = ", ".join(policy.sources) or "spectra's defaults (no --policy, spectra.toml, [tool.spectra] or --max-*)"
    parts = ["## Policy\n", f"From {source}; the gate fails on findings of severity "
             f"**{policy.fail_on}** or above.\n", markdown_table(rules),
             f"\n**{len(report.findings)} finding(s), {len(failing)} at or above {policy.fail_on}: the gate "
             f"{'fails (exit 1)' if failing else 'passes'}.** Every finding is also in `audit.sarif`.\n"]
    # what the terminal said after the audit (rules that judged nothing, "nothing is gated"): a pass
    # read from this file alone must carry it too
    parts += [f"> {kind}: {text}\n" for kind, text in getattr(report, "notices", [])]
    if report.findings:
        parts.append(markdown_table([{"severity": f.severity, "rule": f.rule, "adapter": f.adapter, "module": f.module,
                                      "value": f.value, "threshold": f.threshold} for f in report.findings[:200]]))
    return "\n".join(parts)


def _forgetting(report: Any) -> str:
    """One line per adapter: the forgetting verdict, its evidence and scope (audit.json's ``forgetting``)."""
    lines = ["## Will a backdoor in the base survive this adapter?\n",
             "The forgetting verdict (how it was fitted and validated: docs/forgetting.md in spectra's repository). "
             "`weights-only`: from this audit's numbers; `canary`: from a backdoor planted in this base "
             "(`spectra canary`, `--calibration`); `none`: no validated estimate.\n"]
    for label, block in report.forgetting().items():
        p = block.get("p_survives")
        text = f"P(survives) = {p:.2f}: {block['estimate']}" if p is not None else block["estimate"]
        why = f" — {block['reason']}" if block.get("reason") else ""
        lines.append(f"- `{label}` ({block['evidence']}): {text}{why}.")
    return "\n".join(lines) + "\n"


def _reading(report: Any) -> str:
    """Two sentences per adapter that say what the numbers mean for backdoor override."""
    lines = []
    for row in report.summary_rows():
        mine = [r for r in report.rows if r["adapter"] == row["adapter"]]
        levels = sorted(chance_by_type(mine, "left").values()) or [math.nan]
        chance = (f"a chance level of about {levels[0]:.2f}" if levels[-1] - levels[0] < 0.01 else
                  f"chance levels of {levels[0]:.2f}–{levels[-1]:.2f} (by module size; Figure 2 draws each)")
        strength = ("weaker than" if row["ratio_median"] > 1 else "at least as strong as")
        lines.append(
            f"- `{row['adapter']}`: the median update is {strength} its base layer "
            f"(σ_pre/σ_Δ median {row['ratio_median']:.3g}); the median max |cos| with W_pre's top-"
            f"{report.settings['top_k']} is {row['cos_left_median']:.2f} (left) / {row['cos_right_median']:.2f} "
            f"(right) against {chance}.")
    return "\n".join(lines) + "\n"
