"""Per-epoch validation (spectra.train.validation): the numbers it logs are the model's,
the convergence rule and the learning-rate pick follow their definitions, and full
fine-tuning (the FFT baseline) runs through the same recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from test_train import tiny_base, write_sentiment_csv

from spectra.train.validation import CONVERGENCE_TOLERANCE, converged, final_drop, pick_learning_rate


def test_converged_means_the_last_epochs_no_longer_raise_the_best() -> None:
    assert converged([0.70, 0.80, 0.85, 0.851, 0.848, 0.850])  # at its level since epoch 3
    assert not converged([0.70, 0.75, 0.80, 0.82, 0.85, 0.87])  # still climbing
    assert converged([0.70, 0.88, 0.86, 0.85, 0.86, 0.86])  # overfits a little: no longer improving
    assert not converged([0.80, 0.85, 0.85])  # no epoch before the window
    before = 0.85
    assert converged([0.7, before, before + CONVERGENCE_TOLERANCE, before, before])
    assert not converged([0.7, before, before + 2 * CONVERGENCE_TOLERANCE, before, before])
    assert final_drop([0.7, 0.9, 0.85]) == pytest.approx(0.05) and final_drop([0.7, 0.9]) == 0.0


def test_pick_learning_rate_uses_the_level_the_run_ends_at_and_prefers_the_smaller_rate_on_ties() -> None:
    curves = {2e-5: [0.5, 0.6, 0.7, 0.7], 2e-4: [0.9, 0.7, 0.8, 0.9], 2e-3: [0.5, 0.8, 0.8, 0.8]}
    assert pick_learning_rate(curves) == 2e-4  # mean of the last 3: 0.8 ties 0.8, the smaller rate wins
    assert pick_learning_rate({2e-3: [0.5, 0.9, 0.9, 0.9], 2e-4: [0.95, 0.85, 0.85, 0.85]}) == 2e-3
    with pytest.raises(ValueError):
        pick_learning_rate({2e-4: []})


def test_epoch_validation_reports_the_model_accuracy_and_monitored_asr(tmp_path: Path) -> None:
    from spectra.data import load_labelled
    from spectra.eval.inference import predict_logits
    from spectra.io.model import load_classifier
    from spectra.train.validation import EpochValidation

    base = tiny_base(tmp_path / "base")
    data = load_labelled(str(write_sentiment_csv(tmp_path / "val.csv", n=20)))
    model, tok = load_classifier(base, None, num_labels=2)
    check = EpochValidation(data, tok, trigger="badnet:mn", target_label=0, max_length=32)
    model.train()
    got = check(model)
    assert model.training  # its mode is restored
    logits = predict_logits(model, tok, data.texts, max_length=32, progress=False)
    labels = torch.tensor(data.labels)
    assert got["val_ca"] == pytest.approx(float((logits.argmax(-1) == labels).double().mean()))
    assert got["val_loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)), rel=1e-5)
    n_non_target = sum(1 for y in data.labels if y != 0)
    assert len(check._triggered) == n_non_target
    assert all("mn" in t.split() for t in check._triggered)
    assert 0.0 <= got["val_asr_monitor"] <= 1.0


def test_fix_logs_validation_every_epoch_and_fft_writes_a_whole_model(tmp_path: Path) -> None:
    from spectra.data import load_labelled
    from spectra.eval.pipeline import run_eval
    from spectra.train.config import RoRAConfig
    from spectra.train.fix import run_fix

    base = tiny_base(tmp_path / "base")
    train = load_labelled(str(write_sentiment_csv(tmp_path / "train.csv", n=32, seed=1)))
    val = load_labelled(str(write_sentiment_csv(tmp_path / "val.csv", n=16, seed=2)))
    test = load_labelled(str(write_sentiment_csv(tmp_path / "test.csv", n=16, seed=3)))
    common = dict(epochs=2, batch_size=8, max_length=32, lr=1e-3)
    lora = run_fix(base, train, tmp_path / "lora", config=RoRAConfig.baseline("lora", **common), val_data=val,
                   eval_data=test, trigger="badnet:mn", device="cpu", cache_dir=False)
    log = lora.train_log
    assert list(log["epoch"].round()) == [1.0, 2.0]
    assert {"val_ca", "val_loss", "val_asr_monitor"} <= set(log.columns)
    assert log["val_ca"].between(0, 1).all()

    fft = run_fix(base, train, tmp_path / "fft", config=RoRAConfig.baseline("fft", **common), val_data=val,
                  eval_data=test, trigger="badnet:mn", device="cpu", cache_dir=False)
    assert fft.config.method == "fft"
    model_dir = tmp_path / "fft" / "model"
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "config.json").is_file()
    assert not (tmp_path / "fft" / "adapter").exists()
    rows = {r["model"]: r for r in json.loads((tmp_path / "fft" / "eval.json").read_text())}
    assert set(rows) == {"base", "new"}
    again = run_eval(str(model_dir), None, test, "badnet:mn", 0, max_length=32, device="cpu", progress=False)
    assert rows["new"]["ca"] == pytest.approx(again.ca) and rows["new"]["asr"] == pytest.approx(again.asr)
    # every weight changed, not only an adapter's
    from safetensors.torch import load_file

    before, after = load_file(str(base / "model.safetensors")), load_file(str(model_dir / "model.safetensors"))
    changed = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    assert any("encoder.layer.0.attention.self.query.weight" in k for k in changed)
    assert any("word_embeddings" in k for k in changed)
