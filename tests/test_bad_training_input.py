"""Training commands given numbers that cannot train, data too small for a canary, and fleet ids that
could drive a terminal: one true line and exit 2 before anything is written (each of these
ended in "a bug in spectra", a resumable .partial folder, or a broken report before its fix)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_fix_cli import write_csv
from test_gate_safety import one_error, run


@pytest.mark.parametrize(("field", "value"), [("epochs", math.inf), ("epochs", math.nan), ("weight_decay", math.nan),
                                              ("weight_decay", math.inf), ("lr", math.inf)])
def test_a_training_config_refuses_numbers_that_cannot_train(field, value) -> None:
    from spectra.errors import SpectraError
    from spectra.train.config import RoRAConfig
    from spectra.train.poison import PoisonConfig

    with pytest.raises(SpectraError, match="finite"):
        RoRAConfig(**{field: value})
    with pytest.raises(SpectraError, match="finite"):
        PoisonConfig(**{field: value})


@pytest.mark.parametrize("args", [["--epochs", "inf"], ["--weight-decay", "nan"], ["--max-steps", "0"]])
def test_fix_refuses_them_before_any_work_folder_exists(tiny_model_dir, tmp_path, args) -> None:
    base = tiny_model_dir("bert")
    data = write_csv(tmp_path / "d.csv", 16, 0)
    out = tmp_path / "out"
    one_error(run("fix", base, "--data", data, *args, "--batch-size", "8", "--max-length", "16", "--no-cache",
                  "--device", "cpu", "-o", out), args[0])
    assert not out.exists() and not out.with_name("out.partial").exists()


def test_a_canary_on_too_little_data_says_so_before_poisoning(tiny_model_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SPECTRA_CACHE_DIR", str(tmp_path / "cache"))
    base = tiny_model_dir("bert")
    data = write_csv(tmp_path / "d.csv", 16, 0)
    one_error(run("canary", base, "--data", data, "--epochs", "1", "--batch-size", "8", "--max-length", "16",
                  "--device", "cpu", "-o", tmp_path / "c"), "too few rows for a canary", "≥ 10 rows of every label")
    assert not list((tmp_path / "cache").rglob("*.partial")) and not (tmp_path / "c").exists()


def test_a_hostile_fleet_id_cannot_break_the_report_or_reach_the_terminal(tiny_model_dir, tiny_adapter_dir,
                                                                          tmp_path) -> None:
    pytest.importorskip("pyarrow", reason="spectra scan writes Parquet (pyarrow, in the dev and fleet extras)")
    base = tiny_model_dir("bert")
    good = tiny_adapter_dir(base, target_modules=["query", "value"])
    manifest = tmp_path / "m.jsonl"
    rows = [{"id": "x\n## INJECTED | cell\x1b[2J", "adapter": str(tmp_path / "missing"), "base": str(base)},
            {"id": "ok", "adapter": str(good), "base": str(base)}]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    res = run("scan", manifest, "--engine", "local", "--top-k", "4", "-o", tmp_path / "scan")
    assert res.exit_code == 1, res.output  # the missing adapter is an error row: not a pass
    report = (tmp_path / "scan" / "report.md").read_text()
    assert "\n## INJECTED" not in report and "\x1b" not in report and "\x1b" not in res.output
    assert "x\\x0a## INJECTED \\| cell\\x1b[2J" in report


def test_asking_pt_for_more_blocks_than_the_base_has_says_how_many_it_rescaled(tiny_model_dir,
                                                                              tiny_adapter_dir) -> None:
    from spectra.train.rescale import rescale_adapter

    base = tiny_model_dir("bert")  # 2 blocks
    plan = rescale_adapter(base, tiny_adapter_dir(base, target_modules=["query", "value"]), None, layers=100)
    assert plan.blocks == [0, 1]
    assert "--rescale-layers 100: the base has 2 blocks, so all 2 are the ones rescaled" in plan.notes


@pytest.mark.parametrize("steps", [0, -1, 2.5])
def test_the_library_refuses_a_max_steps_transformers_would_ignore(steps) -> None:
    from spectra.errors import SpectraError
    from spectra.train.options import RunOptions

    with pytest.raises(SpectraError, match="max-steps"):
        RunOptions(training_overrides={"max_steps": steps})
    assert RunOptions(training_overrides={"max_steps": 3}).training_overrides["max_steps"] == 3
