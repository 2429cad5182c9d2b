"""The times users are told come from one measured source (spectra.measured): the README,
the demo's --help and the published demo reports agree with it."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from spectra import measured
from spectra_cli.app import app

ROOT = Path(__file__).resolve().parent.parent


def test_readme_help_and_reports_state_the_measured_times() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"{measured.TEST_SUITE_MIN:g} min on 2 cores once installed" in readme
    row = next(line for line in readme.splitlines() if line.startswith("| `spectra demo` cold"))
    assert f"**{measured.DEMO_FULL_MIN:g} min**" in row and f"**{measured.DEMO_QUICK_MIN:g} min**" in row
    assert f"{measured.demo_cached_min():g} min once the poisoned base is cached" in row
    full = (ROOT / "docs" / "demo-report.md").read_text(encoding="utf-8").splitlines()[0]
    quick = (ROOT / "docs" / "demo-quick-report.md").read_text(encoding="utf-8").splitlines()[0]
    assert f"({measured.DEMO_FULL_MIN:g} min in-process" in full and f"({measured.DEMO_QUICK_MIN:g} min" in quick
    poisoning = re.search(r"([\d.]+) of them poisoning the base", readme.split("<!-- demo-full:begin -->")[1])
    assert poisoning and float(poisoning.group(1)) == measured.DEMO_FULL_POISON_MIN
    canary = (ROOT / "docs" / "canary.md").read_text(encoding="utf-8")
    assert f"**{measured.CANARY_QUICK_MIN:g} min**" in canary and f"**{measured.CANARY_QUICK_RSS_GB:g} GB**" in canary
    assert f"{measured.CANARY_QUICK_MIN:g} min" in CliRunner().invoke(app, ["canary", "--help"],
                                                                      env={"COLUMNS": "400"}).output
    text = CliRunner().invoke(app, ["demo", "--help"], env={"COLUMNS": "400"}).output
    assert f"{measured.DEMO_FULL_MIN:g} min" in text and f"{measured.DEMO_QUICK_MIN:g}" in text
    assert "~45" not in text and "~5 min" not in text
