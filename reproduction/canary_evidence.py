"""Canary evidence: users' adapters on a base whose backdoor spectra planted itself.

The study's poisoned bases are MR-poisoned BadNet/InSent checkpoints; re-poisoning SmolLM2
with the paper's recipe costs ~4 h on one CPU thread. :func:`spectra.canary.run_canary`
plants a backdoor in ~10 min (``--quick``: 1,200 proxy rows of CR, a fresh rare-token trigger,
clean-label, 3 epochs at lr 1e-4) and trains a user's recipe on 500 other rows, so a second
architecture gets labelled adapters at a cost this project can pay. Each run is written as a
study result (``{model}__canary__b0__finetune__{method}__s0__lr{lr}__{tag}.json``) with the
same ``eval``, ``audit`` and ``epochs`` blocks, plus its γ sweep as a ``__sweep__`` result, so
:func:`reproduction.forgetting.evidence_rows` reads them like any other run. The audit is
taken against the poisoned copy: the base the adapter was trained on and would be deployed on.

These rows are the quick canary's regime — short data, length 64, a planted (not a
third-party) backdoor — and every one is labelled with it (``recipe`` ``canary-quick…``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from spectra.io.zoo import model_path
from spectra.study.evidence import TARGETS, UserRecipe

#: the recipes trained on each canary base: the rates users pick, the two target sets, a
#: small and a large rank, rsLoRA; cheapest first, so a run cut short keeps the widest spread
CANARY_RECIPES: tuple[UserRecipe, ...] = (
    UserRecipe(2e-4, 3),
    UserRecipe(2e-3, 3),
    UserRecipe(2e-5, 3),
    UserRecipe(2e-4, 3, targets="all"),
    UserRecipe(1e-3, 5, rank=16, rslora=True),
    UserRecipe(5e-4, 10, rank=4),
)
#: longer and hotter budgets, for the recipes that may remove a canary (the default set kept it on
#: MiniLM every time): the labels need both outcomes
LONG_RECIPES: tuple[UserRecipe, ...] = (
    UserRecipe(2e-3, 10),
    UserRecipe(5e-3, 5),
    UserRecipe(1e-3, 20),
    UserRecipe(2e-3, 10, rank=16, targets="all"),
)
RECIPE_SETS = {"default": CANARY_RECIPES, "long": LONG_RECIPES}


def run_id(model: str, recipe: UserRecipe, kind: str = "finetune") -> str:
    """The result id of one canary-evidence run (the study's id scheme, attack ``canary``)."""
    return f"{model}__canary__b0__{kind}__lora__s0__lr{recipe.lr:g}__{recipe.tag}"


def _documents(model: str, recipe: UserRecipe, result: dict[str, Any], out: Path) -> tuple[dict, dict]:
    """The finetune and sweep results of one canary run, in the study's record shapes."""
    from spectra.study.records import epoch_records
    from spectra.study.records import audit_summary
    from spectra.train.validation import converged

    fid = run_id(model, recipe)
    run = {"kind": "finetune", "model": model, "attack": "canary", "base_seed": 0, "method": "lora", "seed": 0,
           "lr": recipe.lr, "variant": f"canary-quick-{recipe.tag}"}
    cfg = {**recipe.overrides(), "lr": recipe.lr, "alpha": 16.0, "use_dora": False, "max_length": 64,
           "batch_size": result["recipe"]["batch_size"], "method": "lora"}
    epochs = epoch_records(out / "fix" / "train_log.csv")
    new = result["result"]
    finetune = {
        "id": fid, "run": run, "wall_s": result["seconds"], "lr": recipe.lr, "lr_choice": "the user's recipe",
        "config": cfg, "folder": str(out), "canary": result["canary"],
        "eval": {"base": {"asr": result["canary"]["poisoned_test_asr"]}, "new": new},
        # the canary's fine-tuning keeps no validation split: no curve, so convergence is unknown (None)
        "epochs": epochs, "converged": converged(curve) if (curve := [e["val_ca"] for e in epochs
                                                                       if e.get("val_ca") is not None]) else None,
        "audit": audit_summary(result["canary"]["poisoned_copy"], out / "fix" / "adapter", top_k=32),
    }
    sweep = {"id": run_id(model, recipe, "sweep"), "run": {**run, "kind": "sweep"},
             "sweep": result["sweep"], "crossing_gamma": result["crossing_gamma"]}
    return finetune, sweep


def run_canary_evidence(model: str, results: Path, work: Path, recipes: Sequence[UserRecipe] = CANARY_RECIPES,
                        log: Callable[[str], None] = print) -> list[str]:
    """Train every recipe not yet in ``results`` against ``model``'s quick canary (planted once,
    cached); returns the ids written. Resumable: a finished recipe is skipped, a killed one
    resumes from its checkpoints."""
    from spectra.canary import CanarySettings, run_canary
    from spectra.train.options import RunOptions
    from spectra.study.records import write_json

    written: list[str] = []
    todo = [r for r in recipes if not (results / f"{run_id(model, r)}.json").is_file()]
    started = time.perf_counter()
    for i, recipe in enumerate(todo):
        if i:
            per = (time.perf_counter() - started) / i
            log(f"canary evidence: {i}/{len(todo)} done, about {per * (len(todo) - i) / 60:.0f} min left")
        settings = CanarySettings(rank=recipe.rank, target_modules=TARGETS[recipe.targets],
                                  use_rslora=recipe.rslora, epochs=recipe.epochs, lr=recipe.lr, quick=True)
        out = work / run_id(model, recipe)
        result = run_canary(str(model_path(model)), "cr", out, settings,
                            run=RunOptions(overwrite=True, resume=True, log=log))
        for doc in _documents(model, recipe, result, out):
            write_json(results / f"{doc['id']}.json", doc)
        written.append(run_id(model, recipe))
    return written
