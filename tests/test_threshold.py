"""spectra.threshold on tiny models: module choice and σ's against dense references, and the
command end to end (the closed form on linear models is in test_threshold_math.py)."""

from __future__ import annotations

import math

import pytest
import torch

from spectra.errors import SpectraError
from spectra.threshold import measured_threshold_working

# --------------------------------------------------------------------------- module choice and σ's


def _sigma_max(W: torch.Tensor) -> float:
    return float(torch.linalg.svdvals(W.double())[0])


def _adapter_with_trained_head(base, folder, seed: int = 3, head_noise: float = 0.5, **lora_kwargs):
    """A LoRA (random A and B) whose modules_to_save head differs from the base head, as after training."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    lora_kwargs.setdefault("target_modules", ["query", "value"])
    model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, modules_to_save=["classifier"],
                                      **lora_kwargs))
    head = model.base_model.model.classifier.modules_to_save["default"]
    with torch.no_grad():
        head.weight.add_(head_noise * torch.randn_like(head.weight))
    model.save_pretrained(folder)
    return folder


def test_module_choice_and_sigmas_match_dense_references(tiny_model_dir, tiny_adapter_dir) -> None:
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from spectra.io import load_adapter, open_base
    from spectra.threshold import choose_module, module_sigmas

    base = tiny_model_dir("bert")
    with_head = _adapter_with_trained_head(base, base.parent / "with-head")
    no_head = tiny_adapter_dir(base, name="no-head", target_modules=["query", "value"])
    base_model = AutoModelForSequenceClassification.from_pretrained(base)
    W_head = base_model.classifier.weight.detach()
    peft_model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base), with_head)
    saved = peft_model.base_model.model.classifier.modules_to_save["default"].weight.detach()

    with open_base(base) as ckpt, load_adapter(with_head, ckpt) as ad:
        m, why = choose_module(ad.modules)
        assert m.name.endswith("classifier") and "head" in why
        sp, sd = module_sigmas(m, ckpt)
        assert sp == pytest.approx(_sigma_max(W_head), rel=1e-5)
        assert sd == pytest.approx(_sigma_max(saved - W_head), rel=1e-5)
        assert sd > 0.1
        picked, _ = choose_module(ad.modules, r"layer\.0\..*query")
        assert picked.name.endswith("layer.0.attention.self.query")
        with pytest.raises(SpectraError, match="matches no adapted module"):
            choose_module(ad.modules, "nonexistent_module")

    with open_base(base) as ckpt, load_adapter(no_head, ckpt) as ad:
        m, why = choose_module(ad.modules)
        assert m.name.endswith("layer.1.attention.self.value") and "nearest the output" in why
        sp, sd = module_sigmas(m, ckpt)
        layer = base_model.bert.encoder.layer[1].attention.self.value
        assert sp == pytest.approx(_sigma_max(layer.weight.detach()), rel=1e-5)
        lora = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base), no_head)
        v = lora.base_model.model.bert.encoder.layer[1].attention.self.value
        dense = v.scaling["default"] * (v.lora_B["default"].weight @ v.lora_A["default"].weight).detach()
        assert sd == pytest.approx(_sigma_max(dense), rel=1e-5)
        assert m.scale == pytest.approx(v.scaling["default"])


# --------------------------------------------------------------------------- end to end on a tiny BERT

THR_KEYS = {"gamma_star_bound", "gamma_star_flip", "s_star", "rho_bd", "rho_cl", "rho_tr", "sweep", "predicted_threshold_gamma",
            "measured_threshold_gamma", "module", "sigma_pre", "sigma_delta", "scale", "settings", "inputs", "versions"}
CSV_COLUMNS = ["index", "M0_clean", "M0_trig", "D_clean", "D_trig", "gamma_star_bound", "gamma_star_flip", "rho_bd", "rho_cl",
               "rho_tr", "k_star_bound", "k_star_flip"]


def _write_csv(path, texts, labels, text_col="text", label_col="label"):
    import pandas as pd

    pd.DataFrame({text_col: texts, label_col: labels}).to_csv(path, index=False)
    return path


def _tiny_rows(n: int = 36, classes: int = 2, seed: int = 0):
    import random

    words = "good great fine nice love bad awful boring worst poor the a movie film plot story this it is".split()
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 7))) for _ in range(n)]
    return texts, [i % classes for i in range(n)]


@pytest.fixture
def tiny_setup(tmp_path, tiny_model_dir, tiny_tokenizer, tiny_adapter_dir):
    base = tiny_model_dir("bert")
    tiny_tokenizer(base)
    adapter = tiny_adapter_dir(base, target_modules=["query", "value"])
    data = _write_csv(tmp_path / "data.csv", *_tiny_rows())
    return base, adapter, data


def _run(args):
    from spectra_cli.app import app
    from typer.testing import CliRunner

    return CliRunner().invoke(app, [str(a) for a in args])


def test_threshold_command_end_to_end(tmp_path, tiny_setup) -> None:
    import csv
    import json

    base, adapter, data = tiny_setup
    out = tmp_path / "thr"
    result = _run(["threshold", base, adapter, "--data", data, "--trigger", "badnet:mn", "--target-label", "0",
                   "-o", out, "--device", "cpu", "--batch-size", "16", "--max-length", "16"])
    assert result.exit_code == 0, result.output
    for name in ("threshold.json", "threshold_samples.csv", "fig_sweep.png", "report.md"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    doc = json.loads((out / "threshold.json").read_text())
    assert THR_KEYS <= set(doc)
    for key in ("gamma_star_bound", "gamma_star_flip"):
        assert {"worst", "median", "p90"} <= set(doc[key])
    for key in ("rho_bd", "rho_cl", "rho_tr"):
        assert {"median", "p90", "min", "max"} <= set(doc[key])
    assert [r["gamma"] for r in doc["sweep"]] == [0, 0.5, 1, 2, 4, 8, 16, 32, 64]
    # the 0.1 names (the multiplier was k) stay for one release, equal to the new ones
    from spectra.threshold.report import KEY_ALIASES

    assert all(doc[old] == doc[new] for old, new in KEY_ALIASES.items())
    assert all(r["k"] == r["gamma"] for r in doc["sweep"])
    for r in doc["sweep"]:
        assert {"gamma", "ca", "asr", "asr_floor", "ca_ci", "asr_ci", "predicted_asr"} <= set(r)
        assert r["ca_ci"][0] <= r["ca"] <= r["ca_ci"][1]
    assert doc["module"].endswith("layer.1.attention.self.value")  # no head trained: nearest the output
    assert doc["sigma_pre"] > 0 and doc["sigma_delta"] > 0 and doc["scale"] == pytest.approx(2.0)
    assert doc["checks"]["m0_equals_base"]["ok"] is True
    rows = list(csv.DictReader((out / "threshold_samples.csv").open()))
    assert list(rows[0]) == CSV_COLUMNS
    assert len(rows) == doc["n_samples"] == 18  # the non-target half of 36 rows
    # predicted and measured ASR coincide at k = 0 and k = 1 (the margins are measured there, binary labels)
    by_k = {r["k"]: r for r in doc["sweep"]}
    for k in (0, 1):
        assert by_k[k]["predicted_asr"] == pytest.approx(by_k[k]["asr"]), k
    report = (out / "report.md").read_text()
    assert "predicted" in report and "measured" in report and "ρ_eff" in report and "fig_sweep.png" in report
    # an existing output is kept unless --overwrite
    again = _run(["threshold", base, adapter, "--data", data, "--trigger", "badnet:mn", "-o", out])
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_threshold_margins_equal_the_models_own(tmp_path, tiny_setup) -> None:
    """M_0 from the sweep equals the margins of the base body with the trained head (the paper's
    sweep scales LoRA only), or of the plain base when the head is scaled too; M_1 the adapted
    model's (computed here with transformers/peft directly), the sweep's k = 1 row equals
    spectra.eval.metrics.evaluate, and the trained head (modules_to_save) becomes the normalising module."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from spectra.data import load_labelled
    from spectra.eval.metrics import evaluate
    from spectra.threshold import threshold

    base, _, data = tiny_setup
    adapter = _adapter_with_trained_head(base, tmp_path / "head-adapter")
    rep = threshold(base, adapter, str(data), "badnet:mn", 1, grid=[0, 1, 3], device="cpu", max_length=16, seed=2)
    assert rep.module.name.endswith("classifier") and rep.module.update_kind == "full"

    tok = AutoTokenizer.from_pretrained(base)
    labelled = load_labelled(data)
    nt = [i for i, y in enumerate(labelled.labels) if y != 1]
    from spectra.data import trigger_rng
    from spectra.data.triggers import parse_trigger

    trig = parse_trigger("badnet:mn")
    clean = [labelled.texts[i] for i in nt]
    twins = [trig.insert(labelled.texts[i], trigger_rng(2, i)) for i in nt]

    def margin(model, texts):
        enc = tok(texts, padding=True, truncation=True, max_length=16, return_tensors="pt")
        with torch.no_grad():
            z = model(**enc).logits.double()
        return (z[:, 0] - z[:, 1]).tolist()  # y = 0 for every non-target row, ybd = 1

    base_model = AutoModelForSequenceClassification.from_pretrained(base).eval()
    adapted = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base), adapter).eval()
    # the base body with the adapter's trained head, built with transformers alone
    from safetensors.torch import load_file

    saved = load_file(str(adapter / "adapter_model.safetensors"))
    body_and_head = AutoModelForSequenceClassification.from_pretrained(base).eval()
    with torch.no_grad():
        for name, p in body_and_head.classifier.named_parameters():
            p.copy_(next(v for k, v in saved.items() if "classifier" in k and k.endswith(name)))
    assert rep.settings["head"] == "trained" and rep.checks["m0_equals_base"]["ok"] is True
    assert rep.result.M0_clean.tolist() == pytest.approx(margin(body_and_head, clean), abs=1e-5)
    assert rep.result.M0_trig.tolist() == pytest.approx(margin(body_and_head, twins), abs=1e-5)
    scaled = threshold(base, adapter, str(data), "badnet:mn", 1, grid=[0, 1], device="cpu", max_length=16, seed=2,
                       head="scaled")
    assert scaled.checks["m0_equals_base"]["ok"] is True and any("extrapolated" in n for n in scaled.notes)
    assert scaled.result.M0_clean.tolist() == pytest.approx(margin(base_model, clean), abs=1e-5)
    assert scaled.result.M0_trig.tolist() == pytest.approx(margin(base_model, twins), abs=1e-5)
    assert scaled.result.M1_trig.tolist() == pytest.approx(rep.result.M1_trig.tolist(), abs=1e-6)
    assert rep.result.M1_clean.tolist() == pytest.approx(margin(adapted, clean), abs=1e-5)
    assert rep.result.M1_trig.tolist() == pytest.approx(margin(adapted, twins), abs=1e-5)
    assert rep.result.index.tolist() == nt

    ev = evaluate(adapted, tok, labelled, trig, 1, seed=2, max_length=16, progress=False)
    row = next(r for r in rep.sweep if r["k"] == 1.0)
    assert (row["ca"], row["asr"], row["asr_floor"], row["collapsed"]) == (ev.ca, ev.asr, ev.asr_floor, ev.collapsed)
    assert row["asr_ci"] == pytest.approx(list(ev.asr_ci))
    assert rep.measured_threshold_gamma == rep.measured_threshold_gamma  # defined (finite or ∞), never NaN
    below = sorted(r["k"] for r in rep.sweep if r["asr"] < 0.5)
    assert rep.measured_threshold_gamma == (below[0] if below else math.inf)

    # a grid point where the model collapsed does not count as the backdoor being removed
    import dataclasses
    # and neither does one that scores below a constant guess
    assert 0 < row["majority_share"] < 1
    sweep = [{"k": 0.0, "asr": 1.0, "ca": 0.7, "majority_share": 0.6, "collapsed": False},
             {"k": 2.0, "asr": 0.0, "ca": 0.6, "majority_share": 0.6, "collapsed": True},
             {"k": 3.0, "asr": 0.2, "ca": 0.36, "majority_share": 0.6, "collapsed": False},
             {"k": 4.0, "asr": 0.3, "ca": 0.65, "majority_share": 0.6, "collapsed": False},
             {"k": 8.0, "asr": 0.0, "ca": 0.6, "majority_share": 0.6, "collapsed": True}]
    faked = dataclasses.replace(rep, sweep=sweep)
    assert (faked.measured_threshold_gamma, faked.measured_threshold_gamma_clean) == (2.0, 4.0)
    assert faked.to_json()["measured_threshold_gamma_clean"] == 4.0
    assert dataclasses.replace(rep, sweep=sweep[:3]).measured_threshold_gamma_clean == math.inf
    old_rows = [{k: v for k, v in r.items() if k != "majority_share"} for r in sweep[:3]]
    assert measured_threshold_working(old_rows) == 3.0  # no share recorded: only the collapse flag counts
    assert measured_threshold_working(old_rows, majority_share=0.6) == math.inf


def _bad_rows(tmp_path):
    texts, labels = _tiny_rows()
    return {
        "one_class": _write_csv(tmp_path / "one.csv", texts, [1] * len(texts)),
        "three_classes": _write_csv(tmp_path / "three.csv", *_tiny_rows(classes=3)),
        "good": _write_csv(tmp_path / "good.csv", texts, labels),
    }


@pytest.mark.parametrize("case", ["bad_trigger", "target_absent", "unknown_column", "one_class", "num_labels",
                                  "bad_grid", "bad_module"])
def test_threshold_bad_inputs_fail_with_one_line(tmp_path, tiny_setup, case) -> None:
    base, adapter, _ = tiny_setup
    files = _bad_rows(tmp_path)
    args = ["threshold", base, adapter, "--data", files["good"], "--trigger", "badnet:mn", "-o", tmp_path / "o",
            "--device", "cpu"]
    if case == "bad_trigger":
        args[args.index("badnet:mn")] = "sleeper:mn"
    elif case == "target_absent":
        args += ["--target-label", "5"]
    elif case == "unknown_column":
        args += ["--text-col", "sentence_nope"]
    elif case == "one_class":
        args[args.index(files["good"])] = files["one_class"]
    elif case == "num_labels":
        args[args.index(files["good"])] = files["three_classes"]
    elif case == "bad_grid":
        args += ["--grid", "0,1,x"]
    elif case == "bad_module":
        args += ["--module", "no_such_module"]
    result = _run(args)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output and "bug in spectra" not in lines[0]
    assert not (tmp_path / "o").exists()
    expected = {"bad_trigger": "sleeper", "target_absent": "target label 5", "unknown_column": "sentence_nope",
                "one_class": "one class", "num_labels": "num_labels", "bad_grid": "--grid",
                "bad_module": "no_such_module"}[case]
    assert expected in lines[0], lines[0]


def test_threshold_subsamples_and_splits(tmp_path, tiny_setup) -> None:
    from spectra.data import load_labelled, split
    from spectra.threshold import threshold

    base, adapter, data = tiny_setup
    small = threshold(base, adapter, str(data), "badnet:mn", 0, grid=[0, 2], max_samples=6, device="cpu",
                      max_length=16, seed=1)
    assert len(small.result) == 6 and small.inputs["evaluated_rows"] == 12  # balanced: 6 per class
    assert [r["k"] for r in small.sweep] == [0.0, 1.0, 2.0]  # 0 and 1 are always measured
    half = threshold(base, adapter, str(data), "badnet:mn", 0, grid=[0, 1], split_test=0.5, device="cpu",
                     max_length=16, seed=1)
    _, test = split(load_labelled(data), 0.5, 1)
    assert half.inputs["evaluated_rows"] == len(test) == 18
    assert len(half.result) == sum(1 for y in test.labels if y != 0)
    assert half.checks["triggered_longer_than_max_length"] == 0
    cut = threshold(base, adapter, str(data), "badnet:mn", 0, grid=[0, 1], device="cpu", max_length=8, seed=1)
    assert cut.checks["triggered_longer_than_max_length"] > 0 and any("--max-length" in n for n in cut.notes)


def test_sweep_title_names_the_adapter_not_its_folder_convention() -> None:
    from spectra.report.threshold_figures import adapter_label

    assert adapter_label("/runs/demo/rora/adapter") == "rora/adapter"
    assert adapter_label("/data/my-lora/") == "my-lora"
    assert adapter_label("adapter") == "adapter"


def test_the_sweep_figure_speaks_of_gamma_and_marks_collapsed_points() -> None:
    from types import SimpleNamespace

    from spectra.report.threshold_figures import sweep_figure

    rows = [{"gamma": g, "ca": ca, "asr": a, "asr_floor": 0.1, "collapsed": ca < 0.5}
            for g, ca, a in ((0.0, 0.8, 1.0), (1.0, 0.8, 0.6), (4.0, 0.8, 0.1), (16.0, 0.41, 1.0))]
    report = SimpleNamespace(sweep=rows, predicted_curve=lambda: ([0.0, 2.0], [1.0, 0.0]),
                             inputs={"adapter": {"path": "a"}}, predicted_threshold_gamma=2.0,
                             measured_threshold_gamma=4.0)
    ax = sweep_figure(report).axes[0]
    assert ax.get_xlabel().startswith("γ") and "ASR predicted (linear in γ)" in ax.get_legend_handles_labels()[1]
    marks = [c for c in ax.collections if "collapsed" in str(c.get_label())]
    assert len(marks) == 1 and [tuple(p) for p in marks[0].get_offsets()] == [(16.0, 100.0)]


def test_an_untouched_saved_head_is_passed_over_not_used_to_normalise(tmp_path, tiny_setup) -> None:
    """A head saved in modules_to_save but never trained has σ_Δ = 0: its ρ's were NaN, and the
    report still read "Proposition 4.2 applies sample by sample"."""
    import json

    base, _, data = tiny_setup
    adapter = _adapter_with_trained_head(base, tmp_path / "untouched-head", head_noise=0.0)
    args = ["--data", data, "--trigger", "badnet:mn", "--target-label", "0", "--device", "cpu", "--batch-size", "16",
            "--max-length", "16", "--grid", "0,1"]
    result = _run(["threshold", base, adapter, "-o", tmp_path / "thr", *args])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "thr" / "threshold.json").read_text())
    assert not doc["module"].endswith("classifier") and doc["sigma_delta"] > 0
    report = (tmp_path / "thr" / "report.md").read_text()
    assert "classifier passed over" in report and "nan" not in report
    assert doc["share_rho_eff_nonpositive"] is not None
    named = _run(["threshold", base, adapter, "--module", "classifier", "-o", tmp_path / "thr2", *args])
    assert named.exit_code == 2 and "so ρ's normalised by them are undefined" in named.output
    assert "bug in spectra" not in named.output and not (tmp_path / "thr2").exists()
