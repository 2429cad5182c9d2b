"""The study's machinery on known inputs: the crossing search finds a root it is given, the
measured crossing interpolates as defined, the baselines (ONION, PEFT's intruder reduction)
run on tiny models, and tables and verdicts follow the numbers of hand-made results."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import build_tiny_model, build_tiny_tokenizer
from study_support import doc as _doc, ev as _ev


# --------------------------------------------------------------------------- crossing search


def _margins(slopes: torch.Tensor, offsets: torch.Tensor):
    """Rows whose target-vs-rest margin is slope·γ − offset: row i crosses at offset_i / slope_i."""
    return lambda gamma: slopes * gamma - offsets


def test_search_finds_the_median_crossing_upward_and_downward() -> None:
    from spectra.threshold.search import search_crossing

    crossings = torch.tensor([2.0, 3.0, 5.0, 7.0, 11.0], dtype=torch.float64)  # the median row crosses at 5
    slopes = torch.tensor([1.0, 0.5, 2.0, 1.5, 0.25], dtype=torch.float64)
    res = search_crossing(_margins(slopes, slopes * crossings), rows=5)
    assert res.gamma == pytest.approx(5.0, rel=0.05)
    assert res.bracket[0] <= 5.0 <= res.bracket[1] and res.bracket[1] / res.bracket[0] <= 1.25
    assert res.forward_passes == 5 * len(res.evaluations) and len(res.evaluations) <= 14
    assert [e[0] for e in res.evaluations[:4]] == [1.0, 2.0, 4.0, 8.0]  # doubling from the trained scale

    below = search_crossing(_margins(slopes, slopes * crossings / 16), rows=5)  # crossing at 5/16
    assert below.gamma == pytest.approx(5 / 16, rel=0.05)
    never = search_crossing(lambda g: torch.full((5,), -1.0, dtype=torch.float64), rows=5, gamma_max=64)
    assert never.gamma == math.inf and never.bracket is None
    already = search_crossing(lambda g: torch.full((5,), 1.0, dtype=torch.float64), rows=5)
    assert already.gamma == 0.0


def test_target_margins_are_negative_exactly_when_the_target_wins() -> None:
    from spectra.threshold.search import target_margins

    logits = torch.tensor([[0.0, 1.0, 0.5], [2.0, 1.0, 0.0], [1.0, 1.0, 3.0]])
    m = target_margins(logits, target=1)
    assert m.tolist() == pytest.approx([-0.5, 1.0, 2.0])
    assert ((m < 0) == (logits.argmax(1) == 1)).all()


def test_measured_crossing_interpolates_log_linearly_between_grid_points() -> None:
    from spectra.threshold import measured_crossing

    rows = [{"gamma": 0.0, "asr": 1.0}, {"gamma": 1.0, "asr": 0.9}, {"gamma": 4.0, "asr": 0.7},
            {"gamma": 16.0, "asr": 0.3}, {"gamma": 64.0, "asr": 0.1}]
    # between 4 (70%) and 16 (30%): halfway in log γ is 8
    assert measured_crossing(rows) == pytest.approx(8.0)
    assert measured_crossing([{"k": 0.0, "asr": 0.2}]) == 0.0  # rows of 0.1 call γ "k"
    assert measured_crossing([{"gamma": 1.0, "asr": 0.9}, {"gamma": 2.0, "asr": 0.6}]) == math.inf


# --------------------------------------------------------------------------- baselines


def test_intruder_reduction_keeps_the_trained_head_and_loads_with_plain_peft(tmp_path: Path) -> None:
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    from spectra.defenses.intruder import reduce_intruders

    base = tmp_path / "base"
    build_tiny_model("bert", seed=0).save_pretrained(base)
    build_tiny_tokenizer(base)
    torch.manual_seed(3)
    model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, target_modules=["query", "value"],
                                      task_type="SEQ_CLS"))
    head = model.base_model.model.classifier.modules_to_save["default"]
    with torch.no_grad():
        head.weight.add_(torch.randn_like(head.weight))
    trained_head = head.weight.detach().clone()
    model.save_pretrained(tmp_path / "lora")
    info = reduce_intruders(base, tmp_path / "lora", tmp_path / "reduced", threshold_epsilon=0.9)
    assert info["modules"] == 4
    saved = load_file(str(tmp_path / "reduced" / "adapter_model.safetensors"))
    head_keys = [k for k in saved if "classifier" in k and k.endswith("weight")]
    assert head_keys and torch.allclose(saved[head_keys[0]], trained_head)
    reloaded = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base), tmp_path / "reduced")
    ids = torch.tensor([[2, 10, 11, 3]])
    assert torch.isfinite(reloaded(input_ids=ids).logits).all()


# --------------------------------------------------------------------------- tables and verdicts


def _study(lora_asr: float, rora_asr: float, rora_ca: float) -> dict[str, dict[str, Any]]:
    docs = {}
    for attack in ("badnet", "insent"):
        for seed in (0, 1, 2):
            for d in (_doc("finetune", attack, "lora", seed, eval={"new": _ev(0.86, lora_asr)},
                           pt_alone={"eval": _ev(0.84, 0.05)},
                           audit={"ratio_median": 20.0, "cos_left_median": 0.3, "cos_right_median": 0.25,
                                  "modules_table": [{}]}),
                      _doc("finetune", attack, "rora", seed, eval={"new": _ev(rora_ca, rora_asr),
                                                                   "new-before-rescale": _ev(0.85, 0.95)}),
                      _doc("finetune", attack, "fft", seed, eval={"new": _ev(0.85, 0.97)})):
                docs[d["id"]] = d
    return docs


def test_cells_average_over_seeds_and_count_collapses() -> None:
    from spectra.study.tables import Results

    docs = _study(0.99, 0.05, 0.84)
    docs["badnet-finetune-rora-b0-s2"]["eval"]["new"] = _ev(0.59, 0.0, collapsed=True)
    res = Results(docs)
    cell = res.cell("+CI+Tr+Pt (RoRA)", "badnet", seeds=(0, 1, 2))
    assert cell.n == 3 and cell.collapsed == 1
    assert cell.stat("ca") == pytest.approx((100 * (0.84 + 0.84 + 0.59) / 3, 100 * 0.1443375673), rel=1e-6)
    assert res.cell("Pt alone (LoRA + Pt)", "insent").mean("asr") == pytest.approx(5.0)
    assert res.cell("PiSSA", "badnet").n == 0 and res.cell("PiSSA", "badnet").fmt("ca") == "—"


@pytest.mark.parametrize("lora_asr, rora_asr, rora_ca, lora_v, rora_v", [
    (0.99, 0.05, 0.85, "reproduces", "reproduces"),
    (0.99, 0.45, 0.85, "reproduces", "partly"),
    (0.40, 0.30, 0.85, "does not reproduce", "does not reproduce"),
])
def test_verdicts_follow_the_numbers(lora_asr: float, rora_asr: float, rora_ca: float, lora_v: str,
                                     rora_v: str) -> None:
    from spectra.study.tables import Results
    from reproduction.verdicts import verdicts

    by = {v.claim: v for v in verdicts(Results(_study(lora_asr, rora_asr, rora_ca)))}
    assert by["LoRA fine-tuning on clean data leaves the backdoor in place"].verdict == lora_v
    assert by["RoRA removes the backdoor at little cost in clean accuracy"].verdict == rora_v
    assert by["CI alone already reduces ASR (Table 5, SST-2)"].verdict == "not measured yet"
    assert by["LoRA's updates are spectrally weak: σ_max(s·ΔW) ≪ σ_max(W_pre) (Figure 1)"].verdict == "reproduces"


def test_results_written_before_the_rename_read_under_the_new_names(tmp_path: Path) -> None:
    from spectra.study.tables import load_results

    old = {"id": "x", "run": {"kind": "sweep"}, "measured_crossing_k": 5.0, "sweep": [{"k": 1.0, "asr": 0.9}]}
    (tmp_path / "x.json").write_text(json.dumps(old))
    doc = load_results(tmp_path)["x"]
    assert doc["measured_crossing_gamma"] == 5.0 and doc["sweep"][0]["gamma"] == 1.0


def test_plan_ids_are_unique_and_every_dependency_is_planned() -> None:
    from spectra.study.plan import study_plan

    plan = study_plan()
    ids = [r.id for r in plan]
    assert len(ids) == len(set(ids))
    planned = set(ids)
    for r in plan:
        assert all(d.id in planned for d in r.deps()), r.id
    tiers = {r.tier for r in plan}
    assert tiers == {1, 2, 3, 4}
    core = [r for r in plan if r.tier == 1 and r.kind == "finetune" and r.lr is None]
    assert {(r.attack, r.method) for r in core if r.seed == 2} == {(a, m) for a in ("badnet", "insent")
                                                                   for m in ("fft", "lora", "lora+ci", "lora+tr", "rora")}


def test_the_demos_learning_rates_are_the_ones_the_study_picked() -> None:
    """``PICKED_LR`` is a constant (the demo runs on machines without the study's results);
    wherever a family's three pick runs are committed, the constant must be their pick."""
    from spectra.study.plan import lr_picks
    from spectra.study.recipe import PICKED_LR, SELECTED, Recipe
    from spectra.train.validation import pick_learning_rate

    results = Path(__file__).resolve().parent.parent / "docs" / "study" / "results"
    checked = 0
    for family in SELECTED:
        files = [results / f"{run.id}.json" for run in lr_picks(family, Recipe().lr_grid)]
        if not all(f.exists() for f in files):
            continue
        curves = {}
        for run, f in zip(lr_picks(family, Recipe().lr_grid), files):
            curves[float(run.lr)] = [row["val_ca"] for row in json.loads(f.read_text())["epochs"]
                                     if row.get("val_ca") is not None]
        assert PICKED_LR[family] == pick_learning_rate(curves), family
        checked += 1
    if not checked:
        pytest.skip("no family's learning-rate pick is committed yet")


def test_readme_blocks_are_rewritten_between_their_markers_only(tmp_path: Path) -> None:
    from spectra.report.readme_blocks import replace_block, update_file_blocks

    text = "# t\nhand\n<!-- a:begin -->\nold\n<!-- a:end -->\ntail\n"
    assert replace_block(text, "a", "new 1.0%") == "# t\nhand\n<!-- a:begin -->\nnew 1.0%\n<!-- a:end -->\ntail\n"
    with pytest.raises(KeyError):
        replace_block(text, "b", "x")
    readme = tmp_path / "README.md"
    readme.write_text(text)
    assert update_file_blocks(readme, {"a": "x", "missing": "y"}) == ["a"]
    assert readme.read_text().count("x") == 1 and "hand" in readme.read_text() and "old" not in readme.read_text()


def test_the_readme_summary_is_generated_from_the_numbers() -> None:
    from reproduction.render import readme_summary
    from spectra.study.tables import Results

    holds = readme_summary(Results(_study(0.99, 0.05, 0.85)))
    assert "*RoRA removes the backdoor at little cost in clean accuracy* — **reproduces**" in holds
    fails = readme_summary(Results(_study(0.40, 0.30, 0.85)))
    assert "*LoRA fine-tuning on clean data leaves the backdoor in place* — **does not reproduce**" in fails
    assert "no verdict yet" in fails  # the ablation rows of this toy study were never run


def test_verdicts_before_three_seeds_are_marked_preliminary() -> None:
    from spectra.study.tables import Results
    from reproduction.verdicts import verdicts

    docs = {k: v for k, v in _study(0.99, 0.05, 0.85).items() if v["run"]["seed"] == 0}
    by = {v.claim: v.verdict for v in verdicts(Results(docs))}
    assert by["LoRA fine-tuning on clean data leaves the backdoor in place"] == \
        "reproduces (preliminary: 1 of 3 LoRA seeds)"
    assert by["CI alone already reduces ASR (Table 5, SST-2)"] == "not measured yet"


def test_one_attack_measured_shows_its_numbers_but_no_verdict() -> None:
    """A verdict needs both attacks; the numbers measured so far are shown beside it."""
    from spectra.study.tables import Results
    from reproduction.verdicts import verdicts

    docs = {k: v for k, v in _study(0.99, 0.05, 0.85).items() if v["run"]["attack"] == "badnet"}
    by = {v.claim: v for v in verdicts(Results(docs))}
    lora = by["LoRA fine-tuning on clean data leaves the backdoor in place"]
    assert lora.verdict == "not measured yet"
    assert lora.ours == "badnet: LoRA CA 86.0%, ASR 99.0% (n=3); insent: not run yet"
    assert by["CI alone already reduces ASR (Table 5, SST-2)"].ours == ""


def test_the_threshold_verdict_is_preliminary_until_every_planned_lora_sweep() -> None:
    from spectra.study.plan import study_plan
    from spectra.study.tables import Results
    from reproduction.verdicts import verdicts

    planned = [r for r in study_plan() if r.kind == "sweep" and r.method == "lora"]
    claim = "Proposition 4.2's threshold locates where LoRA starts to forget"

    def sweep(i: int, measured: float, linear: float) -> dict[str, Any]:
        return _doc("sweep", "badnet", "lora", i, measured_crossing_gamma=measured, predicted_threshold_gamma=linear)

    one = {d["id"]: d for d in [sweep(0, 1.2, 1.9)]}
    # one sweep: any constant γ is as right as the prediction, so there is no skill to claim yet
    got = {v.claim: v.verdict for v in verdicts(Results(one))}[claim]
    assert got.startswith("does not reproduce (no skill over the constant γ") and \
        got.endswith(f"(preliminary: 1 of {len(planned)} LoRA sweeps; close call: 80%, 50% inside the share's "
                     "95 % interval 21%–100%)")  # Wilson's interval of 1 of 1
    # crossings spread over two decades: one constant lands within 2× of 4 of the 10
    spread = [1.2 * 10 ** (i % 3) for i in range(len(planned))]
    every = {d["id"]: d for d in [sweep(i, m, m * (1.9 if i % 2 else 9.0)) for i, m in enumerate(spread)]}
    # 50 % within 2×, above the constant's 40 % (4 of 10) — both edges inside Wilson's 24–76 % for 5 of 10
    assert {v.claim: v.verdict for v in verdicts(Results(every))}[claim] == \
        "partly (close call: 50%, 40% inside the share's 95 % interval 24%–76%)"
    tracked = {d["id"]: d for d in [sweep(i, m, m * 1.5) for i, m in enumerate(spread)]}
    assert {v.claim: v.verdict for v in verdicts(Results(tracked))}[claim] == \
        "reproduces (close call: 80% inside the share's 95 % interval 72%–100%)"  # 10 of 10 is not yet sure of 80 %
    same = {d["id"]: d for d in [sweep(i, 1.2, 1.9) for i in range(len(planned))]}  # what the study measured
    assert {v.claim: v.verdict for v in verdicts(Results(same))}[claim].startswith("does not reproduce (no skill")


def test_the_page_says_when_peft_intruder_reduction_changed_nothing() -> None:
    from reproduction.render import _intruder_note
    from spectra.study.tables import Results

    def run(attack: str, hits: int) -> dict[str, Any]:
        return _doc("intruder", attack, "lora", eval=_ev(0.84, 0.75),
                    intruder={"modules_with_intruders": hits, "modules": 12, "top_k": 10,
                              "threshold_epsilon": 0.5, "mitigation_lambda": 0.75})

    none = _intruder_note(Results({d["id"]: d for d in (run("badnet", 0), run("insent", 0))}))
    assert "badnet seed 0: 0 of 12 modules; insent seed 0: 0 of 12 modules" in none
    assert "changed no module" in none
    some = _intruder_note(Results({d["id"]: d for d in (run("badnet", 3), run("insent", 0))}))
    assert "badnet seed 0: 3 of 12 modules" in some and "changed no module" not in some
    assert _intruder_note(Results({})) == ""


def test_table1_names_a_base_whose_backdoor_is_below_the_papers_bar() -> None:
    from reproduction.render import _table1
    from spectra.study.tables import Results

    def base(asr: float, model: str = "minilm") -> dict[str, Any]:
        doc = _doc("base", "badnet", proxy_heldout=_ev(0.89, asr), downstream_test=_ev(0.75, 0.95))
        doc["run"]["model"], doc["id"] = model, f"{model}-{doc['id']}"
        return doc

    strong = _table1(Results({d["id"]: d for d in (base(1.0),)}))
    assert "Below that bar" not in strong
    weak = _table1(Results({d["id"]: d for d in (base(1.0), base(0.927, "smollm2"))}))
    assert "Below that bar on the held-out proxy rows: smollm2 badnet base 0 (92.7%; on CR test 95.0%);" in weak
    longer = base(0.97, "smollm2")
    longer.update(poison_epochs=4.0, stages=[{"epochs": 3.0, "proxy_heldout": _ev(0.89, 0.927)},
                                             {"epochs": 4.0, "proxy_heldout": _ev(0.89, 0.97)}])
    passed = _table1(Results({d["id"]: d for d in (base(1.0), longer)}))
    assert "Below that bar" not in passed
    assert ("Poisoned past the paper's 3 epochs to try to pass that bar (held-out ASR): smollm2 badnet base 0: "
            "92.7% after 3 → 97.0% after 4 epochs; fine-tuned from the 4-epoch stage.") in passed
    assert "| smollm2 | badnet | 0 | 4 |" in passed


def test_the_page_says_how_often_onion_deleted_the_trigger() -> None:
    from reproduction.render import _onion_note
    from spectra.study.tables import Results

    def run(attack: str, removed: int, intact: int | None = None) -> dict[str, Any]:
        info = {"threshold": 0.366, "val_ca_unfiltered": 0.882, "val_ca_filtered": 0.865,
                "trigger_words_removed": removed, "triggered_rows": 400}
        return _doc("onion", attack, "lora", eval=_ev(0.82, 0.21),
                    onion=info if intact is None else {**info, "trigger_intact_rows": intact})
    guarded = [_doc("finetune", "badnet", "lora", seed, eval={"new": _ev(0.841, a)})
               for seed, a in ((0, 0.751), (1, 0.6))]
    note = _onion_note(Results({d["id"]: d for d in [run("badnet", 372), run("insent", 10, 120)] + guarded}))
    assert "badnet (the LoRA adapter it guards, seed 0: CA 84.1%, ASR 75.1% without it): threshold 0.366, clean " \
           "validation CA 88.2 → 86.5%; it deleted the trigger's first word (\"mn\") from 372 of 400 triggered " \
           "test rows (93%)" in note
    assert "insent: threshold" in note  # no LoRA run of its own in these results: nothing claimed about it
    # InSent's sentence starts with "I"; the rows whose whole sentence survived say more (runs since 0.2)
    assert '("I") from 10 of 400 triggered test rows (2%); the whole trigger was left intact in 120 of 400' in note
    assert "(93%); the whole" not in note  # a run that did not count it claims nothing
    assert _onion_note(Results({})) == ""


def test_table1_marks_a_base_resumed_from_a_checkpoint_as_a_lower_bound_on_its_wall() -> None:
    from reproduction.render import _table1
    from spectra.study.tables import Results

    def base(seed: int, resumed: bool) -> dict[str, Any]:
        return _doc("base", "badnet", base_seed=seed, proxy_heldout=_ev(0.83, 1.0), downstream_test=_ev(0.76, 1.0),
                    poison_wall_s=1800.0, resumed=resumed)

    rows = [ln for ln in _table1(Results({d["id"]: d for d in (base(0, False), base(1, True))})).splitlines()
            if ln.startswith("| minilm")]
    assert rows[0].endswith("| 30 |") and rows[1].endswith("| ≥ 30 (resumed) |")


def test_the_run_table_lists_the_seed_0_run_that_reuses_the_lr_pick_once() -> None:
    from reproduction.render import _runs
    from spectra.study.tables import Results

    curve = [{"val_ca": v} for v in (0.80, 0.86, 0.88, 0.88, 0.88, 0.87)]
    pick = _doc("finetune", "badnet", "lora", epochs=curve, lr=2e-4, wall_s=1800.0, cpu_s=1700.0)
    pick["id"] = "minilm__badnet__b0__finetune__lora__s0__lr0.0002"
    seed0 = _doc("finetune", "badnet", "lora", epochs=curve, lr=2e-4, wall_s=0.0, same_as=pick["id"],
                 wall_s_of_original=1800.0)
    seed0["id"] = "minilm__badnet__b0__finetune__lora__s0"
    rows = [ln for ln in _runs(Results({d["id"]: d for d in (pick, seed0)})).splitlines() if ln.startswith("| minilm")]
    assert rows == ["| minilm__badnet__b0__lora__s0__lr0.0002 (= minilm__badnet__b0__lora__s0) | 0.0002 | 6 | "
                    "87.0 / 88.0 | yes | 1.0 | 30 | 28 |"]


def test_the_sweep_figure_says_seed_0_when_no_curve_is_a_mean() -> None:
    from spectra.study.figures import sweep_figure
    from spectra.study.tables import Results

    def sweep(seed: int) -> dict[str, Any]:
        return _doc("sweep", "badnet", "lora", seed, sweep=[{"gamma": g, "ca": 0.8, "asr": a}
                                                             for g, a in ((0.0, 1.0), (1.0, 0.7), (4.0, 0.1))])

    one = sweep_figure(Results({d["id"]: d for d in (sweep(0),)}), "badnet")
    three = sweep_figure(Results({d["id"]: d for d in (sweep(0), sweep(1), sweep(2))}), "badnet")
    assert one.axes[0].get_title().endswith("base 0, seed 0)")
    assert three.axes[0].get_title().endswith("base 0, mean over seeds, band ± std)")


def test_the_sweep_marks_where_a_seed_collapsed_and_the_page_names_the_first_such_gamma() -> None:
    from spectra.study.figures import sweep_figure
    from reproduction.render import _figure3
    from spectra.study.tables import Results

    def sweep(seed: int, collapse_at: float) -> dict[str, Any]:
        rows = [{"gamma": g, "ca": 0.8, "asr": a, "asr_floor": 0.1, "collapsed": g >= collapse_at}
                for g, a in ((0.0, 1.0), (1.0, 0.7), (4.0, 0.1), (16.0, 1.0))]
        return _doc("sweep", "badnet", "lora", seed, sweep=rows)

    results = Results({d["id"]: d for d in (sweep(0, 16.0), sweep(1, 4.0), sweep(2, 99.0))})
    ax = sweep_figure(results, "badnet").axes[0]
    marks = [c for c in ax.collections if "collapsed" in str(c.get_label())]
    assert len(marks) == 1 and sorted(x for x, _ in marks[0].get_offsets()) == [4.0, 16.0]  # any seed marks its γ
    assert any(line.get_label() == "LoRA ASR floor (no trigger)" for line in ax.get_lines())
    text = _figure3(results, "../figures")
    assert "badnet LoRA γ = 4" in text and "RoRA" not in text.split("First collapse")[1]  # no RoRA sweep, no claim


def test_table2s_poisoned_base_row_spreads_over_the_bases_and_the_others_over_seeds_on_base_0() -> None:
    from reproduction.render import _table2
    from spectra.study.tables import Results

    docs = [_doc("base", "badnet", base_seed=b, downstream_test=_ev(0.70 + 0.02 * b, 1.0)) for b in (0, 1, 2)]
    docs += [_doc("finetune", "badnet", "lora", seed=0, base_seed=b, eval={"new": _ev(0.84, 0.5 + 0.2 * b)})
             for b in (0, 1)]
    badnet = _table2(Results({d["id"]: d for d in docs}), "f").split("### insent")[0]
    rows = {ln.split(" | ")[0]: ln for ln in badnet.splitlines()}
    # mean [95 % Student-t interval]: 72.0 ± t(2)·2/√3 = ± 4.97
    assert rows["| poisoned base"].startswith("| poisoned base | 3 | 72.0 [67.0, 77.0] | 100.0 [100.0, 100.0]")
    assert rows["| LoRA"].startswith("| LoRA | 1 | 84.0 | 50.0 |")  # base 1's LoRA is in the bases table


def test_the_checkpoint_verdict_is_a_one_way_anova_over_bases() -> None:
    from reproduction.render import _gaps_per_base
    from spectra.study.tables import Results
    from reproduction.verdicts import verdicts

    def runs(badnet_bases: tuple[float, ...], insent_bases: tuple[float, ...]) -> Results:
        docs = []
        for attack, by_base in (("badnet", badnet_bases), ("insent", insent_bases)):
            docs += [_doc("finetune", attack, "lora", seed=s, eval={"new": _ev(0.84, asr)},
                          pt_alone={"eval": _ev(0.80, 0.05)}) for s, asr in ((1, 0.70), (2, 0.80))]  # std 5 with s0
            docs += [_doc("finetune", attack, "lora", seed=0, base_seed=b, eval={"new": _ev(0.84, asr)},
                          pt_alone={"eval": _ev(0.80, 0.05)}) for b, asr in enumerate(by_base)]
        return Results({d["id"]: d for d in docs})

    def checkpoint(results: Results) -> str:
        return {v.claim.split(" (")[0]: v.verdict for v in verdicts(results)}[
            "whether the backdoor survives LoRA depends on the poisoned checkpoint"]

    assert checkpoint(runs((0.75,), (0.75,))) == "not measured yet"  # one base each
    # two bases, groups {75, 70, 80} and {95}: F = 300 / 25 = 12 on (1, 2) df, under F(1, 2)'s 97.5 % point 38.5
    assert checkpoint(runs((0.75, 0.95), (0.75, 0.80))) == \
        "inconclusive at 2 bases (every interval includes 0) (preliminary: 2 of 3 bases)"
    # groups {75, 70, 80}, {95}, {55}: MS_between 400, MS_within 25, F = 16 < F(2, 2)'s 39: includes 0
    assert checkpoint(runs((0.75, 0.95, 0.55), (0.75, 0.95, 0.55))).startswith("inconclusive at 3 bases")
    # groups {75, 70, 80}, {5}, {99}: F = 2526.4 / 25 = 101.1, n₀ = 1.4, lower bound (101.1/39 − 1)/1.4 = 1.14 > 0
    assert checkpoint(runs((0.75, 0.05, 0.99), (0.75, 0.05, 0.99))) == "reproduces"
    assert checkpoint(runs((0.75, 0.05, 0.99), (0.75, 0.76, 0.74))) == "partly"
    # a LoRA run whose validation CA was still rising is named in the verdict, as in every other row
    rising = runs((0.75, 0.05, 0.99), (0.75, 0.05, 0.99))
    next(d for d in rising.docs.values() if d["run"]["base_seed"] == 1)["epochs"] = \
        [{"val_ca": v} for v in (0.70, 0.75, 0.80, 0.85)]
    assert checkpoint(rising) == "reproduces (1 of its runs not converged)"
    gaps = _gaps_per_base(runs((0.75, 0.95), (0.75, 0.80)))
    assert "- badnet: base 0 (LoRA 75.0%): Pt alone 70.0; base 1 (LoRA 95.0%): Pt alone 90.0" in gaps


def test_a_verdict_is_marked_by_the_cells_it_reads_and_by_unconverged_runs() -> None:
    """RoRA's verdict with 3 LoRA seeds but 1 RoRA seed is marked by RoRA's count; a run that
    had not converged is named in the mark."""
    from spectra.study.tables import Results
    from reproduction.verdicts import verdicts

    docs = {k: v for k, v in _study(0.99, 0.05, 0.85).items()
            if not (v["run"]["method"] == "rora" and v["run"]["attack"] == "insent" and v["run"]["seed"] > 0)}
    by = {v.claim: v.verdict for v in verdicts(Results(docs))}
    assert by["RoRA removes the backdoor at little cost in clean accuracy"] == \
        "reproduces (preliminary: 1 of 3 RoRA seeds)"
    assert by["LoRA fine-tuning on clean data leaves the backdoor in place"] == "reproduces"
    docs["badnet-finetune-fft-b0-s0"]["converged"] = False
    by = {v.claim: v.verdict for v in verdicts(Results(docs))}
    assert by["full fine-tuning forgets more of the backdoor than LoRA"].endswith("(1 of its runs not converged)")
    # the stored curve decides, by the rule every table applies, not a flag written by older code
    fft = docs["badnet-finetune-fft-b0-s0"]
    fft["converged"], fft["epochs"] = True, [{"val_ca": 0.80 + 0.01 * i} for i in range(6)]  # still climbing
    by = {v.claim: v.verdict for v in verdicts(Results(docs))}
    assert by["full fine-tuning forgets more of the backdoor than LoRA"].endswith("(1 of its runs not converged)")
    fft["converged"], fft["epochs"] = False, [{"val_ca": 0.85} for _ in range(6)]  # flat: converged
    by = {v.claim: v.verdict for v in verdicts(Results(docs))}
    assert "not converged" not in by["full fine-tuning forgets more of the backdoor than LoRA"]


def test_variance_components_match_a_hand_computed_unbalanced_anova() -> None:
    from reproduction.checkpoint import variance_components

    vc = variance_components({"0": [75.0, 70.0, 80.0], "1": [5.0], "2": [99.0]})
    assert vc is not None
    assert vc["F"] == pytest.approx(2526.4 / 25) and vc["n0"] == pytest.approx(1.4)
    assert vc["ratio"] == pytest.approx((2526.4 / 25 - 1) / 1.4)
    assert vc["lo"] == pytest.approx((2526.4 / 25 / 39 - 1) / 1.4) and vc["f_needed"] == pytest.approx(39.0)
    assert variance_components({"0": [75.0], "1": [80.0]}) is None  # no within-base spread: no reading
