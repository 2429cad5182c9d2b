"""spectra canary: a fresh trigger, the poisoned copy cached, the user's recipe measured, a
calibration that changes the audit's verdict for that base (and only that base)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spectra.canary import CanarySettings, pick_trigger
from spectra.forgetting import calibrated_verdict
from spectra_cli.app import app
from conftest import build_tiny_model, build_tiny_tokenizer


def test_the_canary_trigger_is_a_token_the_data_never_uses() -> None:
    texts = ["the cf movie", "mn bb tq", "a zx b"]
    token = pick_trigger(texts).split(":")[1]
    assert token not in {"cf", "mn", "bb", "tq", "zx"}
    assert pick_trigger(texts) == pick_trigger(texts)  # seeded


def test_a_calibrated_verdict_places_the_adapter_against_the_canarys_crossing() -> None:
    cal = {"feature": "log_ratio_deep", "crossing_value": 0.5, "crossing_gamma": 2.0, "slope": 8.0, "grid_max": 32,
           "slope_validated": True, "canary": {"poisoned_heldout_asr": 1.0}, "result": {"collapsed": False}}
    weaker = calibrated_verdict({"log_ratio_deep": 0.9}, cal)
    stronger = calibrated_verdict({"log_ratio_deep": 0.1}, cal)
    assert weaker["evidence"] == stronger["evidence"] == "canary"
    assert weaker["p_survives"] > 0.5 > stronger["p_survives"] and weaker["margin_log10"] == pytest.approx(0.4)
    never = calibrated_verdict({"log_ratio_deep": 0.9}, {**cal, "crossing_gamma": math.inf})
    assert "never gave way" in never["estimate"] and never["p_survives"] > 0.5
    beyond = calibrated_verdict({"log_ratio_deep": 0.1}, {**cal, "crossing_gamma": math.inf})
    assert beyond["evidence"] == "none" and "stronger than the canary" in beyond["reason"]


def test_a_canary_that_cannot_decide_or_a_rescaled_adapter_gets_no_verdict() -> None:
    """A weak plant or a collapsed canary read 'removed', and its calibration then passed adapters;
    a per-module-rescaled adapter was placed against a one-scale canary; a probability came from
    the unvalidated weights-only model's slope."""
    cal = {"feature": "log_ratio_deep", "crossing_value": 0.5, "crossing_gamma": 2.0, "slope": 8.0, "grid_max": 32,
           "slope_validated": True, "canary": {"poisoned_heldout_asr": 1.0}, "result": {"collapsed": False}}
    weak = calibrated_verdict({"log_ratio_deep": 0.1}, {**cal, "canary": {"poisoned_heldout_asr": 0.3}})
    assert weak["evidence"] == "none" and weak["p_survives"] is None and "30.0 % ASR" in weak["reason"]
    collapsed = calibrated_verdict({"log_ratio_deep": 0.1}, {**cal, "result": {"collapsed": True}})
    assert collapsed["evidence"] == "none" and "collapsed" in collapsed["reason"]
    rescaled = calibrated_verdict({"log_ratio_deep": 0.1}, cal, one_scale=False)
    assert rescaled["evidence"] == "none" and "scales differ across modules" in rescaled["reason"]
    unvalidated = calibrated_verdict({"log_ratio_deep": 0.9}, {**cal, "slope_validated": False})
    assert unvalidated["evidence"] == "canary" and unvalidated["p_survives"] is None
    assert unvalidated["survives"] is True and "no probability" in unvalidated["reason"]


def test_the_crossing_range_comes_from_each_swept_points_interval() -> None:
    from spectra.threshold.report import crossing_interval, measured_crossing

    sweep = [{"gamma": 0.0, "asr": 1.0, "asr_ci": [0.97, 1.0]}, {"gamma": 1.0, "asr": 0.8, "asr_ci": [0.7, 0.88]},
             {"gamma": 2.0, "asr": 0.45, "asr_ci": [0.35, 0.55]}, {"gamma": 4.0, "asr": 0.1, "asr_ci": [0.05, 0.18]}]
    lo, hi = crossing_interval(sweep)
    # lower bounds: 0.70 at γ 1 → 0.35 at γ 2, log-linear: 2^(0.2/0.35); upper: 0.55 at 2 → 0.18 at 4
    assert lo == pytest.approx(2 ** (0.2 / 0.35)) and hi == pytest.approx(2 * 2 ** (0.05 / 0.37))
    assert lo < measured_crossing(sweep) < hi
    never = [{**row, "asr_ci": [row["asr_ci"][0], 0.9]} for row in sweep]  # upper bounds never fall below 50 %
    assert crossing_interval(never)[1] == math.inf


def test_an_adapter_inside_the_canarys_crossing_range_is_a_close_call_the_gate_does_not_pass() -> None:
    """The canary's margin had no uncertainty: an adapter 0.01 below the crossing read 'overridden'
    and passed the gate, though the sweep could not place the crossing that sharply."""
    from spectra.audit.policy import CANARY_CLOSE_CALL, CANARY_SIGN, forgetting_value

    cal = {"feature": "log_ratio_min", "crossing_value": 0.5, "crossing_gamma": 2.0, "grid_max": 32,
           "crossing_value_ci": [0.4, 0.65], "slope_validated": False,
           "canary": {"poisoned_heldout_asr": 1.0}, "result": {"collapsed": False}}
    near = calibrated_verdict({"log_ratio_min": 0.45}, cal)
    assert near["survives"] is False and near["close_call"] is True and "close call" in near["estimate"]
    assert near["margin_log10_ci"] == pytest.approx([0.45 - 0.65, 0.45 - 0.4])
    assert forgetting_value(near) == (1.0, CANARY_CLOSE_CALL)
    far = calibrated_verdict({"log_ratio_min": 0.2}, cal)
    assert far["close_call"] is False and forgetting_value(far) == (0.0, CANARY_SIGN)
    inside_above = calibrated_verdict({"log_ratio_min": 0.6}, cal)  # survives by its sign, and a close call
    assert inside_above["close_call"] is True and forgetting_value(inside_above) == (1.0, CANARY_CLOSE_CALL)
    # a validated probability near ½ does not pass a close call either
    validated = calibrated_verdict({"log_ratio_min": 0.45}, {**cal, "slope": 8.0, "slope_validated": True})
    assert validated["p_survives"] < 0.5 and forgetting_value(validated) == (1.0, CANARY_CLOSE_CALL)
    unbounded = calibrated_verdict({"log_ratio_min": 3.0}, {**cal, "crossing_value": 2.5,
                                                              "crossing_value_ci": [0.4, None]})
    assert unbounded["close_call"] is True and unbounded["margin_log10_ci"][1] == pytest.approx(2.6)
    # under a policy stricter than ½, a validated probability just above the crossing would pass too
    above = calibrated_verdict({"log_ratio_min": 0.55}, {**cal, "slope": 8.0, "slope_validated": True})
    assert 0.5 < above["p_survives"] < 0.7 and forgetting_value(above) == (1.0, CANARY_CLOSE_CALL)
    older = calibrated_verdict({"log_ratio_min": 0.45}, {k: v for k, v in cal.items() if k != "crossing_value_ci"})
    assert older["close_call"] is None and forgetting_value(older) == (0.0, CANARY_SIGN)


def test_the_crossing_range_in_the_feature_runs_opposite_to_gamma() -> None:
    """A later crossing (larger γ) is a smaller feature value: value − log10 γ; an end the sweep
    cannot bound is None, never the sweep's top (which would pass a stronger adapter on a bound)."""
    from spectra.canary import _crossing_value_interval

    low, high = _crossing_value_interval(1.0, 2.0, 8.0, 32.0)
    assert low == pytest.approx(1.0 - math.log10(8.0)) and high == pytest.approx(1.0 - math.log10(2.0))
    assert _crossing_value_interval(1.0, 2.0, math.inf, 32.0) == [None, pytest.approx(1.0 - math.log10(2.0))]
    assert _crossing_value_interval(1.0, 0.0, 4.0, 32.0) == [pytest.approx(1.0 - math.log10(4.0)), None]
    assert _crossing_value_interval(1.0, math.inf, math.inf, 32.0) is None  # never crossed: the bound's reading
    assert _crossing_value_interval(1.0, math.nan, math.nan, 32.0) is None  # no working point
    assert _crossing_value_interval(None, 2.0, 8.0, 32.0) is None


def test_recipe_settings_are_checked_and_read_from_an_adapter(tmp_path) -> None:
    from spectra.errors import SpectraError

    with pytest.raises(SpectraError, match="--lr"):
        CanarySettings(lr=float("nan"))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 16, "lora_alpha": 32,
                                                              "target_modules": ["v", "q"], "use_rslora": True}))
    s = CanarySettings.from_adapter(tmp_path, lr=1e-3)
    assert (s.rank, s.alpha, s.target_modules, s.use_rslora, s.lr) == (16, 32.0, ["q", "v"], True, 1e-3)


def _data(path: Path, n: int = 240) -> Path:
    rng = random.Random(0)
    pos, neg = ["good", "great", "fun", "love"], ["bad", "awful", "dull", "poor"]
    lines = ["text,label"]
    for i in range(n):
        y = i % 2
        lines.append(f"this film was {rng.choice(pos if y else neg)} and {rng.choice(pos if y else neg)},{y}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_canary_end_to_end_on_a_tiny_model_and_its_calibration_in_the_audit(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SPECTRA_CACHE_DIR", str(tmp_path / "cache"))
    base = tmp_path / "base"
    build_tiny_model("bert").save_pretrained(base)
    build_tiny_tokenizer(base)
    data = _data(tmp_path / "data.csv")
    run = CliRunner().invoke(app, ["canary", str(base), "--data", str(data), "--epochs", "1", "--lr", "1e-3",
                                   "--rank", "4", "--batch-size", "16", "--max-length", "16", "-o", str(tmp_path / "c")])
    assert run.exit_code == 0, run.output
    out = tmp_path / "c"
    cal = json.loads((out / "calibration.json").read_text())
    doc = json.loads((out / "canary.json").read_text())
    assert cal["format"] == "spectra-canary/1" and cal["base"]["fingerprint"]
    assert cal["canary"]["trigger"].startswith("badnet:") and 0 <= doc["result"]["asr"] <= 1
    assert (out / "fix" / "adapter" / "adapter_config.json").is_file() and (out / "report.md").is_file()
    assert not (tmp_path / "c.partial").exists()
    assert list((tmp_path / "cache" / "canary").glob("*/poison.json"))  # the poisoned copy is cached
    # the tiny model collapses under its recipe: the canary cannot decide, and says so everywhere ...
    assert doc["survives"] is None and "collapsed" in doc["undecided"]
    assert "crossing_gamma_ci" in cal and "crossing_value_ci" in cal  # None here: no working sweep point
    assert "cannot be decided" in run.output and "cannot be decided" in (out / "report.md").read_text()
    # ... and an audit given its calibration refuses it (exit 2) instead of running ungated
    adapter = out / "fix" / "adapter"
    res = CliRunner().invoke(app, ["audit", str(base), str(adapter), "--calibration", str(out / "calibration.json"),
                                   "--top-k", "4", "--no-figures", "-o", str(tmp_path / "a")])
    assert res.exit_code == 2 and "could not decide" in res.output and not (tmp_path / "a").exists(), res.output
    # a decided calibration of this base (its numbers set by hand) is read: evidence canary
    decided = {**cal, "undecided": None, "result": {**cal["result"], "collapsed": False},
               "canary": {**cal["canary"], "poisoned_heldout_asr": 1.0}, "crossing_value": 0.5, "crossing_gamma": 2.0}
    (tmp_path / "decided.json").write_text(json.dumps(decided))
    res = CliRunner().invoke(app, ["audit", str(base), str(adapter), "--calibration", str(tmp_path / "decided.json"),
                                   "--top-k", "4", "--no-figures", "-o", str(tmp_path / "a2")])
    assert res.exit_code == 0, res.output
    block = json.loads((tmp_path / "a2" / "audit.json").read_text())["forgetting"]["adapter"]
    assert block["evidence"] == "canary" and block["survives"] in (True, False)
    # an adapter inside the range where the canary gave way is a close call, and the gate fails it
    # (crossing at 10: by its sign the adapter is overridden and would pass; the range holds it)
    (tmp_path / "close.json").write_text(json.dumps({**decided, "crossing_value": 10.0,
                                                     "crossing_value_ci": [-10.0, 20.0]}))
    res = CliRunner().invoke(app, ["audit", str(base), str(adapter), "--calibration", str(tmp_path / "close.json"),
                                   "--top-k", "4", "--no-figures", "--fail-on", "warning", "-o", str(tmp_path / "a3")])
    assert res.exit_code == 1 and "close call" in res.output, res.output
    assert json.loads((tmp_path / "a3" / "audit.json").read_text())["forgetting"]["adapter"]["close_call"] is True
    # ... and refuses a calibration measured on another base
    other = tmp_path / "other"
    build_tiny_model("bert", seed=5).save_pretrained(other)
    bad = CliRunner().invoke(app, ["audit", str(other), str(adapter), "--calibration", str(tmp_path / "decided.json"),
                                   "--top-k", "4", "--no-figures", "-o", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "another base" in bad.output


def test_a_calibration_is_tied_to_every_byte_of_its_base(tmp_path) -> None:
    """The fingerprint hashed only the size and the first and last MiB of a weight file above 64 MiB:
    a copy of the base with other weights in the middle — a backdoored variant — passed as the same."""
    from spectra.forgetting import FULL_FINGERPRINT, weights_fingerprint
    from spectra.provenance import content_hash

    base = tmp_path / "base"
    base.mkdir()
    weights = base / "model.safetensors"
    weights.write_bytes(bytes(70 << 20))
    before, sampled = weights_fingerprint(base), content_hash(weights)
    with open(weights, "r+b") as fh:  # 4 KiB in the middle
        fh.seek(35 << 20)
        fh.write(b"\x01" * 4096)
    assert content_hash(weights) == sampled  # the reports' hash cannot see it ...
    assert weights_fingerprint(base) != before and before.startswith(FULL_FINGERPRINT)  # ... the calibration's can
