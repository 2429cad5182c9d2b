"""The GitHub Action and the pre-commit hook: their declarations hold together, inputs never
reach a shell script unquoted, and the action's own audit and gate steps, run here with bash
on a tiny model, write the SARIF and turn spectra's exit codes into the job's result."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def action() -> dict:
    return yaml.safe_load((ROOT / "action.yml").read_text())


def test_action_declares_what_it_uses_and_keeps_inputs_out_of_scripts() -> None:
    a = action()
    assert a["runs"]["using"] == "composite"
    declared = set(a["inputs"])
    text = (ROOT / "action.yml").read_text()
    used = set(re.findall(r"inputs\.([\w-]+)", text))
    assert used <= declared, used - declared
    for step in a["runs"]["steps"]:
        if "run" in step:  # script injection: ${{ inputs.* }} only through env, never in the script text
            assert "${{" not in step["run"], step.get("name")
    upload = next(s for s in a["runs"]["steps"] if "upload-sarif" in s.get("uses", ""))
    assert "always()" in upload["if"] and upload["with"]["sarif_file"].endswith("/audit.sarif")
    gate = next(s for s in a["runs"]["steps"] if s.get("name") == "Gate")
    assert "always()" in gate["if"]
    # torch is the pinned CPU build the project supports (a bare "torch" pulls a CUDA build)
    install = next(s for s in a["runs"]["steps"] if "Install spectra" in s.get("name", ""))
    assert '"torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu' in install["run"]
    version = a["inputs"]["torch-version"]["default"]
    assert re.search(r"torch>=2\.2,<2\.15", (ROOT / "pyproject.toml").read_text()) and version.startswith("2.1")
    assert re.search(rf"TORCH\s+\?=\s+torch=={re.escape(version)}", (ROOT / "Makefile").read_text())  # the release the tests run on
    # pip, the hub and spectra's spectrum cache are cached; gated bases get a token
    cache = next(s for s in a["runs"]["steps"] if "actions/cache" in s.get("uses", ""))
    assert all(p in cache["with"]["path"] for p in ("~/.cache/pip", "~/.cache/huggingface/hub", "~/.cache/spectra"))
    assert _step("Audit")["env"]["HF_TOKEN"] == "${{ inputs.hf-token }}"


def test_precommit_hook_runs_the_installed_command() -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    hook = next(h for h in hooks if h["id"] == "spectra-audit")
    assert hook["entry"] == "spectra audit" and hook["language"] == "python" and hook["pass_filenames"] is False
    assert hook["additional_dependencies"] == ["torch==2.13.0"]  # never an unpinned torch
    assert re.search(hook["files"], "adapters/x/adapter_model.safetensors")
    system = next(h for h in hooks if h["id"] == "spectra-audit-system")
    assert system["language"] == "system" and system["entry"] == "spectra audit"


def _step(name: str) -> dict:
    return next(s for s in action()["runs"]["steps"] if s.get("name") == name)


def _spectra_on_path(tmp_path: Path) -> dict[str, str]:
    """A ``spectra`` executable on PATH that runs this checkout's CLI with this Python."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "spectra"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'from spectra_cli.app import main; main()' \"$@\"\n")
    exe.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize("policy, code", [("", 0), ("ratio-0", 1), ("missing-adapter", 2)])
def test_action_steps_audit_write_sarif_and_gate(tiny_model_dir, tiny_adapter_dir, tmp_path, policy, code) -> None:
    base = tiny_model_dir("bert")
    adapter = tiny_adapter_dir(base, target_modules=["query"])
    out_file = tmp_path / "github_output"
    out_file.write_text("")
    env = {**os.environ, **_spectra_on_path(tmp_path), "GITHUB_OUTPUT": str(out_file),
           "SPECTRA_BASE": str(base), "SPECTRA_ADAPTERS": str(adapter), "SPECTRA_POLICY": "",
           "SPECTRA_FAIL_ON": "error", "SPECTRA_OUT": str(tmp_path / "audit"),
           "SPECTRA_EXTRA": "--top-k 4 --no-cache"}
    if policy == "ratio-0":
        (tmp_path / "spectra.toml").write_text("[rules.ratio]\nmax = 0.0\n")
        env["SPECTRA_POLICY"] = str(tmp_path / "spectra.toml")
    elif policy == "missing-adapter":
        env["SPECTRA_ADAPTERS"] = str(tmp_path / "nope")
    audit = subprocess.run(["bash", "-eo", "pipefail", "-c", _step("Audit")["run"]], env=env, capture_output=True,
                           text=True, timeout=300)
    assert audit.returncode == 0, audit.stderr  # the step itself never fails: the gate decides
    assert out_file.read_text().strip() == f"exit-code={code}"
    if code != 2:
        assert (tmp_path / "audit" / "audit.sarif").is_file()
    gate = subprocess.run(["bash", "-eo", "pipefail", "-c", _step("Gate")["run"]], env={**env, "CODE": str(code)},
                          capture_output=True, text=True, timeout=60)
    assert gate.returncode == code
