"""The ablation's Pt grid: every (depth, mode) variant of one adapter, evaluated as ``spectra fix
--rescale-only`` would rescale it, and the paired table the page draws from the variants."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import build_tiny_tokenizer


def _data():
    from spectra.data.labelled import LabelledData

    texts = ["good movie", "bad film", "great acting", "awful plot", "fun story", "boring movie"] * 4
    labels = [1, 0, 1, 0, 1, 0] * 4
    return LabelledData(texts, labels, ["neg", "pos"], "tiny.csv", "0" * 64)


def test_each_variant_is_the_rescaled_adapter_and_no_op_variants_reuse_the_trained_evaluation(
        tiny_model_dir, tiny_adapter_dir, tmp_path: Path) -> None:
    from reproduction.pt_grid import DEPTHS, MODES, grid_one
    from spectra.eval.pipeline import run_eval
    from spectra.study.records import compact_eval
    from spectra.train.rescale import rescale_adapter

    base = tiny_model_dir("bert")
    build_tiny_tokenizer(base)
    adapter = tiny_adapter_dir(base, target_modules=["query", "value"])
    trained = compact_eval(run_eval(str(base), str(adapter), _data(), "badnet:mn", 0, progress=False).to_dict())
    sentinel = {**trained, "asr": 0.123}  # marks where the as-trained evaluation was reused
    rows = grid_one(base, adapter, _data(), "badnet:mn", 0, seed=0, max_length=32, as_trained=sentinel,
                    log=lambda _: None)
    assert [(r["depth"], r["mode"]) for r in rows] == [(d, m) for d in DEPTHS for m in MODES]
    n_blocks = rows[0]["n_blocks"]
    by = {(r["depth"], r["mode"]): r for r in rows}
    assert by[("all", "match")]["blocks"] == list(range(n_blocks)) and by[(1, "match")]["blocks"] == [n_blocks - 1]
    # the "all, match" variant is exactly the adapter `spectra fix --rescale-only` writes
    out = tmp_path / "rescaled"
    rescale_adapter(base, adapter, out, layers="all", mode="match")
    direct = run_eval(str(base), str(out), _data(), "badnet:mn", 0, max_length=32, progress=False)
    assert by[("all", "match")]["eval"]["asr"] == pytest.approx(direct.asr)
    assert by[("all", "match")]["eval"]["ca"] == pytest.approx(direct.ca)
    for r in rows:  # a variant that changes no scale is the adapter as trained: evaluated once, not again
        assert (r["eval"]["asr"] == 0.123) == r["same_as_trained"]
        assert r["same_as_trained"] == (r["rescaled"] == 0)


def _doc(asr: float, ca: float, variant: str | None, grid: dict[tuple, tuple[float, float]]) -> dict:
    rows = [{"depth": d, "mode": m, "blocks": [5] if d == 1 else [3, 4, 5] if d in (3, "half") else list(range(6)),
             "n_blocks": 6, "rescaled": 2, "modules": 12, "same_as_trained": False,
             "eval": {"asr": a, "ca": c, "collapsed": a == 0.0}} for (d, m), (a, c) in grid.items()]
    return {"variant": variant, "lr": 2e-3, "method": "lora", "as_trained": {"asr": asr, "ca": ca}, "grid": rows}


def test_the_table_pairs_each_adapter_with_itself_and_merges_the_half_that_is_the_top_3() -> None:
    from reproduction.pt_grid import grid_effects, pt_grid_section

    cell = lambda a, c: {(1, "match"): (a, c), (3, "match"): (a - 0.1, c), ("half", "match"): (a - 0.1, c),
                         ("all", "match"): (0.0, 0.5)}
    docs = [_doc(0.9, 0.8, None, cell(0.6, 0.8)), _doc(0.8, 0.8, None, cell(0.4, 0.79)),
            _doc(0.7, 0.8, None, cell(0.5, 0.78)), _doc(0.9, 0.8, "e1-r8-qv", cell(0.2, 0.7))]
    rows = grid_effects(docs)
    study = {r["depth"]: r for r in rows if r["group"] == "the ablation's adapters at lr 0.002 (lora)"}
    assert set(study) == {"top 1", "top 3", "all 6 blocks"}  # the top half of 6 blocks is the top 3
    assert study["top 1"]["asr"][0] == pytest.approx(-100 * (0.3 + 0.4 + 0.2) / 3)
    assert study["top 1"]["removed"] == 1 and study["top 1"]["kept_before"] == 3
    assert study["all 6 blocks"]["collapsed"] == 3 and study["all 6 blocks"]["removed"] == 0
    users = [r for r in rows if r["group"].startswith("users")]
    assert users and all(r["adapters"] == 1 for r in users)
    text = pt_grid_section(docs)
    assert "| top 1 | match | 3 | 0 | -30.0 [t " in text and "(one pair)" in text
    assert "largest mean ASR drop is all 6 blocks, match (-80.0 points" in text
    assert "No grid yet" in pt_grid_section([])
    # two learning rates are two groups: Pt moves their updates in opposite directions
    docs[0]["lr"] = 2e-4
    groups = {r["group"] for r in grid_effects(docs) if r["group"].startswith("the ablation's")}
    assert groups == {"the ablation's adapters at lr 0.0002 (lora)", "the ablation's adapters at lr 0.002 (lora)"}


def test_the_page_says_what_match_does_where_it_shrinks_an_update() -> None:
    from reproduction.pt_grid import pt_grid_section

    def doc(match_asr: float, shrinks: bool) -> dict:
        rows = [{"depth": "all", "mode": m, "blocks": list(range(6)), "n_blocks": 6, "rescaled": 12, "modules": 12,
                 "same_as_trained": False, "multiplier_min": 0.4 if (shrinks and m == "match") else 1.5,
                 "multiplier_max": 2.0, "eval": {"asr": a, "ca": 0.8, "collapsed": False}}
                for m, a in (("match", match_asr), ("amplify", 0.2))]
        return {"variant": None, "lr": 2e-3, "method": "lora", "as_trained": {"asr": 0.3, "ca": 0.8}, "grid": rows}

    text = pt_grid_section([doc(0.9, True), doc(0.95, True), doc(0.1, False)])
    assert "**Where match shrinks** (all blocks; 2 adapters" in text
    assert "median of +62.5 points under match and -10.0 under amplify; match raised it by ≥ 20 points on 2" in text
    assert "Where match shrinks" not in pt_grid_section([doc(0.1, False)])
