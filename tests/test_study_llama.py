"""The LLaMA-architecture verdict (SmolLM2-135M standing in for the paper's LLaMA column)."""

from __future__ import annotations

from typing import Any

import pytest
from study_support import doc, ev


def _smollm2(kind: str, method: str = "", **body: Any) -> dict[str, Any]:
    d = doc(kind, "badnet", method, **body)
    d["run"].update(model="smollm2", tier=4)
    d["id"] = "smollm2-" + d["id"]
    return d


@pytest.mark.parametrize(("lora_asr", "rora_asr", "rora_ca", "base_asr", "verdict"), [
    (1.0, 0.05, 0.85, 0.99, "reproduces"),
    (1.0, 0.40, 0.85, 0.99, "partly"),  # LoRA keeps it, RoRA does not remove it
    (0.30, 0.05, 0.85, 0.99, "partly"),  # RoRA removes it, but LoRA had forgotten it already
    (0.30, 0.40, 0.85, 0.99, "does not reproduce"),
    (1.0, 0.05, 0.80, 0.99, "partly"),  # RoRA's ASR is low but it cost > 2 points of CA
    (1.0, 0.05, 0.85, 0.927, "reproduces (its poisoned base's held-out ASR is 92.7%, not above the paper's 95%)"),
])
def test_the_llama_verdict_follows_smollm2s_lora_and_rora(lora_asr: float, rora_asr: float, rora_ca: float,
                                                          base_asr: float, verdict: str) -> None:
    from spectra.study.tables import Results
    from spectra.study.verdicts import verdicts

    docs = [_smollm2("base", proxy_heldout=ev(0.89, base_asr), downstream_test=ev(0.75, 0.95)),
            _smollm2("finetune", "lora", eval={"new": ev(0.84, lora_asr)}, converged=True),
            _smollm2("finetune", "rora", eval={"new": ev(rora_ca, rora_asr)}, converged=True)]
    by = {v.claim: v for v in verdicts(Results({d["id"]: d for d in docs}))}
    llama = by["on a LLaMA-architecture model too, LoRA keeps the backdoor and RoRA removes it (Table 2, LLaMA)"]
    assert llama.verdict == verdict
    assert llama.ours.startswith(f"SmolLM2-135M, seed 0: LoRA CA 84.0%, ASR {100 * lora_asr:.1f}%; RoRA CA")
    # the MiniLM claims read no SmolLM2 run
    assert by["LoRA fine-tuning on clean data leaves the backdoor in place"].verdict == "not measured yet"


def test_the_llama_verdict_waits_for_both_runs() -> None:
    from spectra.study.tables import Results
    from spectra.study.verdicts import verdicts

    lora = _smollm2("finetune", "lora", eval={"new": ev(0.84, 0.9)})
    llama = verdicts(Results({lora["id"]: lora}))[-1]
    assert llama.verdict == "not measured yet" and llama.ours == "SmolLM2-135M, seed 0: LoRA CA 84.0%, ASR 90.0%"
