"""Keeps the benchmark machinery from rotting: the synthetic generator and the accuracy
checks (:mod:`spectra.testing`) on tiny shapes, and ``bench/audit_speed.py`` end to end on
a tiny LLaMA shape (hidden 64, 2 layers) as a subprocess. The speed numbers themselves are
measured by running the scripts, not here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from spectra.testing import synthetic

BENCH = Path(__file__).resolve().parents[1] / "bench"
TINY = ["--hidden", "64", "--intermediate", "176", "--layers", "2", "--heads", "4", "--kv-heads", "2",
        "--vocab", "128", "--top-k", "8", "--baseline-layers", "1", "--threads", "1"]


def test_audit_speed_tiny_end_to_end(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "audit_speed.py"), *TINY, "--in-process", "--data-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-3000:]
    for needle in ("default-cold", "default-warm", "exact", "dense", "default-cold vs exact: 14 rows",
                   "dense vs exact (7 modules)", "accuracy targets met"):
        assert needle in out, (needle, out)


def test_generator_spectrum_and_adapter(tmp_path):
    import torch
    from safetensors.torch import load_file

    shape = synthetic.Shape(hidden=64, intermediate=176, layers=1, heads=4, kv_heads=2, vocab=128)
    base, lora = synthetic.build_synthetic(shape, tmp_path / shape.tag(), log=lambda *a: None)
    weights = {}
    for f in base.glob("*.safetensors"):
        weights.update(load_file(f))
    lora_t = load_file(lora / "adapter_model.safetensors")
    assert len(lora_t) == 2 * 7
    for name, (m, n) in shape.module_shapes().items():
        W = weights[f"model.layers.0.{name}.weight"]
        assert W.dtype == torch.float16 and tuple(W.shape) == (m, n)
        S = torch.linalg.svdvals(W.double())
        i = torch.arange(S.numel(), dtype=torch.float64)
        # power law (i+1)^-0.5 up to the ±0.3 index jitter, entries of RMS 0.02
        assert torch.allclose(S / S[0], (i + 1).pow(-0.5) / 1.0, rtol=0.25)
        assert abs(float(W.double().pow(2).mean().sqrt()) - 0.02) < 1e-3
        A = lora_t[f"base_model.model.model.layers.0.{name}.lora_A.weight"]
        B = lora_t[f"base_model.model.model.layers.0.{name}.lora_B.weight"]
        assert tuple(A.shape) == (16, n) and tuple(B.shape) == (m, 16) and B.abs().max() > 0


def test_compare_rows_reports_the_worst_row():
    from spectra.testing.accuracy import compare_rows

    ref = [{"module": f"m{i}", "sigma_pre": 2.0, "sigma_delta": 1.0, "cos_max_left": 0.5, "cos_max_right": 0.25,
            "overlap": 0.1} for i in range(3)]
    test = [dict(r) for r in ref]
    test[1]["sigma_pre"] = 2.0 * (1 + 3e-4)
    test[2]["cos_max_right"] = 0.25 + 2e-3
    acc = compare_rows(test, ref)
    assert acc["sigma_rel"] == pytest.approx(3e-4) and acc["sigma_pre_at"] == "m1"
    assert acc["cos_abs"] == pytest.approx(2e-3) and acc["cos_max_right_at"] == "m2"
    assert acc["sigma_rel"] > 1e-4 and acc["cos_abs"] > 1e-3  # what the benchmark's targets reject
    with pytest.raises(ValueError):
        compare_rows(test[:2], ref)


def test_forced_randomized_check_tiny(tmp_path):
    from spectra.testing.accuracy import forced_randomized_check

    shape = synthetic.Shape(hidden=128, intermediate=256, layers=1, heads=4, kv_heads=2, vocab=64)
    base, lora = synthetic.build_synthetic(shape, tmp_path / shape.tag(), log=lambda *a: None)
    res = forced_randomized_check(base, lora, k=8)
    assert res["matrices"] == 7
    assert res["sigma1_rel"] < 1e-4 and res["one_minus_cos"] < 5e-4
    assert any(g["method"].startswith("randomized") for g in res["groups"])


def test_spiked_bf16_generator_keeps_the_power_law_on_top_and_audits_like_exact(tmp_path):
    """The large-shape generator (spikes over noise, bf16 shards): the top of the spectrum is
    the jittered power law, the shards are bf16, and the default audit matches ``--exact``."""
    import torch
    from safetensors.torch import load_file

    from spectra.audit import audit

    shape = synthetic.Shape(hidden=256, intermediate=640, layers=1, heads=4, kv_heads=2, vocab=64, spikes=48,
                            dtype="bfloat16")
    assert shape.tag().endswith("-sp48-bf16-g1")
    base, lora = synthetic.build_synthetic(shape, tmp_path / shape.tag(), log=lambda *a: None)
    weights = {}
    for f in base.glob("*.safetensors"):
        weights.update(load_file(f))
    W = weights["model.layers.0.mlp.gate_proj.weight"]
    assert W.dtype == torch.bfloat16 and tuple(W.shape) == (640, 256)
    S = torch.linalg.svdvals(W.double())
    top = torch.arange(16, dtype=torch.float64)
    # the top 16 follow (i+1)^-0.5 (noise lifts them a little, bf16 rounds them); the bulk is far below
    assert torch.allclose(S[:16] / S[0], (top + 1).pow(-0.5), rtol=0.3)
    assert S[100] < 0.2 * S[0]
    assert abs(float(W.double().pow(2).mean().sqrt()) - 0.02) < 2e-3
    kw = dict(top_k=8, device="cpu", cache_dir=False)
    fast, exact = audit(str(base), str(lora), **kw).table, audit(str(base), str(lora), exact=True, **kw).table
    assert (fast["sigma_pre"] / exact["sigma_pre"] - 1).abs().max() < 1e-4
    for col in ("cos_max_left", "cos_max_right"):
        assert (fast[col] - exact[col]).abs().max() < 1e-3
    assert set(exact["spectrum_method"]) == {"exact"}
