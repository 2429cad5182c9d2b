"""Close calls: a verdict whose rule's edge lies inside the 95 % Student-t interval of its comparison says so
(paired by base and seed where both rows hold the same runs, Welch's t where they do not)."""

from __future__ import annotations

import pytest
from study_support import doc, ev

CI_CLAIM = "CI alone already reduces ASR (Table 5, SST-2)"


def _verdict(lora_asr: list[float], ci_asr: list[float]) -> str:
    from spectra.study.tables import Results
    from reproduction.verdicts import verdicts

    docs = []
    for attack in ("badnet", "insent"):
        for seed, la in enumerate(lora_asr):
            docs.append(doc("finetune", attack, "lora", seed=seed, eval={"new": ev(0.84, la)}, converged=True))
        for seed, ca in enumerate(ci_asr):
            docs.append(doc("finetune", attack, "lora+ci", seed=seed, eval={"new": ev(0.84, ca)}, converged=True))
    return {v.claim: v for v in verdicts(Results({d["id"]: d for d in docs}))}[CI_CLAIM].verdict


def test_an_edge_inside_the_95_percent_interval_is_a_close_call() -> None:
    # same seeds on both sides: paired differences -15, -13, +5 (mean -7.7, sd 11.0), t(2) = 4.303 → ± 27.4
    verdict = _verdict([0.70, 0.75, 0.65], [0.55, 0.62, 0.70])
    assert verdict == ("does not reproduce (close call: badnet +CI ASR 62.3% against the rule's edge 60.0%, inside its "
                       "95 % interval ± 27.4 (paired t, 2 df); insent +CI ASR 62.3% against the rule's edge 60.0%, "
                       "inside its 95 % interval ± 27.4 (paired t, 2 df))")


def test_rows_that_do_not_pair_run_for_run_are_compared_with_welchs_t() -> None:
    # +CI has seeds 0-1 only: 58.5 ± 4.9 (n 2) against LoRA's 70 ± 5 (n 3): Welch's df 2.3, not rounded
    verdict = _verdict([0.70, 0.75, 0.65], [0.55, 0.62])
    assert "badnet +CI ASR 58.5% against the rule's edge 60.0%" in verdict and "(Welch t, 2.3 df)" in verdict


@pytest.mark.parametrize(("lora", "ci", "verdict"), [
    ([0.70, 0.70, 0.70], [0.62, 0.62, 0.62], "does not reproduce"),  # same means, no spread: no doubt to report
    ([0.70, 0.75, 0.65], [0.42, 0.48, 0.36], "reproduces"),  # 28 ± 1 points under LoRA, seed for seed: far past it
])
def test_no_close_call_when_the_margin_exceeds_the_spread(lora: list[float], ci: list[float], verdict: str) -> None:
    assert _verdict(lora, ci) == verdict
