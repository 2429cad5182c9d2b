"""Close calls: a verdict whose rule's edge lies inside the 95 % Student-t interval of its comparison says so."""

from __future__ import annotations

import pytest
from study_support import doc, ev

CI_CLAIM = "CI alone already reduces ASR (Table 5, SST-2)"


def _verdict(lora_asr: list[float], ci_asr: list[float]) -> str:
    from spectra.study.tables import Results
    from reproduction.verdicts import verdicts

    docs = []
    for attack in ("badnet", "insent"):
        for seed, (la, ca) in enumerate(zip(lora_asr, ci_asr)):
            docs.append(doc("finetune", attack, "lora", seed=seed, eval={"new": ev(0.84, la)}, converged=True))
            docs.append(doc("finetune", attack, "lora+ci", seed=seed, eval={"new": ev(0.84, ca)}, converged=True))
    return {v.claim: v for v in verdicts(Results({d["id"]: d for d in docs}))}[CI_CLAIM].verdict


def test_an_edge_inside_the_95_percent_interval_is_a_close_call() -> None:
    # LoRA 70 ± 5, +CI 62.3 ± 7.6 (n = 3 each): the edge is 60, the standard error of the difference 5.2,
    # Welch's df 3.5 → t(3) = 3.18: the interval's half-width 16.6 reaches well past the edge
    verdict = _verdict([0.70, 0.75, 0.65], [0.55, 0.62, 0.70])
    assert verdict == ("does not reproduce (close call: badnet +CI ASR 62.3% against the rule's edge 60.0%, inside its "
                       "95 % interval ± 16.6 (t, 3 df); insent +CI ASR 62.3% against the rule's edge 60.0%, inside its "
                       "95 % interval ± 16.6 (t, 3 df))")


@pytest.mark.parametrize(("lora", "ci", "verdict"), [
    ([0.70, 0.70, 0.70], [0.62, 0.62, 0.62], "does not reproduce"),  # same means, no spread: no doubt to report
    ([0.70, 0.75, 0.65], [0.35, 0.42, 0.50], "reproduces"),  # 27.7 points under LoRA: far past the edge
])
def test_no_close_call_when_the_margin_exceeds_the_spread(lora: list[float], ci: list[float], verdict: str) -> None:
    assert _verdict(lora, ci) == verdict
