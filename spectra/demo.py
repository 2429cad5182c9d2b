"""``spectra demo``: the study's recipe on one attack and one seed, on CPU, with no arguments.

The demo is a documented subset of the reproduction study (:mod:`spectra.study`, whose
results are on docs/reproduction.md): the same code runs the same recipe —

1. poison the real MiniLM clean-label on ``rt`` (the source of MR) with BadNet ``mn``:
   1,500 target-label rows, labels unchanged, 3 epochs at lr 2e-5 (the paper's). The
   poisoned base is cached by the recipe, so a second run skips this step;
2. fine-tune it on CR with plain LoRA and with RoRA (CI + Tr, then Pt) for the paper's 20
   epochs at the learning rates the study picked on clean validation data, logging the
   validation curve; apply Pt alone to the LoRA adapter (LoRA + Pt);
3. audit LoRA, LoRA + Pt and RoRA side by side (Figures 1 and 2);
4. sweep the LoRA scale of LoRA and of RoRA before Pt (Figure 3, head as trained), with
   the threshold predictions and where Pt lands;
5. one report whose readings are generated from the measured numbers.

``--quick`` runs the same steps on subsamples with fewer epochs; where that budget cannot
decide what the full run shows (a backdoor weaker than the paper's ASR > 95%, a run that
has not converged), its report says so instead of giving a verdict.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spectra.provenance import strict_json
from spectra.study.plan import Run
from spectra.study.recipe import ATTACKS, PICKED_LR, TARGET_LABEL, Recipe

Log = Callable[[str], None]

ATTACK = "badnet"
TRIGGER = ATTACKS[ATTACK]
#: the demo's sweep grid: the study's, thinned to powers of two
FULL_GRID = (0, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


def demo_recipe(quick: bool) -> Recipe:
    """The study's recipe (full), or its ~5-minute subset (quick; every difference recorded)."""
    if not quick:
        return Recipe(grid=FULL_GRID)
    # 1,200 rt rows keep the paper's share of poisoned target rows (~31 %: 170 of ~545);
    # lr 1e-4 buys in ~100 steps what 2e-5 needs the full proxy for. The sizes are what
    # fits 5 minutes cold on 2 cores (1,500/600/300 rows took 5.5)
    return Recipe(proxy_rows=1200, n_poison=170, poison_lr=1e-4, epochs=5, train_rows=500, test_rows=250,
                  max_length=64, grid=(0, 1, 2, 4, 8, 16, 32),
                  notes=("quick: rt subsample 1,200 rows, 170 poisons, poisoning lr 1e-4; CR train 500 rows, "
                         "5 epochs; CR test 250 rows; max length 64",))


def demo_runs() -> list[Run]:
    """The study runs the demo executes, in order (BadNet, base seed 0, seed 0, the picked rates)."""
    lora, rora = PICKED_LR["lora"], PICKED_LR["rora"]
    return [Run("base", ATTACK, 0), Run("finetune", ATTACK, 0, "lora", 0, lora), Run("sweep", ATTACK, 0, "lora", 0, lora),
            Run("finetune", ATTACK, 0, "rora", 0, rora), Run("sweep", ATTACK, 0, "rora", 0, rora)]


def free_output_dir(out: str | os.PathLike[str] | None) -> Path:
    """``out`` if given; else ``spectra-demo``, or the next free ``spectra-demo-N`` so a
    second run never overwrites the first."""
    if out is not None:
        return Path(out)
    path, n = Path("spectra-demo"), 2
    while path.exists():
        path, n = Path(f"spectra-demo-{n}"), n + 1
    return path


def run_demo(out: str | os.PathLike[str] | None = None, quick: bool = False, seed: int = 0,
             overwrite: bool = False, log: Log = print) -> Path:
    """Run the demo and write ``OUT/report.md`` (+ ``demo.json``, the runs, figures); returns OUT."""
    from spectra.audit import AuditSettings, audit
    from spectra.io.output import atomic_output_dir, check_output_dir
    from spectra.report.demo_markdown import render_demo_markdown
    from spectra.report.style import save_figure
    from spectra.io.files import cache_dir
    from spectra.study.execute import Study
    from spectra.study.figures import sweep_figure
    from spectra.study.tables import Results, load_results

    if seed != 0:
        from spectra.errors import SpectraError

        raise SpectraError("--seed: the demo runs the study's seed 0 (the reproduction study varies seeds)")
    recipe = demo_recipe(quick)
    final = free_output_dir(out)
    check_output_dir(final, overwrite)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    with atomic_output_dir(final, overwrite=overwrite) as tmp:
        study = Study(tmp / "results", tmp, recipe, log=log,
                      bases=cache_dir() / "demo-bases" / recipe.key())
        for name, summary in study.splits.describe().items():  # plain lines, not JSON with \u escapes
            log(f"data ({name}): {summary}")
        for run in demo_runs():
            t0 = time.perf_counter()
            log(f"▶ {run.kind} {run.method or ''} ({run.id})")
            study.execute(run)
            timings[run.id] = round(time.perf_counter() - t0, 1)
            log(f"✓ {run.kind} {run.method or ''} ({timings[run.id] / 60:.1f} min)")
        results = Results(load_results(tmp / "results"))
        lora, rora = _picked(results, "lora"), _picked(results, "rora")
        t0 = time.perf_counter()
        adapters = {"LoRA": Path(lora["folder"]) / "adapter", "LoRA+Pt": Path(lora["pt_alone"]["folder"]) / "adapter",
                    "RoRA": Path(rora["folder"]) / "adapter"}
        base = study.base_folder(demo_runs()[0])
        report = audit(str(base), [str(p) for p in adapters.values()], AuditSettings(device="cpu"),
                       names=list(adapters))
        report.write(tmp / "audit")
        timings["audit"] = round(time.perf_counter() - t0, 1)
        save_figure(sweep_figure(_as_picked(results), ATTACK), tmp / "fig_sweep.png")
        summary = _summary(results, lora, rora, report, recipe, quick, timings, started, study)
        (tmp / "demo.json").write_text(strict_json(summary), encoding="utf-8")
        (tmp / "report.md").write_text(render_demo_markdown(summary), encoding="utf-8")
    _repoint(final, tmp)
    log(f"done in {summary['timings_s']['total'] / 60:.1f} min — report: {final / 'report.md'}")
    return final


def _picked(results: Any, method: str) -> dict[str, Any]:
    found = [d for d in results.docs.values() if d["run"]["kind"] == "finetune" and d["run"]["method"] == method]
    return found[0]


def _as_picked(results: Any) -> Any:
    """The demo's sweeps carry explicit rates; the study's figure selects by γind/method only."""
    from spectra.study.tables import Results

    docs = {}
    for key, doc in results.docs.items():
        doc = dict(doc)
        doc["run"] = {**doc["run"], "lr": None}
        docs[key] = doc
    return Results(docs)


def _summary(results: Any, lora: dict[str, Any], rora: dict[str, Any], report: Any, recipe: Recipe, quick: bool,
             timings: dict[str, float], started: float, study: Any) -> dict[str, Any]:
    from spectra.threshold.report import KEY_ALIASES

    base_doc = next(d for d in results.docs.values() if d["run"]["kind"] == "base")
    rows = [{"model": "poisoned base (no fine-tuning)", **base_doc["downstream_test"]},
            {"model": "LoRA", **lora["eval"]["new"]},
            {"model": "LoRA + Pt", **lora["pt_alone"]["eval"]},
            {"model": "RoRA before Pt (CI+Tr)", **rora["eval"]["new-before-rescale"]},
            {"model": "RoRA (CI+Tr+Pt)", **rora["eval"]["new"]}]
    sweeps = {name: next(d for d in results.docs.values() if d["run"]["kind"] == "sweep" and d["run"]["method"] == m)
              for name, m in (("LoRA", "lora"), ("RoRA", "rora"))}
    threshold = {name: {k: s.get(k) for k in ("predicted_threshold_gamma", "measured_threshold_gamma",
                                              "measured_threshold_gamma_clean", "measured_crossing_gamma",
                                              "search_threshold_gamma", "gamma_star_flip", "gamma_star_bound",
                                              "share_rho_eff_nonpositive", "forward_passes", "pt", "sweep")}
                 for name, s in sweeps.items()}
    for name, s in sweeps.items():
        threshold[name].update(module=s["module"]["name"], sigma_pre=s["module"]["sigma_pre"],
                               sigma_delta=s["module"]["sigma_delta"], scale=s["module"]["scale"])
        # demo.json's threshold keys of 0.1 (the multiplier was k), kept for one release
        threshold[name].update({o: threshold[name].get(n) for o, n in KEY_ALIASES.items() if n in threshold[name]})
    timings["total"] = round(time.perf_counter() - started, 1)
    return {
        "settings": {"quick": quick, "seed": 0, "attack": ATTACK, "lr": {"lora": lora["lr"], "rora": rora["lr"]},
                     "recipe": recipe.to_dict()},
        "trigger": TRIGGER, "target_label": TARGET_LABEL,
        "poisoning": {"mode": recipe.poison_mode, "fallback_from": None, **{k: base_doc["proxy_heldout"].get(k) for k in
                                                                            ("ca", "asr", "asr_floor", "collapsed")},
                      "downstream": base_doc["downstream_test"]},
        "eval": rows,
        "training": {"LoRA": {"converged": lora["converged"], "epochs": lora["epochs"]},
                     "RoRA": {"converged": rora["converged"], "epochs": rora["epochs"]}},
        "audit": json.loads(report.summary().to_json(orient="records")),
        "threshold": threshold,
        "data": study.splits.describe(),
        "timings_s": timings,
    }


def _repoint(final: Path, tmp: Path) -> None:
    """The run records name folders inside the temporary output; point them at the final one."""
    for path in list((final / "results").glob("*.json")) + [final / "demo.json"]:
        text = path.read_text(encoding="utf-8")
        if str(tmp) in text:
            path.write_text(text.replace(str(tmp), str(final.resolve())), encoding="utf-8")
    shutil.rmtree(final / "locks", ignore_errors=True)
