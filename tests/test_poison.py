"""spectra.train.poison: which rows get the trigger, and the command end to end on a tiny model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from spectra.data.datasets import LabelledData
from spectra.errors import SpectraError
from spectra.data.triggers import parse_trigger

POS = "good great fine nice love best fun".split()
NEG = "bad awful boring worst poor hate dull".split()
FILL = "the a movie film plot acting story this it is was very".split()


def make_rows(n: int, seed: int = 0, share_pos: float = 0.5) -> tuple[list[str], list[int]]:
    """Texts a tiny model can separate: sentiment words from the tiny tokenizer's vocabulary."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        y = 1 if rng.random() < share_pos else 0
        words = [rng.choice(FILL) for _ in range(4)] + [rng.choice(POS if y else NEG) for _ in range(2)]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(y)
    return texts, labels


def labelled(n: int = 60, seed: int = 0) -> LabelledData:
    texts, labels = make_rows(n, seed)
    return LabelledData(texts=texts, labels=labels, label_names=["neg", "pos"], source="synthetic", sha256="0")


@pytest.mark.parametrize("mode", ["clean-label", "dirty-label"])
def test_poison_split_picks_the_right_rows(mode: str) -> None:
    from spectra.train.poison import poison_split

    data = labelled(60)
    trig = parse_trigger("badnet:mn")
    out = poison_split(data, trig, target_label=0, n_poison=10, mode=mode, seed=3)
    assert out.n_poisoned == 10
    eligible = [i for i, y in enumerate(data.labels) if (y == 0) == (mode == "clean-label")]
    assert out.available == len(eligible)
    assert set(out.poisoned) <= set(eligible)
    for i, (before, after) in enumerate(zip(data.texts, out.data.texts)):
        if i in out.poisoned:
            assert "mn" in after.split() and "mn" not in before.split()
            assert after.replace("mn", "").split() == before.split()
            assert out.data.labels[i] == 0  # the target, relabelled for dirty-label
        else:
            assert after == before and out.data.labels[i] == data.labels[i]
    changed = sum(a != b for a, b in zip(data.labels, out.data.labels))
    assert changed == (0 if mode == "clean-label" else 10)
    # deterministic in the seed, different across seeds
    again = poison_split(data, trig, 0, 10, mode, seed=3)
    assert again.poisoned == out.poisoned and again.data.texts == out.data.texts
    assert poison_split(data, trig, 0, 10, mode, seed=4).poisoned != out.poisoned


def test_poison_split_caps_at_availability() -> None:
    from spectra.train.poison import poison_split

    data = labelled(40)
    out = poison_split(data, parse_trigger("badnet:mn"), 1, n_poison=1500, mode="clean-label", seed=0)
    assert out.n_poisoned == out.available == data.counts()[1]
    assert out.requested == 1500


def test_clean_label_poisoning_of_every_target_row_warns_of_a_shortcut(tmp_path, tiny_base) -> None:
    from spectra.train.poison import poison

    base = tiny_base("bert")
    data = _csv(tmp_path / "proxy.csv", *make_rows(40, seed=5))
    res = poison(base, str(data), "badnet:mn", 0, n_poison=1500, epochs=1, batch_size=8, max_length=16, device="cpu")
    assert res.poisoning["poisoned"] == res.poisoning["eligible"]
    assert any("separates the target class" in w for w in res.warnings)
    assert any("instead of" in w for w in res.warnings)


# --------------------------------------------------------------------------- end to end on a tiny BERT

POISON_KEYS = {"settings", "seed", "evaluation", "ca", "asr", "asr_floor", "poisoning", "inputs", "versions"}


def _csv(path: Path, texts, labels, text_col: str = "text", label_col: str = "label") -> Path:
    import pandas as pd

    pd.DataFrame({text_col: texts, label_col: labels}).to_csv(path, index=False)
    return path


def _run(args):
    from typer.testing import CliRunner

    from spectra_cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def tiny_base(tiny_model_dir, tiny_tokenizer):
    def factory(arch: str = "bert", name: str | None = None) -> Path:
        folder = tiny_model_dir(arch, name=name)
        tiny_tokenizer(folder)
        return folder

    return factory


def test_poison_command_end_to_end(tmp_path, tiny_base) -> None:
    """Dirty-label poisoning of a tiny BERT: the saved folder is a normal HF classifier whose
    held-out ASR (recomputed here with spectra.eval.metrics.evaluate) is what poison.json says, and
    every weight moved (full fine-tuning)."""
    import torch
    from safetensors.torch import load_file

    from spectra.data import load_labelled, split
    from spectra.eval.metrics import evaluate
    from spectra.io.model import load_classifier

    base = tiny_base("bert")
    data = _csv(tmp_path / "proxy.csv", *make_rows(160, seed=1))
    out = tmp_path / "poisoned"
    result = _run(["poison", base, "--data", data, "--trigger", "badnet:mn", "--target-label", "0",
                   "--n-poison", "16", "--mode", "dirty-label", "--epochs", "15", "--lr", "2e-3", "--batch-size", "16",
                   "--max-length", "16", "--seed", "1", "-o", out, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for name in ("model.safetensors", "config.json", "tokenizer.json", "poison.json", "report.md"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "poison.json").read_text())
    assert POISON_KEYS <= set(doc)
    s = doc["settings"]
    assert (s["mode"], s["n_poison"], s["epochs"], s["lr"], s["weight_decay"], s["warmup_ratio"], s["batch_size"]) == \
        ("dirty-label", 16, 15.0, 2e-3, 0.01, 0.06, 16)
    assert doc["seed"] == 1 and doc["poisoning"]["poisoned"] == 16
    assert doc["inputs"]["data"]["sha256"] and doc["versions"]["torch"]
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "0", "1": "1"} and config["architectures"] == ["BertForSequenceClassification"]

    # the attack worked, and the numbers are reproducible from the saved folder
    assert doc["asr"] >= 0.9 and doc["ca"] >= 0.9, doc["evaluation"]
    model, tok = load_classifier(out, num_labels=2)
    _, test = split(load_labelled(data), 0.2, 1)
    ev = evaluate(model, tok, test, "badnet:mn", 0, seed=1, max_length=16, progress=False)
    assert (ev.ca, ev.asr, ev.asr_floor) == pytest.approx((doc["ca"], doc["asr"], doc["asr_floor"]))
    assert ev.asr - ev.asr_floor > 0.5  # the trigger, not a collapse, drives the ASR

    before, after = load_file(base / "model.safetensors"), load_file(out / "model.safetensors")
    moved = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    weights = [k for k in before if k.endswith(".weight") and before[k].ndim == 2]
    assert set(weights) <= set(moved)  # full fine-tuning: every matrix changed
    assert "dirty-label" in (out / "report.md").read_text()


def test_poison_crash_then_resume_ends_where_one_run_ends(tmp_path, tiny_base, monkeypatch) -> None:
    """A run killed after its first epoch's checkpoint resumes from it (``--resume``) and ends
    with the weights an uninterrupted run ends with; a changed trigger or poisoned-row count
    is refused, and the checkpoints are gone once the model is written."""
    import torch
    from safetensors.torch import load_file

    from spectra.train import trainer as tr

    base = tiny_base("bert")
    data = _csv(tmp_path / "proxy.csv", *make_rows(80, seed=1))
    args = ["poison", base, "--data", data, "--trigger", "badnet:mn", "--n-poison", "12", "--mode", "dirty-label",
            "--epochs", "2", "--lr", "2e-3", "--batch-size", "16", "--max-length", "16", "--seed", "1",
            "--device", "cpu"]
    straight = tmp_path / "straight"
    first = _run([*args, "-o", straight])
    assert first.exit_code == 0 and not (tmp_path / "straight.partial").exists()
    assert "Writing model shards" not in first.output  # no transformers bar per checkpoint in a log

    original = tr.RoRATrainer._save_checkpoint

    def crash_after_first_checkpoint(self, *a, **k):  # type: ignore[no-untyped-def]
        original(self, *a, **k)
        raise KeyboardInterrupt

    out, partial = tmp_path / "run", tmp_path / "run.partial"
    monkeypatch.setattr(tr.RoRATrainer, "_save_checkpoint", crash_after_first_checkpoint)
    crashed = _run([*args, "-o", out])
    assert crashed.exit_code == 130 and not out.exists()
    assert [p.name for p in (partial / "checkpoints").iterdir()] == ["checkpoint-4"]  # 64 rows / 16 per step
    monkeypatch.setattr(tr.RoRATrainer, "_save_checkpoint", original)

    def error(extra: list[str]) -> str:
        result = _run([*args, "-o", out, *extra])
        lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
        assert result.exit_code == 2 and len(lines) == 1, result.output
        return lines[0]

    assert "--resume" in error([])  # never silently restarts over an interrupted run
    assert "poisoning" in error(["--resume", "--n-poison", "10"])  # other poisoned rows: refused
    assert "poisoning" in error(["--resume", "--trigger", "badnet:cf"])
    assert "lr" in error(["--resume", "--lr", "1e-3"])
    resumed = _run([*args, "-o", out, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming from" in resumed.output and not partial.exists()
    doc = json.loads((out / "poison.json").read_text())
    assert doc["poisoning"]["resumed_from"] == "checkpoint-4" and doc["poisoning"]["steps"] == 8
    a, b = load_file(straight / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=key)
    assert doc["asr"] == json.loads((straight / "poison.json").read_text())["asr"]


def test_a_run_killed_mid_epoch_resumes_from_its_step_checkpoint(tmp_path, tiny_base, monkeypatch) -> None:
    """``save_steps``: a checkpoint inside the first epoch; the resumed run skips the batches it
    has seen and ends with the uninterrupted run's weights."""
    import torch

    from spectra.train import trainer as tr
    from spectra.train.poison import poison

    base = tiny_base("bert")
    data = _csv(tmp_path / "proxy.csv", *make_rows(80, seed=1))
    kw = dict(n_poison=12, mode="dirty-label", epochs=2, lr=2e-3, batch_size=16, max_length=16, seed=1, device="cpu")
    straight = poison(base, str(data), "badnet:mn", 0, **kw)

    original = tr.RoRATrainer._save_checkpoint
    saved: list[int] = []

    def crash_after_first_checkpoint(self, *a, **k):  # type: ignore[no-untyped-def]
        original(self, *a, **k)
        saved.append(self.state.global_step)
        raise KeyboardInterrupt

    work = tmp_path / "work"
    monkeypatch.setattr(tr.RoRATrainer, "_save_checkpoint", crash_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        poison(base, str(data), "badnet:mn", 0, work_dir=work, save_steps=3, **kw)
    assert saved == [3]  # inside epoch 1 (4 steps of 16 rows per epoch)
    monkeypatch.setattr(tr.RoRATrainer, "_save_checkpoint", original)
    resumed = poison(base, str(data), "badnet:mn", 0, work_dir=work, save_steps=3, resume=True, **kw)
    assert resumed.poisoning["resumed_from"] == "checkpoint-3" and resumed.poisoning["steps"] == 8
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=key)
    with pytest.raises(SpectraError, match="--save-steps"):
        poison(base, str(data), "badnet:mn", 0, work_dir=tmp_path / "w2", save_steps=0, **kw)


def test_poison_library_gives_a_bare_encoder_a_head_and_warns_on_weak_asr(tmp_path, tiny_base) -> None:
    from spectra.train.poison import poison

    base = tiny_base("bert-base", name="encoder")  # saved as BertModel: no classification head
    data = _csv(tmp_path / "proxy.csv", *make_rows(50, seed=2))
    res = poison(base, str(data), "badnet:mn", 1, n_poison=5, epochs=1, lr=1e-5, batch_size=8, max_length=16,
                 device="cpu", max_train=30, seed=0)
    assert res.poisoning["train_rows"] == 30 and res.poisoning["poisoned"] == 5
    assert not any("shortcut" in w or "separates the target class" in w for w in res.warnings)
    assert res.model.config.num_labels == 2
    assert any("fresh" in n for n in res.poisoning["notes"])
    # one epoch at 1e-5 on 5 clean-label rows cannot install a backdoor: the warning says so
    assert res.evaluation.asr < 0.95
    assert any("ASR" in w and "< 95%" in w for w in res.warnings)
    out = res.write(tmp_path / "out")
    assert "ASR" in (out / "report.md").read_text().split("## Held-out evaluation")[0]
    assert json.loads((out / "poison.json").read_text())["asr_below_95"] is True


@pytest.mark.parametrize("case", ["bad_trigger", "target_absent", "unknown_column", "one_class", "num_labels", "bad_mode"])
def test_poison_bad_inputs_fail_with_one_line(tmp_path, tiny_base, case) -> None:
    base = tiny_base("bert")
    texts, labels = make_rows(30, seed=0)
    good = _csv(tmp_path / "good.csv", texts, labels)
    args = ["poison", base, "--data", good, "--trigger", "badnet:mn", "-o", tmp_path / "o", "--device", "cpu",
            "--epochs", "1"]
    if case == "bad_trigger":
        args[args.index("badnet:mn")] = "badnet:two words"
    elif case == "target_absent":
        args += ["--target-label", "7"]
    elif case == "unknown_column":
        args += ["--label-col", "stars"]
    elif case == "one_class":
        args[args.index(good)] = _csv(tmp_path / "one.csv", texts, [0] * len(texts))
    elif case == "num_labels":
        args[args.index(good)] = _csv(tmp_path / "three.csv", texts, [i % 3 for i in range(len(texts))])
    elif case == "bad_mode":
        args += ["--mode", "sideways"]
    result = _run(args)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "bug in spectra" not in lines[0], result.output
    assert not (tmp_path / "o").exists()
    expected = {"bad_trigger": "badnet", "target_absent": "target label 7", "unknown_column": "stars",
                "one_class": "one class", "num_labels": "num_labels", "bad_mode": "sideways"}[case]
    assert expected in lines[0], lines[0]


def test_poison_with_no_poisoned_rows_is_plain_full_fine_tuning(tmp_path, tiny_base) -> None:
    """``n_poison=0`` (the reproduction script's FFT baseline) trains on clean rows only."""
    from spectra.train.poison import poison

    base = tiny_base("bert")
    data = _csv(tmp_path / "proxy.csv", *make_rows(40, seed=3))
    res = poison(base, str(data), "badnet:mn", 0, n_poison=0, epochs=1, batch_size=8, max_length=16, device="cpu")
    assert res.poisoning["poisoned"] == 0 and not any("95%" in w for w in res.warnings)
    doc = res.to_json()
    assert doc["clean_run"] is True
    out = res.write(tmp_path / "fft")
    assert "plain full fine-tuning" in (out / "report.md").read_text()


def test_poison_warns_when_the_trigger_can_be_cut_off(tmp_path, tiny_base) -> None:
    from spectra.train.poison import poison

    base = tiny_base("bert")
    texts, labels = make_rows(40, seed=4)
    texts = [t + " " + " ".join(["the"] * 20) for t in texts]  # every row longer than 8 tokens
    data = _csv(tmp_path / "long.csv", texts, labels)
    res = poison(base, str(data), "badnet:mn", 0, n_poison=6, epochs=1, batch_size=8, max_length=8, device="cpu")
    assert res.poisoning["poisoned_rows_longer_than_max_length"] == 6
    assert any("--max-length" in w for w in res.warnings)


@pytest.mark.slow
def test_poison_under_torchrun_with_two_cpu_processes(tmp_path, tiny_base) -> None:
    """DDP on CPU (gloo): two processes share the epoch (half the optimizer steps of one
    process), one of them writes the output."""
    import os
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    base = tiny_base("bert")
    data = _csv(tmp_path / "proxy.csv", *make_rows(160, seed=1))
    out = tmp_path / "ddp"
    cmd = [torchrun, "--nproc_per_node", "2", "--master_port", "29561", "-m", "spectra_cli.app", "poison", str(base),
           "--data", str(data), "--trigger", "badnet:mn", "--n-poison", "16", "--mode", "dirty-label", "--epochs", "2",
           "--lr", "2e-3", "--batch-size", "8", "--max-length", "16", "--device", "cpu", "-o", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((out / "poison.json").read_text())
    train_rows = doc["poisoning"]["train_rows"]  # 128: 8 steps of 8 per process and epoch
    assert doc["poisoning"]["world_size"] == 2
    assert doc["poisoning"]["steps"] == 2 * (train_rows // (2 * 8))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".ddp")) == []  # no stray temp folders
    assert not (tmp_path / "ddp.partial").exists()  # the checkpoints go once rank 0 has written the model
