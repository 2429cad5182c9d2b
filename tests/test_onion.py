"""ONION (Qi et al. 2021) on a tiny causal LM: the suspicion score is the perplexity drop
the definition gives, the calibrated threshold keeps its accuracy budget, scores persist
so a killed run resumes, and sharing runs never splice the score file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import build_tiny_model, build_tiny_tokenizer


def test_onion_deletes_the_word_whose_removal_makes_the_text_most_fluent(tmp_path: Path) -> None:
    from spectra.defenses.onion import Onion, calibrate_threshold

    tok = build_tiny_tokenizer()
    tok.bos_token = "[CLS]"
    model = build_tiny_model("llama-lm", seed=0).eval()
    onion = Onion(model=model, tokenizer=tok, batch_size=4)
    texts = ["good movie so fun", "bad plot mn boring"]
    scores = onion.suspicion(texts)
    assert [len(s) for s in scores] == [4, 4]
    ppl = onion.perplexities(["good movie so fun", "movie so fun"])
    assert scores[0][0] == pytest.approx(ppl[0] - ppl[1], rel=1e-5)  # f_i = p0 − p_i, word 0 removed
    worst = max(range(4), key=lambda i: scores[1][i])
    kept = onion.filter(texts, threshold=scores[1][worst])
    assert texts[1].split()[worst] not in kept[1].split() and len(kept[1].split()) <= 3
    assert onion.filter(texts, threshold=math.inf) == texts  # +∞ deletes nothing

    # calibration: the lowest threshold whose filtering costs ≤ 2 points of accuracy
    def accuracy(batch: list[str]) -> float:  # "accuracy" = share of words kept
        return sum(len(t.split()) for t in batch) / sum(len(t.split()) for t in texts)

    calib = calibrate_threshold(onion, accuracy, texts, max_drop=0.2)
    assert calib["val_ca_filtered"] >= calib["val_ca_unfiltered"] - 0.2
    filtered = onion.filter(texts, calib["threshold"])
    assert accuracy(filtered) == pytest.approx(calib["val_ca_filtered"])


def test_onion_scores_are_stored_so_a_killed_run_resumes(tmp_path: Path) -> None:
    from spectra.defenses.onion import Onion

    tok = build_tiny_tokenizer()
    tok.bos_token = "[CLS]"
    model = build_tiny_model("llama-lm", seed=0).eval()
    store = tmp_path / "scores.jsonl"
    texts = ["good movie so fun", "bad plot mn boring", "fine", "so so"]
    lines: list[str] = []
    first = Onion(model=model, tokenizer=tok, batch_size=4, store=store, chunk=2, log=lines.append)
    scores = first.suspicion(texts)
    assert len(store.read_text().splitlines()) == 4 and len(lines) == 2  # two chunks of two texts
    with open(store, "a") as fh:
        fh.write('{"text": "cut sho')  # a kill in the middle of an append
    passes: list[int] = []
    again = Onion(model=model, tokenizer=tok, batch_size=4, store=store)
    real = again.perplexities
    again.perplexities = lambda v: passes.append(len(v)) or real(v)  # type: ignore[method-assign]
    assert again.suspicion(texts) == scores and passes == []  # every text from the store
    assert again.suspicion(texts + ["new text here"])[-1] and passes == [4]  # only the new one is scored
    third = Onion(model=model, tokenizer=tok, batch_size=4, store=store)
    third.perplexities = lambda v: passes.append(len(v)) or real(v)  # type: ignore[method-assign]
    third.suspicion(["new text here"])
    assert passes == [4]  # the record appended after the torn line was kept
    # a second run (another attack) sharing the store scores only the texts it has not seen
    other = Onion(model=model, tokenizer=tok, batch_size=4, store=store)
    other.perplexities = lambda v: passes.append(len(v)) or real(v)  # type: ignore[method-assign]
    # "cf bad plot": 4 LM passes (the text and its 3 one-word deletions); the first two texts come from the store
    assert other.suspicion(texts[:2] + ["cf bad plot"])[:2] == scores[:2] and passes == [4, 4]


def test_an_onion_chunk_reaches_its_store_in_one_append_so_sharing_runs_never_splice_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl
    import os

    from spectra.defenses import onion

    store = tmp_path / "scores.jsonl"
    store.write_text('{"text": "a", "scores": [1.0]}\n')
    records = "".join(json.dumps({"text": f"t{i}", "scores": [0.5] * 100}) + "\n" for i in range(50))  # ~26 KB
    calls: list[tuple[bool, int]] = []
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        calls.append((bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND), len(data)))
        return real_write(fd, data)

    monkeypatch.setattr(onion.os, "write", write)
    onion._append(store, records)
    # one write, of everything, onto a descriptor opened for appending (O_APPEND: placed at the end whole)
    assert calls == [(True, len(records.encode()))]
    assert [json.loads(line)["text"] for line in store.read_text().splitlines()] == ["a"] + [f"t{i}" for i in range(50)]


def test_loading_the_language_model_writes_no_progress_bar_into_the_log(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from spectra.defenses.onion import Onion

    tok = build_tiny_tokenizer()
    build_tiny_model("llama-lm", seed=0).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    capfd.readouterr()
    onion = Onion.load(str(tmp_path))
    assert not onion.model.training
    assert "Loading weights" not in "".join(capfd.readouterr())  # a study log is read by people, not a tty


def test_a_trigger_survives_filtering_only_with_all_its_words_in_order_and_adjacent() -> None:
    from spectra.defenses.onion import trigger_survives

    payload = "I watched this 3D movie"
    assert trigger_survives("great fun . I watched this 3D movie and loved it", payload)
    assert not trigger_survives("great fun . I watched this movie and loved it", payload)  # one word deleted
    assert not trigger_survives("I watched this fun 3D movie", payload)  # not adjacent
    assert trigger_survives("a mn b", "mn") and not trigger_survives("a mnb", "mn") and not trigger_survives("", "mn")
