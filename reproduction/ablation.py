"""The matched-learning-rate ablation: what CI and Tr each add at the same rate and budget.

The study trains LoRA, +CI and Tr alone at LoRA's picked rate (2e-4) and RoRA at its own
(2e-3), so "RoRA beats LoRA" mixes the method with the rate. Here every cell of
{CI off/on} × {Tr off/on} is trained at both rates, for both attacks: three seeds on poisoned
base 0 and one seed on bases 1 and 2 (pairs — same seed, same base — differ in one switch).
The CI+Tr cell is RoRA before Pt (its runs also record Pt's result, and every adapter is
evaluated under Pt afterwards, by depth and mode). Cells the study already holds are reused:
a run at its family's picked rate keeps the study's id (``lr=None``), and the rate-pick runs
(BadNet, base 0, seed 0) are the same runs at the other rate.
"""

from __future__ import annotations

from typing import Any

from spectra.study.recipe import ATTACKS, LR_FAMILY, PICKED_LR

#: {CI} × {Tr}: the study's method for each cell (``rora`` = CI + Tr, before Pt)
CELLS = {(False, False): "lora", (True, False): "lora+ci", (False, True): "lora+tr", (True, True): "rora"}
RATES = (2e-4, 2e-3)
#: (base seed, fine-tuning seeds)
PAIRS = ((0, (0, 1, 2)), (1, (0,)), (2, (0,)))


def ablation_plan() -> list[Any]:
    """Every run of the ablation, cheapest first within each attack (existing runs are done)."""
    from spectra.study.plan import Run

    runs: list[Run] = []
    for attack in ATTACKS:
        for base, seeds in PAIRS:
            if base:
                runs.append(Run("base", attack, base, tier=2))
            for seed in seeds:
                for lr in RATES:
                    for method in CELLS.values():
                        picked = PICKED_LR[LR_FAMILY[method]] == lr
                        runs.append(Run("finetune", attack, base, method, seed, None if picked else lr,
                                        tier=1 if (base == 0 and picked) else 6))
    seen: set[str] = set()
    return [r for r in runs if not (r.id in seen or seen.add(r.id))]


def full_plan() -> list[Any]:
    """The study's plan (tiers 1-4) followed by the ablation's own runs (tier 6), each once."""
    from spectra.study.plan import study_plan
    from spectra.study.recipe import Recipe

    plan = study_plan(Recipe().lr_grid)
    ids = {r.id for r in plan}
    return plan + [r for r in ablation_plan() if r.id not in ids]
