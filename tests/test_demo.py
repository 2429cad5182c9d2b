"""The demo: a documented subset of the study's recipe, output folders that never overwrite,
and readings that follow the numbers — including refusing a verdict the budget cannot support."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from spectra.demo import demo_recipe, demo_runs, free_output_dir
from spectra.study.recipe import PICKED_LR, Recipe


def test_full_demo_is_the_study_recipe_and_quick_keeps_the_poison_share() -> None:
    full, quick, study = demo_recipe(False), demo_recipe(True), Recipe()
    for name in ("proxy", "n_poison", "poison_epochs", "poison_lr", "epochs", "rank", "alpha", "lam", "top_k",
                 "base_dropout", "rescale_layers", "batch_size", "max_length"):
        assert getattr(full, name) == getattr(study, name), name
    assert full.proxy_rows is None and full.train_rows is None
    # the paper puts 1,500 poisons into ~28% of MR's target rows; the quick subset keeps that share
    target_rows_quick = 0.9 * quick.proxy_rows * 5326 / 10568
    assert 0.25 <= quick.n_poison / target_rows_quick <= 0.35
    assert quick.notes and full.key() != quick.key()


def test_demo_runs_use_the_rates_the_study_picked() -> None:
    runs = demo_runs()
    assert [r.kind for r in runs] == ["base", "finetune", "sweep", "finetune", "sweep"]
    assert {r.method: r.lr for r in runs if r.kind == "finetune"} == {"lora": PICKED_LR["lora"], "rora": PICKED_LR["rora"]}
    assert all(r.attack == "badnet" and r.seed == 0 for r in runs)


def test_output_folder_never_overwrites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert free_output_dir(None) == Path("spectra-demo")
    Path("spectra-demo").mkdir()
    Path("spectra-demo-2").mkdir()
    assert free_output_dir(None) == Path("spectra-demo-3")
    assert free_output_dir("mine") == Path("mine")


SUMMARY: dict[str, Any] = {
    "poisoning": {"mode": "clean-label", "fallback_from": None, "asr": 1.0, "ca": 0.83, "asr_floor": 0.15,
                  "collapsed": False},
    "trigger": "badnet:mn", "target_label": 0,
    "training": {"LoRA": {"converged": True}, "RoRA": {"converged": True}},
    "eval": [{"model": "poisoned base (no fine-tuning)", "ca": 0.763, "asr": 1.0, "asr_floor": 0.345, "delta": -0.237},
             {"model": "LoRA", "ca": 0.86, "asr": 0.99, "asr_floor": 0.1, "delta": -0.13, "collapsed": False},
             {"model": "LoRA + Pt", "ca": 0.84, "asr": 0.05, "asr_floor": 0.02, "delta": 0.79, "collapsed": False},
             {"model": "RoRA before Pt (CI+Tr)", "ca": 0.85, "asr": 0.98, "asr_floor": 0.1, "delta": -0.13},
             {"model": "RoRA (CI+Tr+Pt)", "ca": 0.80, "asr": 0.04, "asr_floor": 0.02, "delta": 0.76, "collapsed": False}],
    "threshold": {"LoRA": {"measured_crossing_gamma": 5.2, "predicted_threshold_gamma": 150.0, "search_threshold_gamma": 4.8,
                           "measured_threshold_gamma": 8.0, "pt": {"multiplier_min": 9.0, "multiplier_max": 30.0}},
                  "RoRA": {"measured_crossing_gamma": 2.1, "predicted_threshold_gamma": None, "search_threshold_gamma": 2.0,
                           "measured_threshold_gamma": 4.0}},
}


def _with(**rows: dict[str, Any]) -> dict[str, Any]:
    s = copy.deepcopy(SUMMARY)
    for row in s["eval"]:
        row.update(rows.get(row["model"], {}))
    return s


def test_readings_follow_the_numbers() -> None:
    from spectra.report.demo_markdown import demo_readings

    text = " ".join(demo_readings(SUMMARY))
    assert "LoRA keeps the backdoor: ASR 99.0%" in text
    assert "Pt alone (LoRA + Pt) removes it: ASR 5.0%" in text and "2.0 points of CA below LoRA" in text
    assert "RoRA removes it: ASR 4.0%" in text and "6.0 points of CA below LoRA" in text
    assert "γ = 5.2 for LoRA and γ = 2.1 for RoRA" in text and "9.0–30.0" in text

    collapsed = " ".join(demo_readings(_with(**{"RoRA (CI+Tr+Pt)": {"collapsed": True, "ca": 0.59, "asr": 0.0,
                                                                    "majority_share": 0.59}})))
    assert "RoRA has collapsed to one class" in collapsed and "RoRA removes" not in collapsed
    kept = " ".join(demo_readings(_with(**{"RoRA (CI+Tr+Pt)": {"asr": 0.9}})))
    assert "RoRA leaves ASR at 90.0%" in kept
    partly = " ".join(demo_readings(_with(LoRA={"asr": 0.75, "asr_floor": 0.12})))
    assert "LoRA leaves ASR at 75.0%" in partly and "partly survives" in partly and "LoRA keeps" not in partly
    gone = " ".join(demo_readings(_with(LoRA={"asr": 0.15})))
    assert "removes the backdoor by itself" in gone and "partly" not in gone


def test_readings_refuse_a_verdict_the_budget_cannot_support() -> None:
    from spectra.report.demo_markdown import demo_readings

    weak = copy.deepcopy(SUMMARY)
    weak["poisoning"]["asr"] = 0.7
    text = " ".join(demo_readings(weak))
    assert "cannot decide" in text and "LoRA keeps" not in text

    unsettled = copy.deepcopy(SUMMARY)
    unsettled["training"]["LoRA"]["converged"] = False
    text = " ".join(demo_readings(unsettled))
    assert "LoRA had not converged" in text and "cannot decide" in text and "removes it" not in text


def test_console_summary_names_every_model_and_the_crossings(tmp_path: Path) -> None:
    from rich.console import Console
    from spectra_cli.cmd_demo import _print_summary
    from spectra_cli.output import Output

    (tmp_path / "demo.json").write_text(json.dumps(SUMMARY))
    sink = Output()
    sink.console = Console(record=True, width=140)
    _print_summary(sink, tmp_path)
    text = sink.console.export_text()
    assert sink.payload["command"] == "demo" and [r["model"] for r in sink.payload["eval"]] == \
        [r["model"] for r in SUMMARY["eval"]]  # the same results reach --json
    assert "clean-label" in text and "86.0" in text and "-13.0" in text
    assert "LoRA: ASR crosses 50% at γ = 5.2 (measured); predicted 150 (Prop. 4.2 linear), 4.8 (search)" in text
    assert "• LoRA keeps the backdoor" in text
    assert str(tmp_path / "report.md") in text
