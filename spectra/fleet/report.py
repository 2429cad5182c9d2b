"""A fleet's verdicts: findings (SARIF, one result per adapter and rule) and ``report.md`` with figures."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def fleet_findings(adapters: list[dict[str, Any]], out: Path, policy: Any) -> list[Any]:
    """The policy's findings over the fleet: module rules on the module rows, read one Parquet part
    at a time (a thousand adapters' 210,000 rows held at once took the peak RSS from 0.6 to 1.2 GB),
    and the forgetting rule on the adapters' verdicts (an error row is not a finding: it is
    reported apart)."""
    from spectra.audit.policy import Finding
    from spectra.errors import SpectraError
    from spectra.fleet.store import module_parts

    blocks = _forgetting_blocks(adapters)
    latest = {a["id"] for a in adapters if a["status"] == "ok"}
    found = []
    unmeasurable: dict[str, str] = {}
    for part in module_parts(out):
        by_adapter: dict[str, list[dict[str, Any]]] = {}
        for m in part:
            if m.get("adapter") in latest:
                # Parquet keeps NaN and ∞ as null: ∞ is a zero update's ratio, a null measure is NaN
                by_adapter.setdefault(m["adapter"], []).append(
                    {**m, "ratio": math.inf if m.get("ratio") is None else m["ratio"],
                     **{k: math.nan for k in ("cos_max_left", "cos_max_right", "overlap") if m.get(k) is None}})
        for adapter, rows in by_adapter.items():
            try:
                found += policy.findings(rows)
            except SpectraError as exc:  # a rule that cannot be measured is not a pass
                unmeasurable[adapter] = str(exc)
    unaudited = policy.rules.get("unaudited")
    if unaudited is not None and unaudited.max is not None:
        for a in adapters:
            reason = a.get("error") if a["status"] != "ok" else unmeasurable.get(a["id"])
            if reason:
                found.append(Finding("unaudited", unaudited.severity, a["id"], str(reason)[:300], "adapter", 1.0,
                                     float(unaudited.max)))
    return found + policy.forgetting_findings(blocks)


def _forgetting_blocks(adapters: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each audited adapter's forgetting estimate, as the policy's forgetting rule reads it."""
    return {a["id"]: {"p_survives": a.get("forgetting_p_survives")} for a in adapters if a["status"] == "ok"}


def scan_notices(out: Path, policy: Any) -> list[tuple[str, str]]:
    """``(kind, text)`` lines to print after a scan, as ``spectra audit`` prints them: rules that judged
    nothing in this fleet (a module type none of its adapters has, a forgetting rule with no validated
    estimate), then the notice when no rule could fail the gate."""
    from spectra.fleet.store import module_types, read_rows

    return policy.notices([{"module_type": t} for t in module_types(out)], _forgetting_blocks(read_rows(out)))


@dataclass(frozen=True)
class ScanGate:
    """The fleet's verdict: every finding, those at or above ``fail_on``, and the exit code —
    0 pass, 1 findings at ``fail_on``, 3 nothing in the fleet was audited (no adapter, or every
    one an error row) — decided here once, so ``fleet.sarif`` and the CLI cannot disagree."""

    findings: list[Any]
    failing: list[Any]
    exit_code: int

    def __iter__(self) -> Any:
        """``findings, failing = write_reports(…)``, the 0.2 tuple form, for this release (goes in 0.4)."""
        return iter((self.findings, self.failing))


def scan_exit_code(adapters: list[dict[str, Any]], failing: list[Any]) -> int:
    """:class:`ScanGate`'s exit code from the adapter rows and the failing findings."""
    if not any(a.get("status") == "ok" for a in adapters):
        return 3
    return 1 if failing else 0


def write_reports(out: Path, policy: Any, version: str) -> ScanGate:
    """``OUT/fleet.sarif`` and ``OUT/report.md`` from the tables, and the fleet's verdict."""
    from spectra.audit.policy import RULES
    from spectra.fleet.store import read_rows
    from spectra.io.files import write_text_atomic
    from spectra.provenance import strict_json
    from spectra.report.sarif import render_sarif

    adapters = read_rows(out, "adapters")
    findings = fleet_findings(adapters, out, policy)
    failing = policy.failing(findings)
    code = scan_exit_code(adapters, failing)
    paths = {a["id"]: a["adapter"] for a in adapters}
    sarif = render_sarif(findings, RULES, policy, paths, version, code, command_line="spectra scan")
    write_text_atomic(out / "fleet.sarif", strict_json(sarif) + "\n")
    figures = _figures(adapters, out)
    write_text_atomic(out / "report.md", _markdown(adapters, findings, failing, policy, figures, code))
    return ScanGate(findings, failing, code)


def _figures(adapters: list[dict[str, Any]], out: Path) -> list[str]:
    ok = [a for a in adapters if a["status"] == "ok" and a.get("feature_log_ratio_deep") is not None]
    if not ok:
        return []
    try:
        import seaborn as sns
    except ImportError:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    import textwrap

    frame = pd.DataFrame(ok)
    # a base's folder name, or the folder above it when that name is a generic one (…/minilm/model)
    frame["base"] = frame["base"].map(_base_label)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    sns.histplot(data=frame, x="feature_log_ratio_deep", hue="base" if frame["base"].nunique() > 1 else None,
                 bins=40, ax=axes[0], element="step")
    axes[0].set(xlabel="log10 median σ_pre/σ_Δ, deeper half (the forgetting feature)", ylabel="adapters",
                title="Update strength across the fleet")
    if frame["forgetting_p_survives"].notna().any():
        sns.histplot(data=frame.dropna(subset=["forgetting_p_survives"]), x="forgetting_p_survives", bins=20,
                     ax=axes[1], color="tab:red")
    else:  # an empty panel would read as "no adapter at risk"
        reasons = frame["forgetting_reason"].dropna()
        why = str(reasons.iloc[0]) if len(reasons) else "no estimate"
        axes[1].text(0.5, 0.5, "no validated estimate for any adapter:\n" + textwrap.fill(why[:220], 48),
                     ha="center", va="center", fontsize=8, transform=axes[1].transAxes)
    axes[1].set(xlabel="P(a planted backdoor survives), where a validated estimate exists", ylabel="adapters",
                title="Forgetting verdicts", xlim=(0, 1))
    fig.tight_layout()
    fig.savefig(out / "fig_fleet.png", dpi=110)
    plt.close(fig)
    return ["fig_fleet.png"]


def _base_label(base: Any) -> str:
    """A short legend label for a base path: its folder name, with the parent's when the name says
    nothing by itself (a packaged model's ``…/all-MiniLM-L6-v2/model``)."""
    path = Path(str(base))
    if path.name.lower() in {"model", "models", "base", "snapshot", "main"} and path.parent.name:
        return f"{path.parent.name}/{path.name}"
    return path.name or str(base)


def _markdown(adapters: list[dict[str, Any]], findings: list[Any], failing: list[Any], policy: Any,
              figures: list[str], code: int) -> str:
    ok = [a for a in adapters if a["status"] == "ok"]
    errors = [a for a in adapters if a["status"] != "ok"]
    evidence = Counter(a.get("forgetting_evidence") for a in ok)
    lines = ["# spectra scan", "",
             f"{len(adapters):,} adapters: {len(ok):,} audited, {len(errors):,} error rows "
             f"({sum(1 for a in adapters if a.get('duplicate_of')):,} identical to another and audited once). "
             f"Forgetting verdicts: {', '.join(f'{k} {v:,}' for k, v in sorted(evidence.items(), key=str))}.", "",
             f"Policy from {', '.join(policy.sources) or 'defaults'}: {len(findings):,} finding(s), {len(failing):,} at "
             f"or above {policy.fail_on} — the scan "
             + {0: "passes (exit 0)", 1: "fails (exit 1)"}.get(code, f"audited nothing (exit {code})") + ".", ""]
    lines += [f"![fleet]({f})" for f in figures] + ([""] if figures else [])
    bases = Counter(str(a.get("base")) for a in adapters)
    lines += ["## Per base", "", "| base | adapters | audited | errors | P(survives) > 0.5 |", "|---|---|---|---|---|"]
    for b, n in bases.most_common():
        rows = [a for a in adapters if str(a.get("base")) == b]
        high = sum(1 for a in rows if (a.get("forgetting_p_survives") or 0) > 0.5)
        lines.append(f"| {_code(b)} | {n:,} | {sum(a['status'] == 'ok' for a in rows):,} | "
                     f"{sum(a['status'] != 'ok' for a in rows):,} | {high:,} |")
    worst = sorted((a for a in ok if a.get("forgetting_p_survives") is not None),
                   key=lambda a: -a["forgetting_p_survives"])[:20]
    if worst:
        lines += ["", "## The adapters most likely to leave a backdoor in place", "",
                  "| adapter | P(survives) | σ_pre/σ_Δ min | median |", "|---|---|---|---|"]
        lines += [f"| {_code(a['id'])} | {a['forgetting_p_survives']:.2f} | {a['ratio_min']:.3g} | {a['ratio_median']:.3g} |"
                  for a in worst]
    if failing:  # the reasons the gate fails, in the report that says it fails
        lines += ["", f"## Findings at or above {policy.fail_on} (first 20 of {len(failing):,})", "",
                  "| severity | rule | finding |", "|---|---|---|"]
        lines += [f"| {f.severity} | {f.rule} | {_cell(f.message())} |" for f in failing[:20]]
    if errors:
        lines += ["", "## Error rows (first 20)", "", "| adapter | reason |", "|---|---|"]
        lines += [f"| {_code(a['id'])} | {_cell(str(a.get('error')))} |" for a in errors[:20]]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text safe in a Markdown table cell: control characters escaped, no cell break."""
    from spectra.fleet.sources import printable_id

    return printable_id(text).replace("|", "\\|")


def _code(text: str) -> str:
    """``text`` as inline code in a table cell (a backtick in it would end the code span)."""
    return f"`{_cell(text).replace('`', chr(39))}`"
