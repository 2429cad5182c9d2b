"""Evaluation (CA/ASR/floor/collapse), model loading, scaled_adapter and `spectra eval`."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from conftest import build_tiny_model, build_tiny_tokenizer, make_adapter, save_model
from spectra.data.datasets import LabelledData
from spectra.eval.inference import predict_logits
from spectra.eval.metrics import EvalResult, evaluate
from spectra.report.eval_markdown import eval_markdown
from spectra.data.triggers import apply_trigger, parse_trigger
from spectra.errors import SpectraError
from spectra.device import resolve_device
from spectra.errors import SpectraWarning
from spectra.eval.scaling import scaled_adapter
from spectra.io.model import load_classifier

# --------------------------------------------------------------------------- a stub whose rule we know


class RuleTokenizer:
    """Encodes each text as two features: contains "mn", contains "good"."""

    def __call__(self, texts, padding=True, truncation=True, max_length=128, return_tensors="pt"):
        feats = [[float("mn" in t.split()), float("good" in t.split())] for t in texts]
        return {"x": torch.tensor(feats)}


class RuleModel(torch.nn.Module):
    """Predicts 0 when "mn" is present, else 1 when "good" is present, else 0."""

    def __init__(self, num_labels: int = 2, always: int | None = None) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(num_labels=num_labels)
        self.always = always

    def forward(self, x):
        mn, good = x[:, 0], x[:, 1]
        pred = torch.where(mn > 0, 0, torch.where(good > 0, 1, 0)).long()
        if self.always is not None:
            pred = torch.full_like(pred, self.always)
        logits = torch.nn.functional.one_hot(pred, self.config.num_labels).float() + self.w
        return SimpleNamespace(logits=logits)


def rule_data() -> LabelledData:
    # label 1: 4 texts with "good" (predicted 1), 2 without (predicted 0: the floor for target 0)
    # label 0: 1 text with "good" (predicted 1: wrong), 3 without (predicted 0: right)
    texts = ["good one", "a good film", "so good", "good good", "plain", "dull but fine",
             "good luck", "bad", "awful", "boring"]
    labels = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    return LabelledData(texts, labels, ["neg", "pos"], "rule.csv", "0" * 64)


def test_asr_counts_only_non_target_samples() -> None:
    r = evaluate(RuleModel(), RuleTokenizer(), rule_data(), "badnet:mn", target_label=0, progress=False)
    assert (r.n_clean, r.n_triggered) == (10, 6)  # the 4 target-label texts are left out of ASR
    assert r.ca == pytest.approx(0.7) and r.n_correct == 7
    assert r.asr == 1.0 and r.n_hits == 6
    assert r.asr_floor == pytest.approx(2 / 6) and r.n_floor_hits == 2
    assert r.delta == pytest.approx(-0.3)
    assert r.predicted_share == pytest.approx([0.5, 0.5])
    assert r.triggered_predicted_share == [1.0, 0.0]
    assert r.majority_share == pytest.approx(0.6) and not r.collapsed
    assert r.ca_ci[0] < 0.7 < r.ca_ci[1] and r.asr_ci[1] == 1.0
    assert r.delta_ci[0] < -0.3 < r.delta_ci[1]

    # target 1: the non-target texts are the 4 label-0 ones; "mn" pushes them to 0, never to 1
    r1 = evaluate(RuleModel(), RuleTokenizer(), rule_data(), "badnet:mn", target_label=1, progress=False)
    assert r1.n_triggered == 4 and r1.asr == 0.0 and r1.asr_floor == pytest.approx(0.25)


def test_ineffective_trigger_is_flagged_against_its_floor() -> None:
    r = evaluate(RuleModel(), RuleTokenizer(), rule_data(), "badnet:cf", target_label=0, progress=False)
    assert r.asr == pytest.approx(r.asr_floor) == pytest.approx(2 / 6)
    assert r.asr_above_floor == pytest.approx(0.0)
    assert any("within reach of its floor" in w for w in r.warnings)


def test_collapse_flag() -> None:
    r = evaluate(RuleModel(always=1), RuleTokenizer(), rule_data(), "badnet:mn", target_label=0, progress=False)
    assert r.collapsed and r.predicted_share == [0.0, 1.0] and r.asr == 0.0
    assert any(w.startswith("collapsed") for w in r.warnings)
    d = r.to_dict()
    assert d["collapsed"] is True and d["ca_ci"] == list(r.ca_ci)


def test_evaluate_bad_labels() -> None:
    with pytest.raises(SpectraError, match="target label 2 is absent from the data"):
        evaluate(RuleModel(), RuleTokenizer(), rule_data(), "badnet:mn", target_label=2, progress=False)
    with pytest.raises(SpectraError, match="num_labels mismatch"):
        evaluate(RuleModel(num_labels=3), RuleTokenizer(), rule_data(), "badnet:mn", target_label=0, progress=False)
    only_pos = rule_data().subset(range(6))
    with pytest.raises(SpectraError, match="target label 0 is absent"):
        evaluate(RuleModel(), RuleTokenizer(), only_pos, "badnet:mn", target_label=0, progress=False)
    with pytest.raises(SpectraError, match="every row has the target label"):
        evaluate(RuleModel(), RuleTokenizer(), only_pos, "badnet:mn", target_label=1, progress=False)


def test_triggered_twins_match_apply_trigger() -> None:
    data = rule_data()
    seen = []

    class Spy(RuleTokenizer):
        def __call__(self, texts, **kw):
            if kw.get("truncation"):  # the model's inputs, not the length check
                seen.extend(texts)
            return super().__call__(texts, **kw)

    evaluate(RuleModel(), Spy(), data, "badnet:zz", target_label=0, seed=4, batch_size=3, progress=False)
    expected = [t for t, y in zip(apply_trigger(data.texts, parse_trigger("badnet:zz"), 4), data.labels) if y != 0]
    assert sorted(seen[len(data):]) == sorted(expected)  # batches are formed by length; the set is the point


def test_evaluation_lives_in_spectra_eval_and_the_0_2_aliases_in_data_are_gone() -> None:
    import spectra.data
    from spectra.eval.metrics import evaluate

    for name in ("evaluate", "run_eval", "predict_logits", "EvalResult", "eval_markdown"):
        with pytest.raises(AttributeError):
            getattr(spectra.data, name)  # kept for 0.2 only (CHANGELOG); data sits below eval
    r = evaluate(RuleModel(), RuleTokenizer(), rule_data(), "badnet:mn", 0, progress=False)
    assert r.asr == 1.0


def test_predict_logits_batching_keeps_order() -> None:
    model, tok = RuleModel(), RuleTokenizer()
    texts = rule_data().texts
    a = predict_logits(model, tok, texts, batch_size=1, progress=False)
    b = predict_logits(model, tok, texts, batch_size=64, progress=False)
    assert a.shape == (10, 2) and torch.equal(a, b)
    assert a.argmax(1).tolist() == [1, 1, 1, 1, 0, 0, 1, 0, 0, 0]


# --------------------------------------------------------------------------- real tiny models


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny BERT classifier with a tokenizer, a LoRA adapter on it (query/value +
    a trained classifier head through modules_to_save), and a head-less base."""
    root = tmp_path_factory.mktemp("tiny")
    base = save_model(build_tiny_model("bert", seed=0), root / "bert")
    build_tiny_tokenizer(base)
    import transformers as tf

    model = tf.AutoModelForSequenceClassification.from_pretrained(base)
    adapter = make_adapter(model, root / "adapter", seed=1, target_modules=["query", "value"], task_type="SEQ_CLS")
    # give the saved head a visible change so the interpolation is testable
    from peft import PeftModel
    from safetensors.torch import load_file, save_file

    weights = load_file(adapter / "adapter_model.safetensors")
    for key in weights:
        if "classifier" in key:
            torch.manual_seed(5)
            weights[key] = weights[key] + torch.randn_like(weights[key])
    save_file(weights, adapter / "adapter_model.safetensors")
    del PeftModel
    bare = save_model(build_tiny_model("bert-base", seed=0), root / "bert-bare")
    build_tiny_tokenizer(bare)
    three = save_model(build_tiny_model("bert", seed=0, num_labels=3), root / "bert3")
    build_tiny_tokenizer(three)
    csv = root / "reviews.csv"
    rows = ["text,label"] + [f"good movie number w{i},1" if i % 2 else f"bad boring film w{i},0" for i in range(24)]
    csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return {"base": base, "adapter": adapter, "bare": bare, "three": three, "csv": csv, "root": root}


TEXTS = ["good movie", "bad acting , boring plot", "i watched this 3d movie mn", "the best fun"]


def _logits(model, tok) -> torch.Tensor:
    return predict_logits(model, tok, TEXTS, batch_size=2, progress=False)


def test_scaled_adapter_zero_is_the_base_and_one_is_the_adapter(tiny) -> None:
    base, tok = load_classifier(tiny["base"])
    peft_model, _ = load_classifier(tiny["base"], tiny["adapter"])
    want_base, want_adapter = _logits(base, tok), _logits(peft_model, tok)
    assert not torch.allclose(want_base, want_adapter)
    with scaled_adapter(peft_model, 0.0, head="scaled"):
        assert torch.equal(_logits(peft_model, tok), want_base)
    # the default keeps the trained head: k = 0 is the base body under the adapter's head
    from peft.tuners.lora import LoraLayer

    layers = [m for m in peft_model.modules() if isinstance(m, LoraLayer)]
    for m in layers:
        m.enable_adapters(False)
    want_body_with_head = _logits(peft_model, tok)
    for m in layers:
        m.enable_adapters(True)
    assert not torch.allclose(want_body_with_head, want_base)
    with scaled_adapter(peft_model, 0.0):
        assert torch.equal(_logits(peft_model, tok), want_body_with_head)
    with pytest.raises(SpectraError, match="--head"):
        with scaled_adapter(peft_model, 2.0, head="interpolated"):
            pass
    with scaled_adapter(peft_model, 1.0):
        assert torch.equal(_logits(peft_model, tok), want_adapter)
    assert torch.equal(_logits(peft_model, tok), want_adapter)  # restored exactly
    with pytest.raises(RuntimeError):
        with scaled_adapter(peft_model, 3.0):
            raise RuntimeError("boom")
    assert torch.equal(_logits(peft_model, tok), want_adapter)  # restored after an exception too


def test_scaled_adapter_k_scales_the_lora_delta_and_interpolates_saved_modules(tiny) -> None:
    from peft.tuners.lora import Linear as LoraLinear
    from peft.utils.other import ModulesToSaveWrapper

    model, _ = load_classifier(tiny["base"], tiny["adapter"])
    layer = next(m for m in model.modules() if isinstance(m, LoraLinear))
    x = torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(0))

    def out(k: float) -> torch.Tensor:
        with torch.no_grad(), scaled_adapter(model, k):
            return layer(x)

    y0, y1, y2, yh = out(0.0), out(1.0), out(2.0), out(0.5)
    assert torch.equal(y0, layer.base_layer(x).detach())
    assert torch.allclose(y2 - y0, 2 * (y1 - y0), atol=1e-6)
    assert torch.allclose(yh - y0, 0.5 * (y1 - y0), atol=1e-6)
    assert (y1 - y0).abs().max() > 1e-4

    wrapper = next(m for m in model.modules() if isinstance(m, ModulesToSaveWrapper))
    w_base = wrapper.original_module.weight.detach().clone()
    w_saved = wrapper.modules_to_save["default"].weight.detach().clone()
    assert not torch.allclose(w_base, w_saved)
    with scaled_adapter(model, 0.5):  # the paper's sweep: the head as trained
        assert torch.equal(wrapper.modules_to_save["default"].weight, w_saved)
    with scaled_adapter(model, 0.5, head="scaled"):
        assert torch.allclose(wrapper.modules_to_save["default"].weight, w_base + 0.5 * (w_saved - w_base))
    assert torch.equal(wrapper.modules_to_save["default"].weight, w_saved)


def test_scaled_adapter_without_adapter_is_an_error(tiny) -> None:
    base, _ = load_classifier(tiny["base"])
    with pytest.raises(SpectraError, match="no LoRA adapter"):
        with scaled_adapter(base, 0.0):
            pass
    with pytest.raises(SpectraError, match="finite"):
        with scaled_adapter(base, float("nan")):
            pass


def test_load_classifier_heads_and_errors(tiny, tmp_path: Path) -> None:
    with pytest.raises(SpectraError, match="head has 2 labels but 3 are needed"):
        load_classifier(tiny["base"], num_labels=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, _ = load_classifier(tiny["bare"], num_labels=3)
    assert model.config.num_labels == 3
    assert any(issubclass(w.category, SpectraWarning) and "fresh 3-label head" in str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpectraWarning)
        again, tok = load_classifier(tiny["bare"], num_labels=3)  # the fresh head is seeded
    assert torch.equal(_logits(model, tok), _logits(again, tok))
    with pytest.raises(SpectraError, match="no such folder"):
        load_classifier(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SpectraError, match="folder is empty"):
        load_classifier(empty)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((tiny["base"] / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(SpectraError, match="--allow-pickle"):
        load_classifier(pickled)
    with pytest.raises(SpectraError, match="no adapter_config.json"):
        load_classifier(tiny["base"], empty)
    with pytest.raises(SpectraError, match="does not fit"):  # a 2-label adapter head on a 3-label base
        load_classifier(tiny["three"], tiny["adapter"], num_labels=3)


def test_truncated_triggered_texts_are_counted(tiny) -> None:
    model, tok = load_classifier(tiny["base"])
    long = " ".join(["good"] * 40)
    data = LabelledData([long, "bad", long, "fine"], [1, 0, 0, 1], ["neg", "pos"], "m", "0" * 64)
    r = evaluate(model, tok, data, "badnet:mn", target_label=0, max_length=16, progress=False)
    assert r.n_triggered == 2 and r.n_triggered_truncated == 1
    assert any("longer than max_length" in w for w in r.warnings)
    # max_length beyond the tokenizer's limit (64 here) is capped instead of overrunning positions
    assert predict_logits(model, tok, [" ".join(["w1"] * 200)], max_length=512, progress=False).shape == (1, 2)


def test_llama_without_pad_token_pads_with_eos(tmp_path: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    folder = save_model(build_tiny_model("llama-lm"), tmp_path / "llama")
    fast = build_tiny_tokenizer()
    tok = PreTrainedTokenizerFast(tokenizer_object=fast.backend_tokenizer, unk_token="[UNK]", eos_token="[SEP]")
    tok.save_pretrained(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, tok = load_classifier(folder)
    assert tok.pad_token == "[SEP]" and model.config.pad_token_id == tok.pad_token_id == 3
    logits = predict_logits(model, tok, ["good", "a much longer text here"], progress=False)
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(SpectraError, match="unknown device"):
        resolve_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(SpectraError, match="CUDA is not available"):
            resolve_device("cuda")


# --------------------------------------------------------------------------- the command


def _run(args: list[str]):
    from spectra_cli.app import app

    return CliRunner().invoke(app, args)


def _error_lines(result) -> list[str]:
    text = result.stderr if getattr(result, "stderr_bytes", None) is not None else result.output
    return [ln for ln in text.splitlines() if ln.strip()]


def test_eval_command_end_to_end(tiny, tmp_path: Path) -> None:
    out = tmp_path / "ev"
    res = _run(["eval", str(tiny["base"]), str(tiny["adapter"]), "--data", str(tiny["csv"]), "--trigger",
                "badnet:mn", "--target-label", "0", "-o", str(out), "--device", "cpu", "--batch-size", "8"])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "eval.json").read_text())
    for key in ("ca", "asr", "delta", "n_clean", "n_triggered", "ca_ci", "asr_ci", "asr_floor", "collapsed",
                "delta_ci", "scale", "settings", "inputs", "versions"):
        assert key in doc, key
    assert doc["n_clean"] == 24 and doc["n_triggered"] == 12 and doc["scale"] == 1.0
    assert doc["settings"]["trigger"] == "badnet:mn" and doc["settings"]["seed"] == 0
    assert set(doc["inputs"]["adapter"]["sha256"]) >= {"adapter_config.json", "adapter_model.safetensors"}
    assert len(doc["inputs"]["data"]["sha256"]) == 64 and doc["versions"]["torch"]
    assert 0.0 <= doc["ca_ci"][0] <= doc["ca"] <= doc["ca_ci"][1] <= 1.0
    assert doc["delta"] == pytest.approx(doc["ca"] - doc["asr"])
    report = (out / "report.md").read_text()
    assert "| CA |" in report and "ASR floor" in report and "## Definitions" in report

    # --scale 0 gives the base model's numbers; --split-test evaluates fewer rows
    base_out = tmp_path / "ev-base"
    res0 = _run(["eval", str(tiny["base"]), str(tiny["adapter"]), "--data", str(tiny["csv"]), "--trigger",
                 "badnet:mn", "-o", str(base_out), "--device", "cpu", "--scale", "0", "--split-test", "0.5"])
    assert res0.exit_code == 0, res0.output
    doc0 = json.loads((base_out / "eval.json").read_text())
    assert doc0["scale"] == 0.0 and doc0["n_clean"] == 12 and doc0["settings"]["split_test"] == 0.5
    # an existing output is not replaced without --overwrite
    res_again = _run(["eval", str(tiny["base"]), "--data", str(tiny["csv"]), "--trigger", "badnet:mn",
                      "-o", str(out), "--device", "cpu"])
    assert res_again.exit_code == 2 and "already exists" in res_again.output


@pytest.mark.parametrize("extra, match", [
    (["--text-col", "body"], "no text column 'body'; available columns: text, label"),
    (["--trigger", "ripple:mn"], "unknown kind 'ripple'"),
    (["--target-label", "2"], "target label 2 is absent from the data"),
    (["--model", "three"], "num_labels mismatch"),
    (["--scale", "0"], "--scale needs an adapter"),
    (["--model", "bare"], "no trained sequence-classification head"),  # was exit 0 with a random head's CA/ASR
])
def test_eval_command_bad_inputs_exit_2_with_one_line(tiny, tmp_path: Path, extra: list[str], match: str) -> None:
    model = tiny["base"]
    if extra[0] == "--model":
        model, extra = tiny[extra[1]], []
    args = {"--trigger": "badnet:mn"}
    rest: list[str] = []
    for i in range(0, len(extra), 2):
        if extra[i] == "--trigger":
            args["--trigger"] = extra[i + 1]
        else:
            rest += extra[i:i + 2]
    res = _run(["eval", str(model), "--data", str(tiny["csv"]), "--trigger", args["--trigger"],
                "-o", str(tmp_path / "o"), "--device", "cpu", *rest])
    assert res.exit_code == 2
    lines = _error_lines(res)
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], res.output
    assert "bug in spectra" not in lines[0] and not (tmp_path / "o").exists()


def test_eval_of_a_model_without_a_head_runs_only_when_asked(tiny, tmp_path: Path) -> None:
    res = _run(["eval", str(tiny["bare"]), "--data", str(tiny["csv"]), "--trigger", "badnet:mn", "-o",
                str(tmp_path / "o"), "--device", "cpu", "--allow-untrained-head"])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "o" / "eval.json").read_text())
    assert any("its predictions mean nothing" in w for w in doc["warnings"])
    assert doc["settings"]["allow_untrained_head"] is True  # the numbers say how they were allowed


def test_markdown_report_mentions_collapse() -> None:
    r = evaluate(RuleModel(always=0), RuleTokenizer(), rule_data(), "badnet:mn", target_label=0, progress=False)
    assert isinstance(r, EvalResult)
    md = eval_markdown(r)
    assert "| collapsed | yes |" in md and "collapsed: the model predicts class 0" in md


def test_eval_reports_progress_over_both_passes_to_a_callback(tiny, tmp_path: Path) -> None:
    """The CLI hands evaluate a (done, total) callback — a bar on a terminal, EtaLog lines in a log,
    nothing under --quiet — where it passed a bool that showed nothing in a log. One count runs over
    the clean texts and their triggered twins."""
    from spectra.eval.pipeline import run_eval
    from spectra.eval.settings import EvalSettings

    seen: list[tuple[int, int]] = []
    run_eval(tiny["base"], None, tiny["csv"], "badnet:mn", 0, EvalSettings(batch_size=4, device="cpu"),
             progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 9) for i in range(1, 10)]  # 24 clean texts (6 batches), 12 triggered (3)
    quiet = _run(["eval", str(tiny["base"]), "--data", str(tiny["csv"]), "--trigger", "badnet:mn", "--device", "cpu",
                  "--batch-size", "4", "-o", str(tmp_path / "q"), "--quiet"])
    assert quiet.exit_code == 0 and "predict" not in quiet.output


def test_every_report_spells_a_missing_share_the_same_way() -> None:
    """Seven copies of the percent and interval formatters: eval's raised TypeError on None and
    printed 'nan%' for NaN, others printed '—', 'n/a' or '–'."""
    from spectra.report.tables import fmt_interval, fmt_pct

    assert fmt_pct(0.1234) == "12.3%" and fmt_pct(0.5, suffix="") == "50.0"
    assert fmt_pct(None) == fmt_pct(float("nan")) == fmt_pct(float("inf")) == "—"
    assert fmt_interval((0.1, 0.25)) == "[10.0, 25.0]"
    assert fmt_interval(None) == fmt_interval((float("nan"), 0.2)) == ""
