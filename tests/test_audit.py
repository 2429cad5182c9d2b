"""The audit's numbers against an independent dense computation, and the audit command."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from spectra.audit import COLUMNS, audit
from spectra_cli.app import app

K = 4


def dense_reference(base_dir: Path, adapter_dir: Path, module: str, scale: float, k: int,
                    transpose_base: bool = False) -> dict[str, float]:
    """Everything the audit reports, from a dense ΔW and full float64 SVDs."""
    base = load_file(str(base_dir / "model.safetensors"))
    ad = load_file(str(adapter_dir / "adapter_model.safetensors"))
    key = next(k_ for k_ in base if k_.endswith(module.split(".", 1)[1] + ".weight") or k_ == module + ".weight")
    W = base[key].double()
    W = W.T if transpose_base else W
    A = ad[f"base_model.model.{module}.lora_A.weight"].double()
    B = ad[f"base_model.model.{module}.lora_B.weight"].double()
    dW = scale * B @ A
    Up, Sp, Vhp = torch.linalg.svd(W)
    Ud, Sd, Vhd = torch.linalg.svd(dW)
    Uk, Vk = Up[:, :k], Vhp[:k].T
    energy = dW.pow(2).sum()
    left = float((Uk.T @ dW).pow(2).sum() / energy)
    right = float((dW @ Vk).pow(2).sum() / energy)
    return {
        "sigma_pre": float(Sp[0]), "sigma_delta": float(Sd[0]), "ratio": float(Sp[0] / Sd[0]),
        "cos_max_left": float((Uk.T @ Ud[:, 0]).abs().max()),
        "cos_max_right": float((Vk.T @ Vhd[0]).abs().max()),
        "overlap_left": left, "overlap_right": right, "overlap": (left + right) / 2,
        "sigma_pre_k": float(Sp[k - 1]),
    }


@pytest.mark.parametrize(("arch", "targets", "extra", "transpose"), [
    ("bert", ["query", "value"], {}, False),
    ("llama", ["q_proj", "down_proj"], {}, False),
    ("gpt2", ["c_attn"], {"fan_in_fan_out": True}, True),
])
def test_audit_equals_dense_reference(tiny_model_dir, tiny_adapter_dir, tmp_path, arch, targets, extra, transpose):
    base = tiny_model_dir(arch)
    adapter = tiny_adapter_dir(base, arch=arch, target_modules=targets, r=4, lora_alpha=8, **extra)
    report = audit(base, adapter, top_k=K, dtype="float64", cache_dir=False)
    assert list(report.table.columns[:len(COLUMNS)]) == COLUMNS
    assert len(report.table) == 2 * len(targets)  # tiny models have 2 blocks
    for row in report.table.to_dict("records"):
        ref = dense_reference(base, adapter, row["module"], 2.0, K, transpose_base=transpose)
        for name, value in ref.items():
            assert row[name] == pytest.approx(value, rel=1e-7, abs=1e-9), (row["module"], name)
        assert row["rank"] == 4 and row["scale"] == 2.0
        assert row["layer"] == int(re.search(r"\.(\d+)\.", row["module"]).group(1))


def test_float32_default_agrees_with_float64(tiny_model_dir, tiny_adapter_dir):
    base = tiny_model_dir("bert")
    adapter = tiny_adapter_dir(base, target_modules=["query", "value", "dense"])
    t32 = audit(base, adapter, top_k=K, cache_dir=False).table
    t64 = audit(base, adapter, top_k=K, dtype="float64", cache_dir=False).table
    for col in ("sigma_pre", "sigma_delta", "cos_max_left", "cos_max_right", "overlap"):
        assert (t32[col] - t64[col]).abs().max() < 1e-4, col


def test_rslora_and_patterns_reach_the_table(tiny_model_dir, tiny_adapter_dir):
    base = tiny_model_dir("bert")
    adapter = tiny_adapter_dir(base, target_modules=["query", "value"], r=4, lora_alpha=8, use_rslora=True,
                               rank_pattern={"layer.1.attention.self.query": 2},
                               alpha_pattern={"layer.0.attention.self.value": 3})
    table = audit(base, adapter, top_k=2, cache_dir=False).table.set_index("module")
    assert table.loc["bert.encoder.layer.0.attention.self.query", "scale"] == pytest.approx(8 / 4 ** 0.5)
    assert table.loc["bert.encoder.layer.1.attention.self.query", "scale"] == pytest.approx(8 / 2 ** 0.5)
    assert table.loc["bert.encoder.layer.1.attention.self.query", "rank"] == 2
    assert table.loc["bert.encoder.layer.0.attention.self.value", "scale"] == pytest.approx(3 / 4 ** 0.5)


def test_second_audit_reuses_cached_base_spectra(tiny_model_dir, tiny_adapter_dir, tmp_path):
    base = tiny_model_dir("bert")
    first = tiny_adapter_dir(base, name="a1", target_modules=["query"])
    second = tiny_adapter_dir(base, name="a2", seed=7, target_modules=["query"])
    cold = audit(base, first, top_k=K, cache_dir=tmp_path / "cache").table
    warm = audit(base, second, top_k=K, cache_dir=tmp_path / "cache").table
    (method,) = set(cold["spectrum_method"])  # the cost model's pick for this shape
    assert method in ("exact", "gram-certified", "randomized-certified")
    assert set(warm["spectrum_method"]) == {f"cache:{method}"}
    pd.testing.assert_series_equal(cold["sigma_pre"], warm["sigma_pre"])
    assert not cold["sigma_delta"].equals(warm["sigma_delta"])  # other adapter, same base spectra


def test_full_finetune_side_by_side_with_lora(tiny_model_dir, tiny_adapter_dir, tmp_path):
    from conftest import build_tiny_model, save_model

    base = tiny_model_dir("bert")
    lora = tiny_adapter_dir(base, target_modules=["query"])
    model = build_tiny_model("bert")
    with torch.no_grad():
        model.bert.encoder.layer[1].attention.self.query.weight.add_(0.01)
    full = save_model(model, tmp_path / "full-ft")
    report = audit(base, [lora, full], top_k=K, cache_dir=False)
    ft = report.table[report.table["adapter"] == "full-ft"]
    assert ft["module"].tolist() == ["bert.encoder.layer.1.attention.self.query"]
    row = ft.iloc[0]
    assert row["update_kind"] == "full"
    # a constant shift 0.01·11ᵀ has σ = 0.01·√(32·32) and is rank one
    assert row["sigma_delta"] == pytest.approx(0.01 * 32, rel=1e-4)
    assert report.adapters == ["adapter", "full-ft"]


def test_no_figures_writes_the_same_numbers_without_matplotlib(tiny_model_dir, tiny_adapter_dir, tmp_path):
    """--no-figures (for CI gates): every other file, the same table, no PNG, no link to one,
    and matplotlib never imported by the process."""
    import subprocess
    import sys

    base = tiny_model_dir("bert")
    adapter = tiny_adapter_dir(base, target_modules=["query", "value"])
    code = ("import sys; from spectra_cli.app import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'matplotlib' not in sys.modules, 'matplotlib was imported'\n")
    common = [str(base), str(adapter), "--top-k", "4", "--no-cache"]
    done = subprocess.run([sys.executable, "-c", code, "audit", *common, "-o", str(tmp_path / "lean"), "--no-figures"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert CliRunner().invoke(app, ["audit", *common, "-o", str(tmp_path / "full")]).exit_code == 0
    lean, full = tmp_path / "lean", tmp_path / "full"
    assert sorted(p.name for p in lean.iterdir()) == ["audit.csv", "audit.json", "audit.sarif", "report.md"]
    assert pd.read_csv(lean / "audit.csv").equals(pd.read_csv(full / "audit.csv"))
    assert "fig_ratio.png" not in (lean / "report.md").read_text()
    assert "fig_ratio.png" in (full / "report.md").read_text()
    # the probe can fail: with figures, and no helper process to draw them (it cannot start
    # without an interpreter), the same process does import matplotlib
    no_helper = code.replace("from spectra_cli.app import main", "from spectra_cli.app import main; sys.executable = ''")
    drawn = subprocess.run([sys.executable, "-c", no_helper, "audit", *common, "-o", str(tmp_path / "drawn")],
                           capture_output=True, text=True)
    assert drawn.returncode != 0 and "matplotlib was imported" in drawn.stderr
    assert (tmp_path / "drawn" / "fig_ratio.png").is_file()


def test_violations_are_the_rows_behind_the_policy_findings(tiny_model_dir, tiny_adapter_dir):
    from spectra.audit import audit

    base = tiny_model_dir("bert")
    report = audit(base, [tiny_adapter_dir(base, target_modules=["query", "value"])], top_k=4, cache_dir=False)
    t = report.table
    mid = float(t["ratio"].median())
    assert set(report.violations(max_ratio=mid)["module"]) == set(t.loc[t["ratio"] > mid, "module"])
    cos = t[["cos_max_left", "cos_max_right"]].max(axis=1)
    assert set(report.violations(max_cos=float(cos.median()))["module"]) == set(t.loc[cos > cos.median(), "module"])
    assert report.violations().empty and 0 < len(report.violations(max_ratio=mid)) < len(t)


def test_cli_writes_every_file_and_valid_pngs(tiny_model_dir, tiny_adapter_dir, tmp_path):
    base = tiny_model_dir("bert")
    adapter = tiny_adapter_dir(base, target_modules=["query", "value"])
    other = tiny_adapter_dir(base, name="other", seed=3, target_modules=["query", "value"])
    out = tmp_path / "audit-out"
    result = CliRunner().invoke(app, ["audit", str(base), str(adapter), str(other), "-o", str(out),
                                      "--top-k", "4", "--no-cache"])
    assert result.exit_code == 0, result.output
    for name in ("audit.csv", "audit.json", "fig_ratio.png", "fig_alignment.png", "report.md"):
        assert (out / name).is_file(), name
    for png in ("fig_ratio.png", "fig_alignment.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        from PIL import Image

        with Image.open(out / png) as img:
            assert img.size[0] > 400 and img.size[1] > 200
    data = json.loads((out / "audit.json").read_text())
    assert set(data) >= {"modules", "settings", "inputs", "versions"}
    assert len(data["modules"]) == 8 and data["settings"]["top_k"] == 4
    csv = pd.read_csv(out / "audit.csv")
    assert set(csv["adapter"]) == {"adapter", "other"}
    assert csv["shape"].iloc[0] == "32x32"
    report = (out / "report.md").read_text()
    assert "sigma_pre" in report and "fig_ratio.png" in report and "torch" in report
    # provenance: the settings, the inputs' hashes and the versions that made these numbers
    assert [h for h in ("## Settings", "## Inputs", "## Versions", "## Timings (s)") if h in report] == \
        ["## Settings", "## Inputs", "## Versions", "## Timings (s)"]
    assert '"top_k": 4' in report and data["inputs"]["base"]["files"]["model.safetensors"] in report
    assert f"- torch: {data['versions']['torch']}" in report
    assert data["inputs"]["base"]["files"]["model.safetensors"].startswith("sha256:")

    before = (out / "audit.json").read_bytes()
    again = CliRunner().invoke(app, ["audit", str(base), str(adapter), "-o", str(out), "--top-k", "4"])
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert (out / "audit.json").read_bytes() == before  # the refused run touched nothing


def test_policy_gate_exits_1_after_writing(tiny_model_dir, tiny_adapter_dir, tmp_path):
    base = tiny_model_dir("bert")
    adapter = tiny_adapter_dir(base, target_modules=["query"])
    ratio = audit(base, adapter, top_k=K, cache_dir=False).table["ratio"].max()
    runner = CliRunner()
    strict = runner.invoke(app, ["audit", str(base), str(adapter), "-o", str(tmp_path / "a"), "--top-k", "4",
                                 "--max-ratio", str(ratio * 0.99)])
    assert strict.exit_code == 1 and (tmp_path / "a" / "report.md").is_file()  # findings: 1, as scanners
    loose = runner.invoke(app, ["audit", str(base), str(adapter), "-o", str(tmp_path / "b"), "--top-k", "4",
                                "--max-ratio", str(ratio * 1.01), "--max-cos", "1.0"])
    assert loose.exit_code == 0, loose.output


def test_layer_narrower_than_top_k_uses_its_whole_space(tiny_model_dir, tiny_adapter_dir):
    base = tiny_model_dir("bert")
    adapter = tiny_adapter_dir(base, target_modules=["query"], modules_to_save=["classifier"])
    from safetensors.torch import save_file

    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    head = next(k for k in tensors if "classifier" in k and k.endswith("weight"))
    tensors[head] = tensors[head] + 0.1 * torch.randn(tensors[head].shape, generator=torch.Generator().manual_seed(0))
    save_file(tensors, str(adapter / "adapter_model.safetensors"))
    table = audit(base, adapter, top_k=K, cache_dir=False).table.set_index("module_type")
    head = table.loc["classifier"]
    assert head["k"] == 2 and head["update_kind"] == "full"
    # the 2-d output space is the whole top-k subspace: all of ΔW's energy is inside it
    assert head["overlap_left"] == pytest.approx(1.0) and head["overlap_left"] <= 1.0  # a share, never above 1
    assert head["cos_max_left"] >= 2 ** -0.5 - 1e-9
    assert head["cos_random_left"] == pytest.approx(2 * 2 ** 0.5 / math.pi, abs=0.01)  # chance in 2-D, not 1
    assert (table.loc["query", "k"] == K).all()


@pytest.mark.parametrize("case", ["missing", "empty", "neither", "truncated", "nan", "foreign", "topk", "modules"])
def test_bad_input_is_one_line_exit_2(tiny_model_dir, tiny_adapter_dir, tmp_path, case):
    from safetensors.torch import save_file

    base = tiny_model_dir("bert")
    adapter = tiny_adapter_dir(base, target_modules=["query"])
    args = ["audit", str(base), str(adapter), "-o", str(tmp_path / "out"), "--top-k", "4", "--no-cache"]
    if case == "missing":
        args[2] = str(tmp_path / "nope")
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        args[2] = str(tmp_path / "empty")
    elif case == "neither":
        (tmp_path / "junk").mkdir()
        (tmp_path / "junk" / "notes.txt").write_text("hello")
        args[2] = str(tmp_path / "junk")
    elif case == "truncated":
        f = base / "model.safetensors"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif case == "nan":
        f = adapter / "adapter_model.safetensors"
        tensors = load_file(str(f))
        first = next(iter(tensors))
        tensors[first][0, 0] = float("nan")
        save_file(tensors, str(f))
    elif case == "foreign":
        llama = tiny_model_dir("llama", name="llama")
        args[2] = str(tiny_adapter_dir(llama, name="llama-adapter", arch="llama", target_modules=["q_proj"]))
    elif case == "topk":
        args[-2] = "0"
    elif case == "modules":
        args += ["--modules", "no_such_module"]
    result = CliRunner().invoke(app, args)
    # 2: the tool could not do its job; 3: readable input, nothing to audit (no module matched)
    assert result.exit_code == (3 if case == "modules" else 2), result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output and "bug in spectra" not in lines[0]  # a crash also prints one line
    assert not (tmp_path / "out").exists()


def test_timings_count_the_bytes_read_and_the_arithmetic(tiny_model_dir, tiny_adapter_dir, tmp_path):
    """``timings`` carries what a roofline needs: bytes read from the checkpoint for the base
    spectra (each touched fp32 weight once, however many adapters) and the flop spent; a
    warm cache reads and computes nothing."""
    from safetensors import safe_open

    base = tiny_model_dir("bert")
    adapter = tiny_adapter_dir(base, target_modules=["query", "value"])
    cold = audit(base, [adapter, adapter], top_k=K, cache_dir=tmp_path / "cache")
    keys = set(cold.table["base_key"])
    expected = 0
    with safe_open(str(base / "model.safetensors"), "pt") as f:
        for key in keys:
            t = f.get_tensor(key)
            expected += t.numel() * t.element_size()
    assert cold.timings["base_bytes_read"] == expected
    assert cold.timings["base_gflop"] > 0
    warm = audit(base, adapter, top_k=K, cache_dir=tmp_path / "cache")
    assert warm.timings["base_bytes_read"] == 0 and warm.timings["base_gflop"] == 0


def test_memory_budget_bounds_every_stacked_batch(tmp_path, monkeypatch):
    """``memory_budget_mb`` (``--memory-budget``) caps the stack handed to the spectral code
    at half the budget (a weight larger than that goes alone), on any device."""
    import spectra.spectral as sp
    from spectra.testing.synthetic import Shape, build_synthetic

    shape = Shape(hidden=256, intermediate=640, layers=2, heads=4, kv_heads=2, vocab=64)
    base, lora = build_synthetic(shape, tmp_path / shape.tag(), log=lambda *a: None)
    seen: list[int] = []
    original = sp.top_singular

    def recording(W, k, **kw):  # type: ignore[no-untyped-def]
        seen.append(W.numel() * W.element_size())
        return original(W, k, **kw)

    monkeypatch.setattr(sp, "top_singular", recording)
    small = audit(str(base), str(lora), top_k=8, cache_dir=False, memory_budget_mb=1)
    largest_weight = 640 * 256 * 4
    assert len(seen) > 4 and max(seen) <= max(largest_weight, (1 << 20) // 2)
    assert small.settings["memory_budget_mb"] == 1
    seen.clear()
    roomy = audit(str(base), str(lora), top_k=8, cache_dir=False, memory_budget_mb=64)
    assert len(seen) == 4  # one stack per distinct shape: q/o, k/v, gate/up, down
    pd.testing.assert_series_equal(small.table["sigma_pre"], roomy.table["sigma_pre"], rtol=1e-5)


def test_chance_is_read_per_module_size_when_sizes_differ(tiny_model_dir, tiny_adapter_dir, tmp_path) -> None:
    """One chance line (the median over modules) put a GQA k_proj (fewer output rows, higher chance)
    above chance when it sat at it; the reading and Figure 2 now use each module type's own level."""
    from spectra.report.audit_figures import chance_by_type
    from spectra.report.audit_markdown import render_audit_markdown

    base = tiny_model_dir("llama")
    adapter = tiny_adapter_dir(base, target_modules=["q_proj", "k_proj"])
    report = audit(base, adapter, top_k=4, cache_dir=False)
    levels = chance_by_type(report.rows, "left")
    assert levels["k_proj"] > levels["q_proj"] + 0.01  # 2 KV heads: a smaller output space
    text = render_audit_markdown(report, figures=False)
    assert f"chance levels of {levels['q_proj']:.2f}–{levels['k_proj']:.2f}" in text


def test_the_report_names_the_default_policy_and_says_when_nothing_is_gated(tiny_model_dir, tiny_adapter_dir,
                                                                           tmp_path, monkeypatch) -> None:
    """report.md read 'From ; the gate ... passes' with no policy file, while the terminal warned
    that nothing could fail the gate."""
    from spectra_cli.app import app
    from typer.testing import CliRunner

    base = tiny_model_dir("bert")
    adapter = tiny_adapter_dir(base, target_modules=["query"])
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["audit", str(base), str(adapter), "-o", "out", "--top-k", "4", "--no-cache",
                                   "--no-figures"])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "out" / "report.md").read_text()
    assert "From ;" not in text and "From spectra's defaults" in text
    assert "> note: no policy rule can fail the gate" in text


def test_the_terminal_says_the_forgetting_verdict_even_without_an_estimate(tiny_model_dir, tiny_adapter_dir,
                                                                           tmp_path) -> None:
    """report.md and audit.json said 'no validated estimate' with the reason; the terminal said nothing."""
    from spectra_cli.app import app
    from typer.testing import CliRunner

    base = tiny_model_dir("bert")
    adapter = tiny_adapter_dir(base, target_modules=["query"])
    res = CliRunner().invoke(app, ["audit", str(base), f"mine={adapter}", "-o", str(tmp_path / "o"), "--top-k", "4",
                                   "--no-cache", "--no-figures"])
    assert res.exit_code == 0 and "forgetting · mine (none): no validated estimate — " in res.output, res.output
