"""Inputs an attacker (or a careless user) can hand the gate, found by a hostile review: each of
these passed the gate (exit 0) or blamed spectra for the user's mistake before its fix."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_gate_safety import K, _rewrite_adapter, one_error, run


@pytest.fixture
def pair(tiny_model_dir, tiny_adapter_dir) -> tuple[Path, Path]:
    base = tiny_model_dir("bert")
    return base, tiny_adapter_dir(base, target_modules=["query", "value"])


def _empty_adapter(adapter: Path, folder: Path) -> Path:
    from safetensors.torch import save_file

    folder.mkdir()
    (folder / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text())
    save_file({}, folder / "adapter_model.safetensors")
    return folder


def test_an_adapter_with_nothing_to_audit_beside_a_good_one_stops_the_gate(pair, tmp_path) -> None:
    base, good = pair
    empty = _empty_adapter(good, tmp_path / "empty")
    res = run("audit", base, good, empty, "--max-ratio", "100", "-o", tmp_path / "out", *K)
    assert res.exit_code == 3, res.output  # "nothing was audited" — for that adapter — not a pass
    assert str(empty) in res.output and not (tmp_path / "out").exists()


@pytest.mark.parametrize("pyproject", [
    '[tool]\nspectra = { fail-on = "error", rules = { ratio = { max = 0.0001 } } }\n',  # a dotted inline table
    '[ tool.spectra ]\nfail-on = "error"\n[ tool.spectra.rules.ratio ]\nmax = 0.0001\n',  # spaces in the header
])
def test_a_policy_in_pyproject_is_found_however_its_toml_spells_it(pair, tmp_path, monkeypatch, pyproject) -> None:
    base, adapter = pair
    work = tmp_path / "project"
    work.mkdir()
    (work / "pyproject.toml").write_text(pyproject)
    monkeypatch.chdir(work)
    res = run("audit", base, adapter, "-o", tmp_path / "out", *K)
    assert res.exit_code == 1, res.output  # every ratio is above 0.0001: the policy was read and fired


@pytest.mark.parametrize("kind", ["folder", "dangling link"])
def test_a_spectra_toml_that_is_not_a_readable_file_is_an_error_not_no_policy(pair, tmp_path, monkeypatch,
                                                                             kind) -> None:
    base, adapter = pair
    work = tmp_path / "project"
    work.mkdir()
    if kind == "folder":
        (work / "spectra.toml").mkdir()
    else:
        os.symlink(tmp_path / "nowhere.toml", work / "spectra.toml")
    monkeypatch.chdir(work)
    one_error(run("audit", base, adapter, "-o", tmp_path / "out", *K), "spectra.toml")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("policy", "words"), [
    ('[rules.ratio.module-types]\nqurey = 0.0001\n', "rules.ratio.module-types ['qurey'] match no audited module"),
    ('[rules.forgetting]\nmax = 0.0\nseverity = "error"\n', "rules.forgetting: no adapter had a validated"),
])
def test_a_rule_that_judged_nothing_is_named_and_the_gate_says_it_gated_nothing(pair, tmp_path, monkeypatch,
                                                                               policy, words) -> None:
    base, adapter = pair
    (tmp_path / "spectra.toml").write_text(policy)
    monkeypatch.chdir(tmp_path)
    res = run("audit", base, adapter, "-o", tmp_path / "out", *K)
    assert res.exit_code == 0
    assert f"warning: {words}" in res.output and "so nothing is gated" in res.output, res.output


def test_a_fleet_policys_type_for_another_architecture_is_named_but_the_rest_still_gates(pair, tmp_path,
                                                                                        monkeypatch) -> None:
    base, adapter = pair
    (tmp_path / "spectra.toml").write_text('[rules.ratio.module-types]\nq_proj = 5.0\nquery = 0.0001\n')
    monkeypatch.chdir(tmp_path)
    res = run("audit", base, adapter, "-o", tmp_path / "out", *K)
    assert res.exit_code == 1 and "['q_proj'] match no audited module" in res.output
    assert "nothing is gated" not in res.output


def test_lora_factors_fitting_only_the_transposed_linear_weight_are_refused(tiny_model_dir, tiny_adapter_dir,
                                                                           tmp_path) -> None:
    base = tiny_model_dir("bert")
    adapter = tiny_adapter_dir(base, target_modules=["intermediate.dense"])  # (inter, hidden): not square
    # A' = Bᵀ, B' = Aᵀ: B'·A' = (B·A)ᵀ fits W_preᵀ's shape — PEFT refuses to load it
    _rewrite_adapter(adapter, lambda t: {k: (t[k.replace("lora_A", "lora_B")].T.contiguous() if "lora_A" in k
                                             else t[k.replace("lora_B", "lora_A")].T.contiguous()) for k in t})
    one_error(run("audit", base, adapter, "-o", tmp_path / "out", *K), "transpose", "Conv1D")


@pytest.mark.parametrize(("config", "words"), [
    ({"rank_pattern": ["query"]}, ["rank_pattern", "must map"]),
    ({"alpha_pattern": {"(": 4}}, ["alpha_pattern", "regular expression"]),
])
def test_config_patterns_peft_would_trip_over_are_one_true_line(pair, tmp_path, config, words) -> None:
    base, adapter = pair
    _rewrite_adapter(adapter, edit_config=lambda cfg: {**cfg, **config})
    one_error(run("audit", base, adapter, "-o", tmp_path / "out", *K), "adapter_config.json", *words)


def test_a_threshold_too_large_for_a_float_is_one_true_line(pair, tmp_path) -> None:
    base, adapter = pair
    policy = tmp_path / "p.toml"
    policy.write_text(f"[rules.ratio]\nmax = {'9' * 320}\n")
    one_error(run("audit", base, adapter, "--policy", policy, "-o", tmp_path / "out", *K), "too large")


@pytest.mark.parametrize(("edit", "words"), [({"slope": "steep"}, "slope"), ({"feature": 3}, "feature"),
                                            ({"crossing_value_ci": [0.9, 0.1]}, "crossing_value_ci"),
                                            ({"crossing_value_ci": "wide"}, "crossing_value_ci"),
                                            ({"crossing_value_ci": [0, 10 ** 400]}, "crossing_value_ci"),
                                            ({"slope": 10 ** 400}, "slope")])
def test_a_hand_edited_calibration_is_one_true_line(pair, tmp_path, edit, words) -> None:
    from spectra.canary import FORMAT

    base, adapter = pair
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps({"format": FORMAT, "base": {"fingerprint": "x"}, "feature": "log_ratio_min",
                               "crossing_value": 0.1, **edit}))
    one_error(run("audit", base, adapter, "--calibration", cal, "-o", tmp_path / "out", *K), words)


def test_an_update_near_float32s_top_still_has_its_overlap(pair, tmp_path) -> None:
    from spectra.audit import AuditSettings, audit

    base, adapter = pair
    _rewrite_adapter(adapter, lambda t: {k: (v * 1e37 if "lora_B" in k else v) for k, v in t.items()})
    rows = audit(str(base), [str(adapter)], AuditSettings(top_k=4, device="cpu"), cache_dir=False).rows
    assert rows and all(0.0 <= r["overlap"] <= 1.0 for r in rows)  # was NaN: σ² overflowed to ∞
    assert all(1e36 < r["frobenius_delta"] < 1e39 for r in rows)


@pytest.fixture
def zero_base(tiny_model_dir, tiny_adapter_dir) -> tuple[Path, Path]:
    """A base whose layer-0 query weight is all zeros, and a query-only adapter on it."""
    from safetensors.torch import load_file, save_file

    base = tiny_model_dir("bert")
    adapter = tiny_adapter_dir(base, target_modules=["query"])
    weights = load_file(base / "model.safetensors")
    key = next(k for k in weights if k.endswith("layer.0.attention.self.query.weight"))
    weights[key] = weights[key] * 0
    save_file(weights, base / "model.safetensors", metadata={"format": "pt"})
    return base, adapter


def test_a_zero_base_weight_leaves_cosines_undefined_and_a_cos_rule_cannot_pass(zero_base, tmp_path) -> None:
    base, adapter = zero_base
    res = run("audit", base, adapter, "--max-cos", "0.99", "-o", tmp_path / "out", *K)
    one_error(res, "cos rule's measure is NaN")
    res = run("audit", base, adapter, "--json", "-o", tmp_path / "out2", *K)
    assert res.exit_code == 0 and "is zero, so its top-k directions are arbitrary" in res.output


def test_a_zero_base_weight_stops_a_scan_with_a_cos_rule_as_it_stops_an_audit(zero_base, tmp_path) -> None:
    """scan builds its rows in batches; it gave a zero base weight's module cos 0.27 and overlap 0.11
    (the basis of a zero matrix is arbitrary), so its gate passed where audit's could not."""
    base, adapter = zero_base
    policy = tmp_path / "policy.toml"
    policy.write_text('fail-on = "note"\n[rules.cos]\nmax = 0.99\n')
    res = run("scan", adapter, "--base", base, "--engine", "local", "--policy", policy, "--top-k", "4", "-o",
              tmp_path / "scan")
    assert res.exit_code == 1, res.output  # was 0: cos 0.27 on a zero weight, under the rule's 0.99
    report = (tmp_path / "scan" / "report.md").read_text()
    assert "| error | unaudited |" in report and "query: the cos rule's measure is NaN" in report
    pq = pytest.importorskip("pyarrow.parquet", reason="spectra scan writes Parquet (pyarrow, in the fleet extra)")

    modules = pq.read_table(tmp_path / "scan" / "modules").to_pylist()
    zero = next(m for m in modules if "layer.0." in m["module"])
    assert zero["cos_max_left"] is None and zero["overlap"] is None  # undefined (was 0.27 and 0.11)


def test_a_zero_update_has_no_direction_and_the_summaries_and_rules_leave_it_out(pair, tmp_path) -> None:
    """A module whose update is zero (an untouched saved head, a B of zeros) got cos 0 and overlap 0,
    which entered the medians; it has no direction, so they are undefined, and a cos rule has
    nothing there to judge (its ratio, ∞, is what the ratio rule reports)."""
    from spectra.audit import AuditSettings, audit
    from spectra.audit.report import summary_rows

    base, adapter = pair
    _rewrite_adapter(adapter, lambda t: {k: (v * 0 if "lora_B" in k and "layer.0.attention.self.query" in k else v)
                                         for k, v in t.items()})
    rows = audit(str(base), [str(adapter)], AuditSettings(top_k=4, device="cpu"), cache_dir=False).rows
    zero = [r for r in rows if r["sigma_delta"] == 0]
    assert len(zero) == 1 and all(zero[0][k] != zero[0][k] for k in ("cos_max_left", "cos_max_right", "overlap"))
    live = [r for r in rows if r["sigma_delta"] > 0]
    import statistics

    assert summary_rows(rows)[0]["overlap_median"] == pytest.approx(statistics.median(r["overlap"] for r in live))
    res = run("audit", base, adapter, "--max-cos", "0.999", "-o", tmp_path / "out", *K)
    assert res.exit_code == 0, res.output  # nothing aligned above 0.999, and the zero update is not an error


@pytest.mark.parametrize("command", ["threshold", "fix"])
def test_a_pickle_adapter_is_refused_without_naming_a_flag_the_command_lacks(pair, tmp_path, command) -> None:
    """The message said 'read only with --allow-pickle' to threshold and fix users, whose commands
    have no such option ('No such option' when they tried it)."""
    import torch
    from safetensors.torch import load_file

    base, adapter = pair
    st = adapter / "adapter_model.safetensors"
    torch.save(load_file(st), adapter / "adapter_model.bin")
    st.unlink()
    csv = tmp_path / "d.csv"
    csv.write_text("text,label\n" + "".join(f"good movie {i},{i % 2}\n" for i in range(40)))
    args = {"threshold": ["threshold", base, adapter, "--data", csv, "--trigger", "badnet:mn"],
            "fix": ["fix", base, "--rescale-only", "--adapter", adapter]}[command]
    res = run(*args, "-o", tmp_path / "out")
    line = one_error(res, "save it as safetensors", "where the command offers it (audit, eval")
    assert not (tmp_path / "out").exists(), line


def test_the_nothing_is_gated_note_is_not_printed_when_the_default_forgetting_rule_can_fail() -> None:
    """With a canary calibration (an estimate for each adapter) at --fail-on warning, the default
    forgetting rule failed the gate (exit 1) and the audit then printed 'nothing is gated'."""
    from spectra.audit.policy import resolve_policy

    from spectra.forgetting import calibrated_verdict

    cal = {"feature": "log_ratio_min", "crossing_value": 0.5, "crossing_gamma": 2.0, "slope": 8.0, "grid_max": 32,
           "slope_validated": False, "canary": {"poisoned_heldout_asr": 1.0}, "result": {"collapsed": False}}
    weak, strong = calibrated_verdict({"log_ratio_min": 0.9}, cal), calibrated_verdict({"log_ratio_min": 0.1}, cal)
    assert weak["p_survives"] is None and weak["survives"] is True  # no probability from an unvalidated slope ...
    policy = resolve_policy(None, fail_on="warning", search_from=None)
    found = policy.forgetting_findings({"weak": weak, "strong": strong})
    assert [f.adapter for f in found] == ["weak"] and "the canary's sign" in found[0].message()  # ... yet it gates
    assert policy.failing(found) and policy.inactive_notice([{"module_type": "query"}], {"weak": weak}) is None
    assert "nothing is gated" in policy.inactive_notice([{"module_type": "query"}], {"a": {"p_survives": None}})[1]
