"""The audit's outputs are written from plain rows, without pandas: the files must be the
ones pandas wrote, and the command must not import it."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pandas as pd
import pytest

from spectra.audit import audit
from spectra.report.audit_figures import alignment_figure, ratio_figure

K = 4


@pytest.fixture
def two_adapters(tiny_model_dir, tiny_adapter_dir):
    """A trained-looking adapter (LoRA on query/value, a saved classifier copy outside the
    blocks: layer missing, ΔW = 0) and a fresh one (PEFT's init, B = 0: every ratio ∞)."""
    base = tiny_model_dir("bert")
    trained = tiny_adapter_dir(base, name="trained", target_modules=["query", "value"], modules_to_save=["classifier"])
    fresh = tiny_adapter_dir(base, name="fresh", target_modules=["query"], init_lora_weights=True)
    return base, audit(base, [trained, fresh], top_k=K, cache_dir=False)


def _same(got, want) -> bool:
    if isinstance(want, float) and isinstance(got, float):
        return (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-9, abs=1e-10)
    return got == want


def test_csv_is_byte_for_byte_what_pandas_wrote(two_adapters, tmp_path):
    _, report = two_adapters
    rows = report.rows
    assert any(r["layer"] is None for r in rows) and any(r["ratio"] == math.inf for r in rows)
    out = report.write(tmp_path / "out", figures=False)
    table = report.table.copy()
    table["shape"] = table["shape"].map(lambda s: f"{s[0]}x{s[1]}")
    assert (out / "audit.csv").read_text(encoding="utf-8") == table.to_csv(index=False)


def test_json_matches_pandas_and_is_strict_json(two_adapters, tmp_path):
    _, report = two_adapters
    out = report.write(tmp_path / "out", figures=False)
    text = (out / "audit.json").read_text(encoding="utf-8")
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    want = json.loads(report.table.to_json(orient="records"))
    assert [list(r) for r in doc["modules"]] == [list(r) for r in want]
    for got, ref in zip(doc["modules"], want):
        for key, value in ref.items():
            assert _same(got[key], value), (got["module"], key, got[key], value)
    inf_rows = [r for r, row in zip(doc["modules"], report.rows) if row["ratio"] == math.inf]
    assert inf_rows and all(r["ratio"] is None for r in inf_rows)  # ∞ is null, as pandas wrote it


def test_summary_equals_the_pandas_groupby(two_adapters):
    _, report = two_adapters
    table = report.table
    finite = table.assign(ratio=table["ratio"].replace([math.inf], math.nan))
    grouped = finite.groupby("adapter", sort=False)
    ref = pd.DataFrame({
        "modules": grouped.size(),
        "ratio_median": grouped["ratio"].median(),
        "ratio_min": grouped["ratio"].min(),
        "cos_left_median": grouped["cos_max_left"].median(),
        "cos_right_median": grouped["cos_max_right"].median(),
        "cos_max": grouped[["cos_max_left", "cos_max_right"]].max().max(axis=1),
        "overlap_median": grouped["overlap"].median(),
    }).reset_index().to_dict("records")
    got = report.summary_rows()
    assert [r["adapter"] for r in got] == ["trained", "fresh"]
    assert math.isnan(got[1]["ratio_median"])  # every ratio of the fresh adapter is ∞
    for g, r in zip(got, ref):
        assert list(g) == list(r)
        for key in r:
            assert _same(float(g[key]) if key != "adapter" else g[key],
                         float(r[key]) if key != "adapter" else r[key]), (key, g[key], r[key])


def test_figures_from_rows_and_from_the_dataframe_draw_the_same_lines(two_adapters):
    _, report = two_adapters

    def lines(fig):
        return [(ax.get_title(), line.get_label(), list(line.get_xdata()), [float(v) for v in line.get_ydata()])
                for ax in fig.axes for line in ax.get_lines()]

    for draw in (lambda t: ratio_figure(t), lambda t: alignment_figure(t, K)):
        from_rows, from_frame = lines(draw(report.rows)), lines(draw(report.table))
        assert from_rows and len(from_rows) == len(from_frame)
        for a, b in zip(from_rows, from_frame):
            assert a[:3] == b[:3] and all(_same(x, y) for x, y in zip(a[3], b[3]))


def test_the_audit_command_does_not_import_pandas(two_adapters, tmp_path):
    base, report = two_adapters
    adapters = [report.inputs["adapters"][a]["given"] for a in report.adapters]
    code = ("import sys\nfrom spectra_cli.app import main\n"
            "try:\n"
            f"    main(['audit', {str(base)!r}, *{adapters!r}, '-o', {str(tmp_path / 'cli')!r}, '--top-k', '{K}'])\n"
            "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "print('pandas' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
    assert (tmp_path / "cli" / "fig_ratio.png").is_file() and (tmp_path / "cli" / "audit.csv").is_file()
