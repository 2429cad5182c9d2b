"""One output sink for every command: human tables on stderr, ``--json`` (one strict JSON
document on stdout, logs on stderr), ``--quiet`` (nothing but warnings and errors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spectra_cli.app import app

K = ["--top-k", "4", "--no-cache", "--no-figures"]


@pytest.fixture
def pair(tiny_model_dir, tiny_adapter_dir) -> tuple[Path, Path]:
    base = tiny_model_dir("bert")
    return base, tiny_adapter_dir(base, target_modules=["query", "value"])


def invoke(*args: object):  # noqa: ANN201 - click's Result: .stdout and .stderr kept apart
    return CliRunner().invoke(app, [str(a) for a in args])


def test_json_is_one_strict_document_on_stdout_with_the_exit_code(pair, tmp_path) -> None:
    base, adapter = pair
    result = invoke("audit", base, f"mine={adapter}", "-o", tmp_path / "a", "--max-ratio", "1e-9", "--json", *K)
    assert result.exit_code == 1  # every module breaks a ratio of 1e-9: findings
    doc = json.loads(result.stdout, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert doc["command"] == "audit" and doc["exit_code"] == 1 and doc["out"] == str(tmp_path / "a")
    assert [row["adapter"] for row in doc["summary"]] == ["mine"] and doc["summary"][0]["modules"] == 4
    assert doc["failing"] == len([f for f in doc["findings"] if f["rule"] == "ratio"]) >= 4
    assert "spectral audit" not in result.stdout  # the human table is not mixed into the document
    # the forgetting verdict and the after-audit notes are in the document too (a pipeline read no word of them)
    assert doc["forgetting"]["mine"]["estimate"] and isinstance(doc["notices"], list)


def test_quiet_prints_nothing_and_keeps_the_exit_code_and_files(pair, tmp_path) -> None:
    base, adapter = pair
    result = invoke("audit", base, adapter, "-o", tmp_path / "q", "--quiet", *K)
    assert result.exit_code == 0 and result.stdout == "" and "spectral audit" not in (result.stderr or "")
    assert (tmp_path / "q" / "audit.json").is_file()
    both = invoke("audit", base, adapter, "-o", tmp_path / "b", "--quiet", "--json", *K)
    assert both.exit_code == 0, both.output  # was refused as "a bug in spectra": CI steps pass both
    assert json.loads(both.stdout)["exit_code"] == 0 and "spectral audit" not in (both.stderr or "")


@pytest.mark.parametrize("name", ["audit", "fix", "eval", "threshold", "demo", "canary", "scan", "poison"])
def test_every_command_takes_json_and_quiet(name: str) -> None:
    out = CliRunner().invoke(app, [name, "--help"], terminal_width=200).output
    assert "--json" in out and "--quiet" in out, name


def test_the_moved_audit_modules_keep_their_old_names_for_this_release() -> None:
    import spectra.audit.policy
    import spectra.audit.report
    import spectra.audit_report
    import spectra.policy

    assert spectra.policy.resolve_policy is spectra.audit.policy.resolve_policy
    assert spectra.policy.RULES is spectra.audit.policy.RULES and spectra.policy.Policy is spectra.audit.policy.Policy
    assert spectra.audit_report.AuditReport is spectra.audit.report.AuditReport


def test_an_error_under_json_is_a_json_document_too(pair, tmp_path) -> None:
    """Under --json an error left stdout empty, so `spectra audit … --json | jq` read nothing."""
    base, _ = pair
    result = invoke("audit", base, tmp_path / "no-such-adapter", "-o", tmp_path / "o", "--json", *K)
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["exit_code"] == 2 and "no-such-adapter" in doc["error"]
    assert result.stderr.startswith("error: ")
