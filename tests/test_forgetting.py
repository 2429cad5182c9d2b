"""The forgetting verdict: features from audit rows, the model's scope, the evidence table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from spectra.forgetting import FEATURES, adapter_verdict, architecture_key, features, predict, verdict

MODEL = {"features": ["log_ratio_deep"], "mean": [0.2], "scale": [0.3], "coef": [2.6], "intercept": -0.1,
         "validated": True, "validation": {"poisoned base": {"auroc": 0.89}},
         "scope": {"architectures": ["bert-6L-384"], "ranges": {"log_ratio_deep": [-0.3, 1.3]}}}


def rows(ratios: list[float], layers: list[int], kind: str = "lora") -> list[dict]:
    return [{"ratio": r, "layer": x, "cos_max_left": 0.1, "cos_max_right": 0.2, "overlap": 0.05,
             "update_kind": kind} for r, x in zip(ratios, layers)]


def test_features_read_the_deeper_half_and_divide_ratios_by_gamma() -> None:
    f = features(rows([1.0, 10.0, 100.0, 1000.0], [0, 1, 4, 5]))
    assert f["log_ratio_min"] == 0.0 and f["log_ratio_max"] == 3.0
    assert f["log_ratio_deep"] == pytest.approx(math.log10(550.0))  # median of the layers ≥ the median layer
    assert f["cos_max"] == 0.2 and f["overlap_median"] == 0.05
    assert features(rows([10.0, 100.0], [0, 1]), gamma=10.0)["log_ratio_min"] == 0.0
    assert features(rows([math.inf], [0]))["log_ratio_min"] == 6.0  # a zero update: the cap, not ∞


def test_the_verdict_is_given_only_inside_its_validated_scope() -> None:
    inside = features(rows([1.0, 1.0], [0, 5]))
    block = verdict(inside, "bert-6L-384", model=MODEL)
    assert block["evidence"] == "weights-only" and block["p_survives"] == pytest.approx(predict(MODEL, inside))
    weak = verdict(features(rows([10.0, 15.0], [0, 5])), "bert-6L-384", model=MODEL)
    assert weak["p_survives"] > 0.5 > block["p_survives"] and "survive" in weak["estimate"]
    other = verdict(inside, "llama-30L-576", model=MODEL)
    assert other["evidence"] == "none" and other["p_survives"] is None and "architecture" in other["reason"]
    far = verdict(features(rows([500.0, 500.0], [0, 5])), "bert-6L-384", model=MODEL)
    assert far["p_survives"] is None and "outside the validated range" in far["reason"]
    failed = verdict(inside, "bert-6L-384", model={**MODEL, "validated": False, "validation_note": "AUROC 0.6"})
    assert failed["p_survives"] is None and "AUROC 0.6" in failed["reason"]
    assert adapter_verdict(rows([3.0], [0], kind="full"), "bert-6L-384")["evidence"] == "none"


def test_an_adapter_rescaled_per_module_gets_no_weights_only_estimate() -> None:
    """Pt (spectra fix) gives each module its own LoRA scale; the study measured the model near chance
    on such adapters, so the verdict says so instead of a P(survives) — the gate never passes on it."""
    model = {**MODEL, "scope": {**MODEL["scope"], "one_scale": {"n": 94, "n_pos": 17, "n_adapters": 40,
                                                                "auroc": [0.58, 0.49, 0.67], "false_pass": 0.8}}}
    same = [{**r, "scale": 2.0} for r in rows([1.0, 1.0], [0, 5])]
    block = adapter_verdict(same, "bert-6L-384")
    assert block["evidence"] in ("weights-only", "none")  # whatever the committed model says, scale is not why
    assert "scales differ" not in (block.get("reason") or "")
    mixed = [{**r, "scale": s} for r, s in zip(rows([1.0, 1.0], [0, 5]), (2.0, 11.5))]
    feats = features(mixed)
    assert verdict(feats, "bert-6L-384", model=model, one_scale=True)["evidence"] == "weights-only"
    out = verdict(feats, "bert-6L-384", model=model, one_scale=False)
    assert out["p_survives"] is None and "scales differ across modules" in out["reason"]
    assert "AUROC was 0.58 [0.49, 0.67]" in out["reason"]
    assert verdict(feats, "bert-6L-384", model=MODEL, one_scale=False)["evidence"] == "weights-only"  # no evidence


def test_architecture_keys_name_depth_and_width() -> None:
    assert architecture_key({"model_type": "bert", "num_hidden_layers": 6, "hidden_size": 384}) == "bert-6L-384"
    assert architecture_key({"model_type": "gpt2", "n_layer": 12, "n_embd": 768}) == "gpt2-12L-768"


def test_the_committed_model_file_is_the_one_the_evidence_table_fits() -> None:
    """spectra/forgetting_model.json and docs/study/forgetting.csv regenerate from the committed
    results: refitting on the table's rows gives the same coefficients."""
    import csv

    from reproduction.forgetting_stats import fit_model

    root = Path(__file__).resolve().parent.parent
    model = json.loads((root / "spectra" / "forgetting_model.json").read_text())
    with open(root / "docs" / "study" / "forgetting.csv", encoding="utf-8") as fh:
        table = [r for r in csv.DictReader(fh) if r["model"] == "minilm" and r["stage"] != "sweep"
                 and r["scales"] == "one"]  # the scope: adapters with one LoRA scale
    for r in table:
        r["survives"] = r["survives"] == "True"
        for f in FEATURES:
            r[f] = float(r[f])
    fitted, _ = fit_model([r for r in table if all(math.isfinite(r[f]) for f in FEATURES)], FEATURES)
    assert list(fitted.features) == model["features"]
    assert fitted.coef.tolist() == pytest.approx(model["coef"], rel=1e-6)
    assert fitted.intercept == pytest.approx(model["intercept"], rel=1e-6)


def test_audit_json_carries_a_forgetting_block_per_adapter(tiny_model_dir, tiny_adapter_dir, tmp_path) -> None:
    from spectra.audit import audit

    base = tiny_model_dir("bert")
    adapter = tiny_adapter_dir(base, target_modules=["query", "value"])
    report = audit(base, [adapter], top_k=4, cache_dir=False)
    block = report.forgetting()[report.adapters[0]]
    # a 2-layer test BERT is not the architecture the evidence holds: no extrapolation
    assert block["evidence"] == "none" and "architecture bert-" in block["reason"]
    report.write(tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert doc["forgetting"][report.adapters[0]]["estimate"] == "no validated estimate"
    assert "Will a backdoor in the base survive" in (tmp_path / "out" / "report.md").read_text()


def test_on_real_minilm_the_audit_says_what_the_committed_model_supports(tmp_path) -> None:
    """The architecture the evidence holds: a LoRA adapter on all-MiniLM-L6-v2 gets a weights-only
    estimate when the committed model passed its validation, and otherwise "no validated estimate"
    with the validation's own reason; either way the fitted model ranks a weaker adapter (its update
    scaled down) as more likely to keep the backdoor."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    from spectra.audit import audit
    from spectra.forgetting import load_model, verdict
    from spectra.io.zoo import minilm_path

    base = minilm_path()
    fitted = load_model()
    probs = []
    for name, size in (("strong", 0.15), ("weak", 0.02)):
        model = get_peft_model(AutoModel.from_pretrained(base), LoraConfig(r=8, lora_alpha=16,
                                                                           target_modules=["query", "value"]))
        gen = torch.Generator().manual_seed(0)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.data = torch.randn(p.shape, generator=gen) * size
        model.save_pretrained(tmp_path / name)
        report = audit(str(base), [tmp_path / name], top_k=32, cache_dir=False)
        block = report.forgetting()[name]
        if fitted["validated"]:
            assert block["evidence"] == "weights-only", block
        else:
            assert block["evidence"] == "none" and block["p_survives"] is None, block
            assert "did not pass its validation" in block["reason"] and fitted["validation_note"] in block["reason"]
        probs.append(predict(fitted, block["features"]))
    assert 0 < probs[0] < probs[1] < 1
    # weaker than the weakest adapter of the evidence: no estimate at all, validated or not
    report = audit(str(base), [tmp_path / "weak"], top_k=32, cache_dir=False)
    far = {**report.forgetting()["weak"]["features"]}
    feature = fitted["features"][0]
    far[feature] = fitted["scope"]["ranges"][feature][1] + 0.5
    assert "outside the validated range" in verdict(far, "bert-6L-384", model={**fitted, "validated": True})["reason"]


def test_auroc_values_and_held_out_scores_from_the_other_folds() -> None:
    import numpy as np

    from reproduction.forgetting_stats import auroc, cluster_bootstrap, grouped_cv

    assert auroc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0 and auroc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5
    assert auroc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0 and math.isnan(auroc([1, 2], [1, 1]))
    # base "b" stores the feature negated (survives for f ≥ -4): held out, it is still scored by the
    # direction the other bases chose, so the pooled out-of-fold ranking is not perfect
    rows = []
    for base, sign in (("a", 1), ("b", -1), ("c", 1)):
        for i in range(10):
            x = float(i)
            rows.append({"base": base, "group": f"{base}{i}", "survives": (x >= 5) == (sign > 0), "f": sign * x,
                         **{k: 0.0 for k in FEATURES}})
    res = grouped_cv(rows, "base", ["f"], multi_features=["f"])
    single = res["scores"]["single"]
    y = np.array([r["survives"] for r in rows])
    in_b = np.array([r["base"] == "b" for r in rows])
    assert auroc(single[in_b], y[in_b]) == 1.0 and auroc(single[~in_b], y[~in_b]) == 1.0
    assert auroc(single, y) < 1.0  # the folds' scores are not on one scale: pooling costs rank
    lo, hi = cluster_bootstrap(lambda idx: float(np.mean(y[idx])), [r["group"] for r in rows], n=200)
    assert lo < 0.5 < hi


def test_a_canary_evidence_run_becomes_trained_and_sweep_rows(tmp_path, monkeypatch) -> None:
    """reproduction.canary_evidence writes a canary run in the study's record shapes; the
    evidence table reads it like any other run (labels from the canary's own measurements,
    sweep rows with each ratio divided by γ), labelled with the quick canary's regime."""
    import spectra.study.records as records
    from reproduction.canary_evidence import _documents, run_id
    from spectra.study.evidence import UserRecipe
    from reproduction.forgetting import evidence_rows

    modules = [{"module": f"l{i}.q", "layer": i, "module_type": "q_proj", "ratio": 10.0 * (i + 1),
                "cos_max_left": 0.2, "cos_max_right": 0.3, "overlap": 0.1, "sigma_pre": 5.0, "sigma_delta": 0.5}
               for i in range(4)]
    monkeypatch.setattr(records, "audit_summary", lambda base, adapter, top_k: {"modules_table": modules})
    (tmp_path / "fix").mkdir()
    (tmp_path / "fix" / "train_log.csv").write_text("epoch,step,loss,val_ca\n1,10,0.6,0.70\n2,20,0.4,0.80\n"
                                                    "3,30,0.3,0.80\n")
    recipe = UserRecipe(2e-4, 3)
    result = {"seconds": 60.0, "recipe": {"batch_size": 32}, "crossing_gamma": 4.0,
              "canary": {"poisoned_test_asr": 0.97, "poisoned_copy": str(tmp_path / "poisoned")},
              "result": {"ca": 0.81, "asr": 0.9, "asr_floor": 0.1, "collapsed": False},
              "sweep": [{"gamma": g, "ca": 0.8, "asr": a, "asr_floor": 0.1, "collapsed": False}
                        for g, a in ((0.0, 0.97), (1.0, 0.9), (2.0, 0.7), (4.0, 0.3))]}
    docs = _documents("smollm2", recipe, result, tmp_path)
    rows = evidence_rows({d["id"]: d for d in docs})
    assert [r["stage"] for r in rows] == ["sweep", "sweep", "trained"]
    trained = rows[-1]
    assert trained["group"] == run_id("smollm2", recipe) and trained["base"] == "smollm2/canary/b0"
    assert trained["recipe"] == "canary-quick-e3-r8-qv" and trained["budget"] == "3 epochs at lr 0.0002"
    assert trained["survives"] and trained["n_modules"] == 4
    by_gamma = {r["gamma"]: r for r in rows[:2]}
    assert by_gamma[2.0]["survives"] and not by_gamma[4.0]["survives"]  # ASR 70 % → 30 %
    assert by_gamma[4.0]["log_ratio_min"] == pytest.approx(trained["log_ratio_min"] - math.log10(4.0))


def test_each_pt_variant_is_one_more_labelled_adapter_with_its_ratios_divided() -> None:
    """The Pt grid's variants join the evidence table: the trained adapter's audit rows with each
    rescaled module's ratio divided by its multiplier; equal variants and no-ops add no row."""
    from reproduction.forgetting import evidence_rows

    table = [{**r, "module": f"m{i}"} for i, r in enumerate(rows([100.0, 100.0, 100.0, 100.0], [0, 1, 4, 5]))]
    doc = {"id": "minilm__badnet__b0__finetune__lora__s0__lr0.002", "lr": 2e-3,
           "run": {"kind": "finetune", "model": "minilm", "attack": "badnet", "base_seed": 0, "method": "lora",
                   "seed": 0}, "config": {"epochs": 20, "rank": 8}, "audit": {"modules_table": table},
           "eval": {"new": {"ca": 0.84, "asr": 0.9}}}
    grid = {"grid": [
        {"depth": 1, "mode": "match", "multipliers": {"m3": 10.0}, "same_as_trained": False,
         "eval": {"ca": 0.8, "asr": 0.6, "asr_ci": [0.55, 0.65]}},
        {"depth": 3, "mode": "match", "multipliers": {"m2": 10.0, "m3": 10.0}, "same_as_trained": False,
         "eval": {"ca": 0.8, "asr": 0.2, "collapsed": False}},
        {"depth": "half", "mode": "match", "multipliers": {"m2": 10.0, "m3": 10.0}, "same_as_trained": False,
         "eval": {"ca": 0.8, "asr": 0.2}},  # the top 3 again: no second row
        {"depth": 1, "mode": "amplify", "multipliers": {}, "same_as_trained": True, "eval": {"ca": 0.84, "asr": 0.9}},
    ]}
    out = {r["row"]: r for r in evidence_rows({doc["id"]: doc}, {doc["id"]: grid}) if r["stage"] == "pt_grid"}
    assert sorted(out) == [f"{doc['id']}:pt_grid@1-match", f"{doc['id']}:pt_grid@3-match"]
    top1, top3 = out[f"{doc['id']}:pt_grid@1-match"], out[f"{doc['id']}:pt_grid@3-match"]
    assert top1["log_ratio_min"] == pytest.approx(1.0) and top1["survives"] and top1["close_call"] is False
    assert top3["log_ratio_deep"] == pytest.approx(1.0) and not top3["survives"]  # the deep half: both ÷ 10
    assert top3["group"] == doc["id"]  # cross-validation keeps the variants with their adapter
