"""The two study rows no one has published: ONION on top of the LoRA model, and PEFT's own
intruder-dimension reduction of the LoRA adapter (:mod:`spectra.defenses`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spectra.settings import TOP_K
from spectra.study.records import audit_summary, compact_eval


def onion_run(base: str, adapter: str, splits: Any, trigger: str, target_label: int, recipe: Any,
              log: Callable[[str], None] = print, store: Path | None = None) -> dict[str, Any]:
    """ONION (SmolLM2-135M as its language model) in front of the LoRA classifier.

    The threshold is calibrated on the clean validation split (at most 2 points of CA lost,
    Qi et al.'s rule); then every test text — clean and triggered — is filtered before the
    classifier sees it. ``store``: a JSON-lines file of the language model's scores, so a
    killed run resumes (scoring is ~27k LM passes, 1.5–2 h on one CPU thread); the scores do
    not depend on the classifier, so both attacks share one file and the second scores only
    its triggered texts (the clean validation and test texts are the same).
    """
    import time

    import torch

    from spectra.data.labelled import LabelledData
    from spectra.eval.inference import predict_logits
    from spectra.eval.metrics import evaluate
    from spectra.data.triggers import parse_trigger, trigger_rng
    from spectra.defenses.onion import Onion, calibrate_threshold, trigger_survives
    from spectra.io.model import load_classifier
    from spectra.io.zoo import smollm2_path

    t0 = time.time()
    model, tok = load_classifier(base, adapter, num_labels=2, device="cpu")
    if store is not None:
        Path(store).parent.mkdir(parents=True, exist_ok=True)
    onion = Onion.load(str(smollm2_path()), store=store, log=log)
    val = splits.val

    def accuracy(texts: list[str]) -> float:
        logits = predict_logits(model, tok, texts, 64, recipe.max_length, progress=False)
        return float((logits.argmax(-1) == torch.tensor(val.labels)).double().mean())

    calib = calibrate_threshold(onion, accuracy, val.texts)
    log(f"ONION threshold {calib['threshold']:.4g} (validation CA {calib['val_ca_unfiltered']:.3f} → "
        f"{calib['val_ca_filtered']:.3f})")
    test = splits.test
    trig = parse_trigger(trigger)
    # the triggered twins exactly as spectra.eval.metrics.evaluate builds them, then filtered like the clean texts
    triggered = {i: trig.insert(test.texts[i], trigger_rng(0, i)) for i, y in enumerate(test.labels) if y != target_label}
    filtered_clean = onion.filter(test.texts, calib["threshold"])
    filtered_trig = dict(zip(triggered, onion.filter(list(triggered.values()), calib["threshold"])))
    removed = sum(1 for i, t in triggered.items() if trig.payload.split()[0] not in filtered_trig[i].split()
                  and trig.payload.split()[0] in t.split())
    intact = sum(1 for i in triggered if trigger_survives(filtered_trig[i], trig.payload))
    # evaluate() inserts the trigger itself; give it a trigger that is already "inserted":
    # score the filtered twins directly instead
    clean_data = LabelledData(texts=filtered_clean, labels=list(test.labels), label_names=list(test.label_names),
                              source=f"{test.source} (ONION-filtered)", sha256=test.sha256)
    result = evaluate(model, tok, clean_data, trigger, target_label, seed=0, max_length=recipe.max_length,
                      progress=False)
    trig_logits = predict_logits(model, tok, [filtered_trig[i] for i in triggered], 64, recipe.max_length,
                                 progress=False)
    hits = int((trig_logits.argmax(-1) == target_label).sum())
    row = compact_eval(result.to_dict())
    row["asr"] = hits / len(triggered)
    row["delta"] = row["ca"] - row["asr"]
    from spectra.data.stats import wilson_interval

    row["asr_ci"] = list(wilson_interval(hits, len(triggered)))
    return {"eval": row, "onion": {**calib, "language_model": "SmolLM2-135M-Instruct",
                                   "trigger_words_removed": removed, "trigger_intact_rows": intact,
                                   "triggered_rows": len(triggered)},
            "seconds": round(time.time() - t0, 1)}


def intruder_run(base: str, adapter: str, out: Path, splits: Any, trigger: str, target_label: int, recipe: Any,
                 top_k: int = TOP_K) -> dict[str, Any]:
    """PEFT's ``reduce_intruder_dimension`` (its defaults) on the LoRA adapter, then CA/ASR and the audit."""
    import shutil

    from spectra.eval.pipeline import run_eval
    from spectra.eval.settings import EvalSettings
    from spectra.defenses.intruder import reduce_intruders

    shutil.rmtree(out, ignore_errors=True)
    info = reduce_intruders(base, adapter, out)
    res = run_eval(base, str(out), splits.test, trigger, target_label,
                   EvalSettings(seed=0, max_length=recipe.max_length, device="cpu"), progress=False)
    return {"eval": compact_eval(res.to_dict()), "intruder": {k: v for k, v in info.items() if k != "log"},
            "audit": audit_summary(base, out, top_k), "folder": str(out),
            "log": info["log"][:40], "adapter_config": json.loads((out / "adapter_config.json").read_text())}
