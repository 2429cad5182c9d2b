"""The demo's poisoning policy: paper settings first, a dirty-label fallback that is said
out loud, and a cache keyed by the recipe. Training itself is replaced by a stub that
records what it was asked to do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import spectra.train.poison as poison_module
from spectra.demo import DemoSettings, _eval_table, _fallback_n_poison, free_output_dir, poisoned_base


class _FakeData:
    sha256 = "0" * 64

    def __len__(self) -> int:
        return 4000


class _FakeResult:
    def __init__(self, outcome: dict[str, Any]):
        self.outcome = outcome

    def write(self, folder: Path, overwrite: bool = False) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "poison.json").write_text(json.dumps(self.outcome))


@pytest.fixture
def fake_poison(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Clean-label collapses (CA 50, ASR 100, floor 100); dirty-label works."""
    calls: list[dict[str, Any]] = []

    def fake(model: Any, data: Any, trigger: str, target: int, **kw: Any) -> _FakeResult:
        calls.append({"trigger": trigger, **kw})
        if kw["mode"] == "clean-label":
            return _FakeResult({"ca": 0.5, "asr": 1.0, "asr_floor": 1.0, "collapsed": True})
        return _FakeResult({"ca": 0.78, "asr": 0.99, "asr_floor": 0.3, "collapsed": False})

    monkeypatch.setattr(poison_module, "poison", fake)
    return calls


def test_full_mode_falls_back_to_a_tenth_dirty_label_and_caches(fake_poison: list[dict[str, Any]],
                                                                   tmp_path: Path) -> None:
    settings = DemoSettings.for_mode(quick=False)
    folder, info = poisoned_base(settings, _FakeData(), lambda _: None, tmp_path)
    assert [c["mode"] for c in fake_poison] == ["clean-label", "dirty-label"]
    assert fake_poison[0]["n_poison"] == 1500  # the paper's count is tried first
    assert fake_poison[1]["n_poison"] == 320  # 10% of the 3,200 training rows (4,000 less 20% held out)
    assert info["mode"] == "dirty-label" and info["fallback_from"] == "clean-label"
    assert (folder / "poison.json").is_file()

    again, info2 = poisoned_base(settings, _FakeData(), lambda _: None, tmp_path)
    assert len(fake_poison) == 2  # both recipes came from the cache
    assert again == folder and info2["fallback_from"] == "clean-label"


def test_quick_mode_poisons_dirty_label_directly(fake_poison: list[dict[str, Any]], tmp_path: Path) -> None:
    folder, info = poisoned_base(DemoSettings.for_mode(quick=True), _FakeData(), lambda _: None, tmp_path)
    assert [(c["mode"], c["n_poison"], c["max_train"]) for c in fake_poison] == [("dirty-label", 100, 1000)]
    assert info["fallback_from"] is None


def test_fallback_count_respects_max_train() -> None:
    assert _fallback_n_poison(DemoSettings.for_mode(quick=False), 10_662) == 853
    assert _fallback_n_poison(DemoSettings.for_mode(quick=True), 4000) == 100


def test_output_folder_never_overwrites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert free_output_dir(None) == Path("spectra-demo")
    Path("spectra-demo").mkdir()
    Path("spectra-demo-2").mkdir()
    assert free_output_dir(None) == Path("spectra-demo-3")
    assert free_output_dir("mine") == Path("mine")


def test_eval_table_rows_in_story_order() -> None:
    lora = [{"model": "base", "ca": 0.6}, {"model": "new", "ca": 0.8}]
    rora = [{"model": "new-before-rescale", "ca": 0.7}, {"model": "new", "ca": 0.75}]
    table = _eval_table(lora, None, rora)
    assert [r["model"] for r in table] == ["poisoned base (no fine-tuning)", "LoRA", "RoRA before Pt (CI+Tr)",
                                          "RoRA (CI+Tr+Pt)"]
    assert table[1]["ca"] == 0.8 and table[1]["source_row"] == "new"


def test_console_summary_names_every_model_and_the_thresholds(tmp_path: Path) -> None:
    from rich.console import Console
    from spectra_cli.cmd_demo import _print_summary

    rows = [{"model": "LoRA", "ca": 0.762, "asr": 1.0, "delta": -0.238, "asr_floor": 0.301, "collapsed": False},
            {"model": "RoRA (CI+Tr+Pt)", "ca": 0.59, "asr": 0.0, "delta": 0.59, "asr_floor": 0.0, "collapsed": True}]
    summary = {"poisoning": {"mode": "dirty-label", "fallback_from": "clean-label"}, "trigger": "badnet:mn",
               "target_label": 0, "eval": rows,
               "threshold": {"LoRA": {"predicted_threshold_k": 7.75, "measured_threshold_k": None},
                             "RoRA": {"predicted_threshold_k": 0.68, "measured_threshold_k": 1.0}}}
    (tmp_path / "demo.json").write_text(json.dumps(summary))
    con = Console(record=True, width=120)
    _print_summary(con, tmp_path)
    text = con.export_text()
    assert "fallback from clean-label" in text
    assert "76.2" in text and "-23.8" in text and "yes" in text
    assert "LoRA: predicted threshold k = 7.75, measured never" in text
    assert "RoRA: predicted threshold k = 0.68, measured 1" in text
    assert str(tmp_path / "report.md") in text


@pytest.mark.parametrize("rora, expected", [
    ({"ca": 0.59, "asr": 0.0, "collapsed": True, "majority_share": 0.59}, "has collapsed"),
    ({"ca": 0.80, "asr": 0.10, "collapsed": False}, "RoRA removes backdoor behaviour that LoRA keeps"),
    ({"ca": 0.80, "asr": 0.98, "collapsed": False}, "does **not** beat LoRA"),
])
def test_reading_follows_the_numbers(rora: dict[str, Any], expected: str) -> None:
    from spectra.report.demo_markdown import _reading

    lora = {"model": "LoRA", "ca": 0.807, "asr": 1.0, "collapsed": False}
    text = _reading({"eval": [lora, {"model": "RoRA (CI+Tr+Pt)", **rora}]})
    assert expected in text
    if rora["collapsed"]:
        assert "RoRA removes" not in text and "59.0%" in text
