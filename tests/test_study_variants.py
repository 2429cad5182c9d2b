"""Table 4's verdict: RoRA on top of the LoRA variants, read pair by pair."""

from __future__ import annotations

from typing import Any

import pytest
from study_support import doc, ev

CLAIM = "RoRA on top of PiSSA, DoRA and OLoRA lowers their ASR too (Table 4)"


def _pairs(fixed_asr: float, fixed_ca: float = 0.84, skip: str = "") -> list[dict[str, Any]]:
    docs = []
    for attack in ("badnet", "insent"):
        for method in ("pissa", "dora", "olora"):
            docs.append(doc("finetune", attack, method, eval={"new": ev(0.84, 0.95)}, converged=True))
            if f"{attack}/{method}" != skip:
                docs.append(doc("finetune", attack, f"{method}+rora", eval={"new": ev(fixed_ca, fixed_asr)},
                                converged=True))
    return docs


def _verdict(docs: list[dict[str, Any]]) -> Any:
    from spectra.study.tables import Results
    from reproduction.verdicts import verdicts

    return {v.claim: v for v in verdicts(Results({d["id"]: d for d in docs}))}[CLAIM]


@pytest.mark.parametrize(("fixed_asr", "fixed_ca", "verdict"), [
    (0.20, 0.84, "reproduces"),  # 75 points lower everywhere
    (0.70, 0.84, "does not reproduce"),  # 25 points lower: under the rule's 30
    (0.20, 0.80, "does not reproduce"),  # the ASR falls, but at 4 points of CA
])
def test_the_variants_verdict_reads_every_pair(fixed_asr: float, fixed_ca: float, verdict: str) -> None:
    v = _verdict(_pairs(fixed_asr, fixed_ca))
    assert v.verdict == verdict
    assert v.ours.startswith(f"badnet: PiSSA 95.0% → {100 * fixed_asr:.1f}%, DoRA")
    assert v.paper == "RoBERTa: ASR 43–95 points lower with RoRA; LLaMA: ASR 4–88 points lower with RoRA"


def test_the_variants_verdict_is_partly_when_one_pair_falls_short_and_waits_for_all_six() -> None:
    docs = _pairs(0.20)
    docs[-1]["eval"]["new"] = ev(0.84, 0.90)  # insent OLoRA + RoRA: 5 points lower
    assert _verdict(docs).verdict == "partly"
    assert _verdict(_pairs(0.20, skip="insent/dora")).verdict == "not measured yet"


def test_pt_inside_each_rora_run_names_its_multipliers_and_the_asr_it_moved() -> None:
    from reproduction.render import _pt_inside
    from spectra.study.tables import Results

    shrunk = doc("finetune", "badnet", "olora+rora", eval={"new-before-rescale": ev(0.824, 0.441),
                                                          "new": ev(0.828, 0.725)},
                 rescale={"multipliers": [0.534, 0.709], "multiplier_min": 0.534, "multiplier_max": 0.709})
    assert _pt_inside(Results({})) == ""
    text = _pt_inside(Results({shrunk["id"]: shrunk}))
    assert text.endswith("\n\n- badnet: OLoRA + RoRA ×0.534–0.709, ASR 44.1 → 72.5%\n")
    assert "a multiplier below 1 shrinks an update that was already stronger than W_pre" in text


def test_a_one_seed_pair_names_an_edge_inside_its_test_set_interval() -> None:
    from reproduction.margins import test_set_close_call
    from spectra.data.stats import wilson_interval

    def ev_n(ca_hits: int, asr_hits: int) -> dict:
        return {"ca": ca_hits / 700, "ca_ci": list(wilson_interval(ca_hits, 700)), "asr": asr_hits / 400,
                "asr_ci": list(wilson_interval(asr_hits, 400))}

    # ASR 90 % → 62 %: a 28-point drop whose Newcombe interval (about ±6) holds the 30-point edge; CA unchanged
    near = test_set_close_call("badnet OLoRA", ev_n(588, 360), ev_n(588, 248))
    assert len(near) == 2 and near[0].startswith("badnet OLoRA's ASR drop +28.0 has the rule's +30 inside")
    assert "CA change +0.0 has the rule's -2 inside" in near[1]  # ±3.8 points of CA on 700 texts
    assert not any("ASR" in c for c in test_set_close_call("x", ev_n(588, 360), ev_n(588, 40)))  # 80 points: clear
