"""Paired effects: a component's difference measured run against run (same attack, base, seed)."""

from __future__ import annotations

import pytest
from study_support import doc, ev


def test_paired_differences_pair_by_seed_and_mark_unmatched_rates() -> None:
    from reproduction.effects import effects, effects_section
    from spectra.study.tables import Results

    docs = []
    for seed, (lora, ci) in enumerate([(0.70, 0.60), (0.80, 0.72), (0.75, 0.62)]):
        docs.append(doc("finetune", "badnet", "lora", seed=seed, lr=2e-4, eval={"new": ev(0.84, lora)},
                        pt_alone={"eval": ev(0.80, lora - 0.5)}))
        docs.append(doc("finetune", "badnet", "lora+ci", seed=seed, lr=2e-4, eval={"new": ev(0.84, ci)}))
    docs.append(doc("finetune", "badnet", "lora+ci", seed=7, lr=2e-4, eval={"new": ev(0.84, 0.1)}))  # no twin
    rows = {r["effect"]: r for r in effects(Results({d["id"]: d for d in docs}))}
    ci = rows["CI, at 2e-4"]
    assert ci["pairs"] == 3 and ci["matched lr"]
    mean, (lo, hi), _ = ci["asr"]
    assert mean == pytest.approx(-10.333, abs=1e-3) and lo < mean < hi < 0  # t(2) interval of -10, -8, -13
    assert rows["Pt (top 3 blocks, match) on LoRA, 2e-4"]["asr"][0] == pytest.approx(-50.0)
    assert not rows["lr 2e-3 against 2e-4, LoRA"]["matched lr"] and rows["CI, at 2e-3"]["pairs"] == 0
    text = effects_section(Results({d["id"]: d for d in docs}))
    assert "| CI, at 2e-4 | yes | 3 | -10.3 [t " in text and "CI, at 2e-4 (-10.3)" in text


def test_users_recipes_stay_off_the_reproduction_page() -> None:
    """Evidence runs (a variant) share the results folder; the study's tables must not read them
    (its learning-rate picks are the runs with an explicit rate: a user's 1-epoch run is not one)."""
    from spectra.study.tables import Results, study_docs

    pick = doc("finetune", "badnet", "lora", lr=2e-4, eval={"new": ev(0.84, 0.75)})
    pick["run"]["lr"] = 2e-4
    user = doc("finetune", "badnet", "lora", seed=0, lr=2e-4, eval={"new": ev(0.80, 1.0)})
    user["run"].update(lr=2e-4, variant="e1-r8-qv")
    user["id"] += "__e1-r8-qv"
    docs = {d["id"]: d for d in (pick, user)}
    assert set(study_docs(docs)) == {pick["id"]}
    assert Results(study_docs(docs)).picks("lora")[2e-4] is pick


def test_the_matched_rate_verdict_reads_the_paired_intervals_at_both_rates() -> None:
    from reproduction.effects import matched_lr_verdict
    from spectra.study.tables import Results

    def docs_for(drops: dict[float, list[float]]) -> list[dict]:
        out = []
        for lr, ds in drops.items():
            for seed, d in enumerate(ds):
                out.append(doc("finetune", "badnet", "lora", seed=seed, lr=lr, eval={"new": ev(0.84, 0.9)}))
                out.append(doc("finetune", "badnet", "rora", seed=seed, lr=lr,
                               eval={"new-before-rescale": ev(0.84, 0.9 + d), "new": ev(0.84, 0.1)}))
        for d in out:
            d["id"] += f"-{d['lr']}"  # one document per rate
        return out

    def read(drops: dict[float, list[float]]) -> str:
        docs = docs_for(drops)
        return matched_lr_verdict(Results({d["id"]: d for d in docs}))[3]

    assert read({2e-4: [-0.3, -0.4, -0.35], 2e-3: [-0.2, -0.25, -0.3]}).startswith("reproduces (preliminary: 3 of 10")
    assert read({2e-4: [-0.3, -0.4, -0.35], 2e-3: [0.1, -0.2, 0.05]}).startswith("partly")
    assert read({2e-4: [0.01, -0.02, 0.0], 2e-3: [0.1, -0.2, 0.05]}).startswith("does not reproduce")
    assert read({2e-4: [-0.3], 2e-3: [-0.2, -0.25]}) == "not measured yet"
    assert "close call: at 2e-4 the interval's upper bound is -0.8" in read(
        {2e-4: [-0.015, -0.02, -0.025], 2e-3: [-0.2, -0.25, -0.3]})  # [-3.2, -0.8]
    # [+0.8, +3.2]: its lower bound is near 0, but the rule reads the upper one — no close call
    assert "close call" not in read({2e-4: [0.015, 0.02, 0.025], 2e-3: [-0.2, -0.25, -0.3]})
    # ablation runs (tier 6) that never recorded their rebuilt base's check are named
    docs = docs_for({2e-4: [-0.3, -0.4, -0.35], 2e-3: [-0.2, -0.25, -0.3]})
    for d in docs:
        if d["run"]["method"] == "rora":
            d["run"]["tier"] = 6
    docs[1]["base_rebuilt"] = {"identical": True}
    assert "5 pair(s) on a rebuilt base not checked" in matched_lr_verdict(Results({d["id"]: d for d in docs}))[3]


def test_the_effects_table_carries_pt_by_depth_and_mode_for_the_studys_recipe() -> None:
    from reproduction.effects import effects_section
    from spectra.study.tables import Results

    grid = [{"variant": None, "lr": 2e-3, "method": "lora", "as_trained": {"asr": 0.9, "ca": 0.8},
             "grid": [{"depth": "all", "mode": m, "blocks": list(range(6)), "n_blocks": 6, "rescaled": 12,
                       "modules": 12, "same_as_trained": False, "eval": {"asr": a, "ca": 0.78, "collapsed": False}}
                      for m, a in (("match", 0.3), ("amplify", 0.2))]} for _ in range(2)]
    text = effects_section(Results({}), grid)
    assert "| Pt (all 6 blocks, amplify) on the ablation's adapters at lr 0.002 (lora) | yes | 2 | -70.0 [t " in text
    users = [{**g, "variant": "e1-r8-qv"} for g in grid]
    assert "on the ablation's adapters" not in effects_section(Results({}), users)  # users' recipes: own table


def test_the_rate_pick_reads_badnet_base_0_seed_0_only() -> None:
    """The ablation trains other attacks and seeds at an explicit rate too: they are not the pick's runs."""
    from spectra.study.tables import Results

    pick = doc("finetune", "badnet", "lora", lr=2e-3, eval={"new": ev(0.84, 0.26)})
    pick["run"]["lr"] = 2e-3
    other = doc("finetune", "insent", "lora", lr=2e-3, eval={"new": ev(0.82, 0.42)})
    other["run"]["lr"] = 2e-3
    seed1 = doc("finetune", "badnet", "lora", seed=1, lr=2e-3, eval={"new": ev(0.83, 0.30)})
    seed1["run"]["lr"] = 2e-3
    for order in ((pick, other, seed1), (other, seed1, pick)):
        assert Results({d["id"]: d for d in order}).picks("lora") == {2e-3: pick}


def test_the_page_says_whether_the_ablation_trained_on_the_committed_bases() -> None:
    from reproduction.effects import rebuilt_bases_note
    from spectra.study.tables import Results

    same = {"identical": True, "compared": ["asr", "ca"], "differences": {}}
    other = {"identical": False, "compared": ["asr", "ca"], "differences": {"ca": [0.83, 0.82]}}
    docs = [doc("finetune", "badnet", "lora", seed=s, lr=2e-3, base_rebuilt=check)
            for s, check in enumerate([same, same, other])]
    docs.append(doc("finetune", "badnet", "lora", seed=3, lr=2e-3))  # trained before runs recorded the check
    older = doc("finetune", "insent", "lora", lr=2e-4)  # the study's own tier-1 run: not the ablation's
    for d in docs:
        d["run"]["tier"] = 6
    text = rebuilt_bases_note(Results({d["id"]: d for d in [*docs, older]}))
    assert "3 of its 4 runs record the check" in text
    assert "every compared number (asr, ca) on 2 of 3" in text
    assert "**differs** for badnet-finetune-lora-b0-s2," in text
    assert rebuilt_bases_note(Results({older["id"]: older})) == ""
