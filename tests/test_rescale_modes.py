"""Pt's depth and mode, the choices the ablation measures: the paper's match (Eq. 12, which also
shrinks an update already above σ_max(W_pre)) against amplify-only, and the top half of the blocks."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from spectra.train.rescale import rescale_adapter, select_blocks


def test_depths_name_the_blocks() -> None:
    assert select_blocks("half", 6) == [3, 4, 5] and select_blocks("half", 30) == list(range(15, 30))
    assert select_blocks("half", 5) == [2, 3, 4] and select_blocks(1, 6) == [5] and select_blocks("all", 6) is None


def test_amplify_never_shrinks_what_match_shrinks(tiny_model_dir, tiny_adapter_dir, tmp_path) -> None:
    base = tiny_model_dir("bert")
    adapter = tiny_adapter_dir(base, target_modules=["query", "value"])
    weights = adapter / "adapter_model.safetensors"
    tensors = load_file(weights)
    # one module far above σ_max(W_pre) (as OLoRA + RoRA's were, σ_pre/σ_Δ ≈ 0.6), the others far below
    strong = next(k for k in tensors if "lora_B" in k and "layer.1" in k and "query" in k)
    save_file({k: (v * 1e4 if k == strong else v * 1e-3 if "lora_B" in k else v) for k, v in tensors.items()},
              str(weights))
    match = rescale_adapter(base, adapter, None, layers="all", mode="match")
    amplify = rescale_adapter(base, adapter, None, layers="all", mode="amplify")
    by_match = {r.module: r for r in match.rows}
    by_amp = {r.module: r for r in amplify.rows}
    name = next(r.module for r in match.rows if r.module in strong)
    assert by_match[name].scale_after < by_match[name].scale_before  # Eq. 12 shrinks it
    assert not by_amp[name].rescaled and by_amp[name].scale_after == by_amp[name].scale_before
    assert "amplify" in by_amp[name].note
    for module, row in by_amp.items():  # every weak module is raised the same way in both modes
        if module != name:
            assert row.rescaled and row.scale_after == pytest.approx(by_match[module].scale_after)
    with pytest.raises(Exception, match="rescale-mode"):
        rescale_adapter(base, adapter, None, mode="shrink")
    assert torch.isfinite(torch.tensor([r.scale_after for r in amplify.rows])).all()


def test_the_ablation_plan_pairs_every_cell_at_both_rates_and_reuses_the_studys_runs() -> None:
    from pathlib import Path

    from reproduction.ablation import CELLS, PAIRS, RATES, ablation_plan
    from spectra.study.plan import study_plan

    plan = [r for r in ablation_plan() if r.kind == "finetune"]
    assert len(plan) == len({r.id for r in plan}) == 2 * sum(len(s) for _, s in PAIRS) * len(CELLS) * len(RATES)
    study = {r.id for r in study_plan()}
    results = {p.stem for p in (Path(__file__).resolve().parent.parent / "docs" / "study" / "results").glob("*.json")}
    reused = [r for r in plan if r.id in study]
    assert len(reused) >= 30 and all(r.id in results for r in reused)  # LoRA/+CI/Tr at 2e-4, RoRA at 2e-3, picks
    assert "minilm__badnet__b0__finetune__lora__s0__lr0.002" in {r.id for r in reused}  # the lr-pick run
