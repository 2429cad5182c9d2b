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
    from reproduction.verdicts import verdicts

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
    from reproduction.verdicts import verdicts

    lora = _smollm2("finetune", "lora", eval={"new": ev(0.84, 0.9)})
    llama = verdicts(Results({lora["id"]: lora}))[-1]
    assert llama.verdict == "not measured yet" and llama.ours == "SmolLM2-135M, seed 0: LoRA CA 84.0%, ASR 90.0%"


def test_smollm2s_lora_audit_is_read_beside_minilms_with_its_own_chance_level() -> None:
    from spectra.spectral import cos_random
    from spectra.study.tables import Results
    from reproduction.verdicts import llama_spectra

    table = [{"module": "model.layers.0.self_attn.q_proj", "ratio": 49.0}]
    smol = _smollm2("finetune", "lora", eval={"new": ev(0.84, 0.9)},
                    audit={"modules": 60, "ratio_median": 49.0, "ratio_min": 12.5, "cos_right_median": 0.2,
                           "modules_table": table},
                    pt_alone={"eval": ev(0.79, 0.85), "rescale": {
                        "modules": [f"model.layers.{b}.self_attn.{m}_proj" for b in (27, 28, 29) for m in "qv"],
                        "multipliers": [48.4, 42.4, 27.5, 52.1, 38.6, 49.3], "multiplier_min": 27.5,
                        "multiplier_max": 52.1}})
    mini = [doc("finetune", "badnet", "lora", seed=s, eval={"new": ev(0.84, 0.7)},
                audit={"ratio_median": r, "modules_table": table}) for s, r in ((0, 3.6), (1, 2.9))]
    assert llama_spectra(Results({d["id"]: d for d in mini})) == ""  # nothing until SmolLM2's adapter is audited
    text = llama_spectra(Results({d["id"]: d for d in [smol, *mini]}))
    chance = cos_random(576, 32)
    assert chance < cos_random(384, 32)  # a wider space: a random direction aligns less
    assert text == ("Figure 1 on SmolLM2's LoRA adapter (60 modules): median σ_pre/σ_Δ 49.0 (smallest 12.5); MiniLM's "
                    "LoRA runs: 2.9–3.6. Figure 2: median max|cos| of ΔW's leading right singular vector with W_pre's "
                    f"top 32 is 0.200, against {chance:.3f} for a random direction in R^576. Pt multiplied the scale of its "
                    "6 modules (blocks 27–29 of 30) by 28–52×, and LoRA's ASR went from 90.0% to 85.0%.\n")
    rora = _smollm2("finetune", "rora", audit_before_pt={"cos_right_median": 4.6e-5},
                    eval={"new-before-rescale": ev(0.861, 0.528), "new": ev(0.846, 0.596)},
                    rescale={"multipliers": [303.3, 46.2], "multiplier_min": 46.2, "multiplier_max": 303.3})
    text = llama_spectra(Results({d["id"]: d for d in [smol, rora, *mini]}))
    assert text.endswith("85.0%. With Tr, RoRA's median max|cos| is 4.6e-05; Pt multiplied the same modules by "
                         "46–303×, and its ASR went from 52.8% (+CI+Tr) to 59.6% at CA 86.1% → 84.6%.\n")


def test_the_llama_verdict_gives_each_asr_its_interval_and_marks_an_edge_inside_it() -> None:
    from spectra.study.tables import Results
    from reproduction.verdicts import verdicts

    lora = _smollm2("finetune", "lora", eval={"new": {**ev(0.84, 0.82), "asr_ci": [0.78, 0.86]}}, converged=True)
    rora = _smollm2("finetune", "rora", eval={"new": {**ev(0.85, 0.05), "asr_ci": [0.03, 0.08]}}, converged=True)
    llama = verdicts(Results({d["id"]: d for d in (lora, rora)}))[-1]
    assert "LoRA CA 84.0%, ASR 82.0% [Wilson 78.0–86.0]" in llama.ours
    assert llama.verdict == "reproduces (close call: LoRA ASR's interval contains the rule's 80%)"
