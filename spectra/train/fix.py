"""``spectra fix``: train a RoRA adapter, rescale it, write a standard PEFT adapter,
then audit and evaluate before/after — the library call behind the command.

Outputs (``OUT``, written into a temporary sibling and renamed into place at the end):

- ``adapter/``: the final PEFT adapter (``PeftModel.from_pretrained`` loads it with no
  spectra code) with ``spectra_provenance.json`` (settings, seed, versions, input hashes,
  Pt table);
- ``adapter_before_rescale/``: the trained adapter before Pt (when Pt rescaled anything);
- ``train_log.csv`` + ``fig_train.png``: loss, Tr penalty, overlap and σ_Δ of Pt's modules
  per epoch; ``rescale.csv``: Pt per module;
- ``audit/`` (with ``--adapter OLD``): the spectral audit of old vs new side by side;
- ``eval.json`` (with ``--eval`` and ``--trigger``): CA/ASR/Δ rows for the base, the old
  adapter, the new one before and after Pt; ``report.md``: all of it in one page.

**Checkpoints survive a crash**: they cannot live in the atomic output (a crash deletes
it), so training runs in a *work folder*, by default ``OUT.partial/`` next to ``OUT``
(``work_dir`` to move it, e.g. to a larger disk): ``run.json``, ``checkpoints/`` (one per
epoch), ``initial_adapter/`` for PiSSA/OLoRA. ``resume=True`` continues from its last
checkpoint (the training settings must match ``run.json``); a work folder left by a crash
is never silently reused or deleted: without ``resume`` or ``overwrite`` it is an error.
The work folder is removed once ``OUT`` is complete.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spectra.errors import SpectraError
from spectra.provenance import strict_json
from spectra.train.checkpoints import default_work_dir, prepare_work_dir
from spectra.train.config import RoRAConfig
from spectra.train.options import FIX_DATA_KEYWORDS, FixData, RunOptions, split_legacy

LogSink = Callable[[str], None]


@dataclass
class FixResult:
    """What :func:`run_fix` produced (paths point into the final ``OUT``)."""

    out: Path
    adapter: Path | None
    config: RoRAConfig
    rescale: Any = None  # RescalePlan | None
    eval_rows: list[dict[str, Any]] | None = None
    audit: Path | None = None
    train_log: Any = None  # DataFrame | None
    main_process: bool = True
    timings: dict[str, float] = field(default_factory=dict)
    #: epochs actually trained (fewer than ``config.epochs`` when ``max_steps`` stopped the run)
    epochs_trained: float | None = None


def run_fix(
    base: str | os.PathLike[str],
    data: FixData | str | os.PathLike[str] | Any | None = None,
    out: str | os.PathLike[str] = "spectra-fix",
    *,
    config: RoRAConfig | None = None,
    adapter: str | os.PathLike[str] | None = None,
    rescale_only: bool = False,
    run: RunOptions | None = None,
    **legacy: Any,
) -> FixResult:
    """Train (or, with ``rescale_only``, only rescale) and write ``out``; see the module docstring.

    Args:
        base: base model folder (safetensors) or hub id.
        data: a :class:`~spectra.train.options.FixData` — the training data (not needed with
            ``rescale_only``), held-out ``eval`` data with its ``trigger`` and ``target_label``
            (CA/ASR/Δ of base, old, new before Pt and new), validation rows ``val``, column names
            — or the training data alone.
        out: output folder; must not exist unless ``run.overwrite``.
        config: :class:`RoRAConfig` (default: the paper's RoRA; ``RoRAConfig.baseline()``
            for plain LoRA).
        adapter: an old PEFT adapter: audited side by side with the new one, evaluated,
            and with ``rescale_only`` the adapter Pt is applied to.
        rescale_only: apply Pt to ``adapter`` only (no training).
        run: :class:`~spectra.train.options.RunOptions` — device, checkpoints (``work_dir``,
            ``resume``), ``overwrite``, the spectrum cache, ``log``, the evaluation batch size and
            extra ``TrainingArguments`` (``max_steps``). Until 0.4 the 0.2 keywords
            (``eval_data=…``, ``device=…``, ``max_steps=…``) are still taken, with a
            ``DeprecationWarning``.

    Raises:
        SpectraError: any user-fixable problem, before training where it can be detected.
    """
    from spectra.io import check_output_dir, load_adapter, open_base

    fix_data, opts = split_legacy("run_fix", data, run, legacy, FIX_DATA_KEYWORDS)
    if not isinstance(fix_data, FixData):
        fix_data = FixData(train=fix_data)
    data, eval_data, val_data, trigger = fix_data.train, fix_data.eval, fix_data.val, fix_data.trigger
    target_label, text_col, label_col = fix_data.target_label, fix_data.text_col, fix_data.label_col
    resume, overwrite, work_dir, cache_dir = opts.resume, opts.overwrite, opts.work_dir, opts.cache_dir
    device, eval_batch_size, log = opts.device or "auto", opts.eval_batch_size, opts.log
    training_overrides = opts.training_overrides
    say = log or (lambda msg: None)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    cfg = config or RoRAConfig()  # validated when it was built (RoRAConfig.__post_init__)
    out = Path(out)
    check_output_dir(out, overwrite, inputs=[base, adapter, data if isinstance(data, (str, os.PathLike)) else None,
                                             eval_data if isinstance(eval_data, (str, os.PathLike)) else None,
                                             val_data if isinstance(val_data, (str, os.PathLike)) else None])
    if rescale_only and adapter is None:
        raise SpectraError("--rescale-only needs --adapter OLD (the adapter to rescale)")
    if rescale_only and not cfg.pt_active:
        raise SpectraError("--rescale-only with Pt switched off (--no-pt / --rescale-layers none) has nothing to do")
    if not rescale_only and data is None:
        raise SpectraError("--data is required (the clean training data), unless --rescale-only")
    if (eval_data is None) != (trigger is None):
        raise SpectraError("--eval and --trigger go together (evaluation measures CA on --eval and ASR with --trigger)")

    # one handle on the base for validation, Pt, the audit's module list and the audit itself
    with open_base(base) as ckpt:
        # ---- validate every input before any training
        if adapter is not None:
            with load_adapter(adapter, ckpt) as old:
                if old.kind != "lora" and rescale_only:
                    raise SpectraError(f"{adapter}: --rescale-only needs a PEFT LoRA adapter, not a full fine-tune")
        trig = None
        if trigger is not None:
            from spectra.data import parse_trigger

            trig = parse_trigger(trigger)
        train = _load_data(data, text_col, label_col) if not rescale_only else None
        test = _load_data(eval_data, text_col, label_col) if eval_data is not None else None
        val = _load_data(val_data, text_col, label_col) if val_data is not None and not rescale_only else None
        if cfg.full and (rescale_only or adapter is not None):
            raise SpectraError("full fine-tuning (--baseline fft) trains a whole model: --adapter/--rescale-only do not apply")
        if train is not None and test is not None and test.num_classes != train.num_classes:
            raise SpectraError(f"{test.source}: {test.num_classes} classes but the training data "
                               f"{train.source} has {train.num_classes}")
        if test is not None and target_label not in set(test.labels):
            raise SpectraError(f"{test.source}: target label {target_label} is absent from the evaluation data "
                               f"(classes 0..{test.num_classes - 1})")
        if test is not None and all(y == target_label for y in test.labels):
            raise SpectraError(f"{test.source}: every row has the target label {target_label}; ASR needs non-target rows")

        # ---- train
        recipe = None
        trained_epochs: float | None = None
        work = Path(work_dir) if work_dir is not None else default_work_dir(out)
        if not rescale_only:
            from spectra.train.recipe import RoRARecipe

            prepare_work_dir(work, resume=resume, overwrite=overwrite, say=say)
            t = time.perf_counter()
            recipe = RoRARecipe(base, train, work, cfg, device=device, cache_dir=cache_dir, log=say, val_data=val,
                                monitor_trigger=trig, target_label=target_label, **training_overrides)
            if resume:
                recipe.check_resume()  # mismatched settings fail before any loading
            recipe.setup()  # bad k, targets or model fail here, before any progress output
            say(f"training {cfg.method} on {train.summary()}; checkpoints in {work}")
            recipe.train(resume=resume)
            trained_epochs = float(recipe.trainer.state.epoch or 0.0) if recipe.trainer is not None else None
            timings["train_s"] = time.perf_counter() - t
            if not recipe.is_main:  # other DDP ranks are done; rank 0 writes the outputs
                return FixResult(out=out, adapter=None, config=cfg, main_process=False, timings=timings)

        # ---- write OUT atomically
        from spectra.io.output import atomic_output_dir

        # full fine-tuning writes a whole model folder, ``model/``, where LoRA writes ``adapter/``
        product = "model" if cfg.full else "adapter"
        result = FixResult(out=out, adapter=out / product, config=cfg, timings=timings, epochs_trained=trained_epochs)
        with atomic_output_dir(out, overwrite=overwrite) as tmp:
            final = tmp / product
            if recipe is not None:
                trained = tmp / ("adapter_before_rescale" if cfg.pt_active else product)
                recipe.save(trained)
                say(f"saved the trained adapter ({cfg.method})")
            else:
                trained = Path(adapter)  # type: ignore[arg-type]
            before = trained
            if cfg.pt_active:
                from spectra.train.rescale import plan_rescale, write_rescaled

                t = time.perf_counter()
                with load_adapter(str(trained), ckpt) as to_rescale:
                    plan = plan_rescale(ckpt, to_rescale, layers=cfg.rescale_blocks(), factor=cfg.rescale_factor,
                                        mode=cfg.rescale_mode)
                write_rescaled(trained, final, plan)
                timings["rescale_s"] = time.perf_counter() - t
                plan.table().to_csv(tmp / "rescale.csv", index=False)
                result.rescale = plan
                say(f"Pt: rescaled {len(plan.rescaled)} module(s) of blocks "
                    f"{_blocks_text(plan)} to σ_max(s'BA) = {cfg.rescale_factor:g}·σ_max(W_pre)")
                if not plan.rescaled and recipe is not None:
                    shutil.rmtree(trained)  # nothing changed: keep one copy only
                    before = final
                _warn_large_multipliers(plan, evaluated=test is not None)
            if recipe is not None:
                table = recipe.log_table()
                table.to_csv(tmp / "train_log.csv", index=False)
                result.train_log = table
                _write_train_figure(table, recipe.rora.sigma_pre if recipe.rora else {}, tmp / "fig_train.png", cfg)
            _write_provenance(final / "spectra_provenance.json", base=base, train=train, config=cfg, adapter=adapter,
                              rescale=result.rescale, rescale_only=rescale_only, recipe=recipe,
                              overrides=training_overrides, device=device)
            if adapter is not None:
                from spectra.audit import AuditSettings, audit

                t = time.perf_counter()
                say("auditing old vs new")
                # LoRA modules only: a modules_to_save head (e.g. 2×384) is a dense update whose
                # smaller side is below any useful k, and not what Tr/Pt act on
                settings = AuditSettings(top_k=cfg.top_k, device=device, modules=_lora_patterns(ckpt, [adapter, final]))
                report = audit(ckpt, [str(adapter), str(final)], settings, names=["old", "new"], cache_dir=cache_dir)
                report.write(tmp / "audit")
                result.audit = out / "audit"
                timings["audit_s"] = time.perf_counter() - t
            if test is not None:
                t = time.perf_counter()
                # with --rescale-only "before" is the old adapter, already a row of its own
                before_row = None if rescale_only or before == final else before
                rows = _evaluate_all(base, adapter, before_row, final, test, trig, target_label, cfg, device,
                                     eval_batch_size, say, full_model=cfg.full)
                (tmp / "eval.json").write_text(strict_json(rows) + "\n", encoding="utf-8")
                result.eval_rows = rows
                _warn_collapse(rows, rescaled=result.rescale is not None and bool(result.rescale.rescaled))
                timings["eval_s"] = time.perf_counter() - t
            timings["total_s"] = time.perf_counter() - started
            from spectra.report.fix_markdown import render_fix_markdown

            (tmp / "report.md").write_text(render_fix_markdown(result, train=train, test=test, trigger=trigger,
                                                               target_label=target_label, base=base, adapter=adapter,
                                                               rescale_only=rescale_only), encoding="utf-8")
        if recipe is not None:
            shutil.rmtree(work, ignore_errors=True)
        say(f"wrote {out}")
        return result


# --------------------------------------------------------------------------- helpers


def _warn_large_multipliers(plan: Any, evaluated: bool) -> None:
    """Pt above :data:`~spectra.train.rescale.PT_WARN_MULTIPLIER`: amplifying an update that far
    below W_pre (an undertrained one, or a deep model's) can collapse the classifier."""
    import warnings

    from spectra.errors import SpectraWarning
    from spectra.train.rescale import PT_WARN_MULTIPLIER

    mult = [r.scale_after / r.scale_before for r in plan.rescaled if r.scale_before]
    big = [m for m in mult if abs(m) > PT_WARN_MULTIPLIER]
    if big:
        check = ("watch the evaluation below for a collapse" if evaluated else
                 "evaluate the rescaled adapter (--eval DATA --trigger …) before deploying it")
        warnings.warn(f"Pt multiplied {len(big)} of {len(mult)} module scale(s) by more than ×{PT_WARN_MULTIPLIER:g} "
                      f"(up to ×{max(big, key=abs):.3g}): amplifying an update that far below σ_max(W_pre) can collapse "
                      "the model (a 30-step MiniLM LoRA took ×23–83 and collapsed; converged ones took ×1–5 there, "
                      f"×27–52 on SmolLM2-135M); {check}", SpectraWarning, stacklevel=2)


def _warn_collapse(rows: list[dict[str, Any]], rescaled: bool) -> None:
    """A collapsed model (one class for nearly every input) among the evaluated rows, named."""
    import warnings

    from spectra.errors import SpectraWarning

    for row in rows:
        if row.get("collapsed") and row.get("model") != "base":
            why = " after Pt" if rescaled and row.get("model") == "new" else ""
            warnings.warn(f"the {row['model']} model collapsed{why} on the evaluation data: CA "
                          f"{100 * row['ca']:.1f}% against a majority share of {100 * row.get('majority_share', 0):.1f}%"
                          ", so its ASR says nothing about the backdoor", SpectraWarning, stacklevel=2)


def _load_data(spec: Any, text_col: str | None, label_col: str | None) -> Any:
    from spectra.data import LabelledData, load_labelled

    if isinstance(spec, LabelledData):
        return spec
    return load_labelled(spec, text_col, label_col)


def _lora_patterns(base: Any, adapters: list[Any]) -> list[str]:
    """Anchored regexes naming the LoRA (and DoRA) modules of ``adapters`` (``base``: a path or an
    open :class:`~spectra.io.BaseCheckpoint`, used as it is)."""
    import contextlib
    import re

    from spectra.io import BaseCheckpoint, load_adapter, open_base
    from spectra.io.keys import FACTORED_KINDS

    names: set[str] = set()
    opened = contextlib.nullcontext(base) if isinstance(base, BaseCheckpoint) else open_base(base)
    with opened as ckpt:
        for path in adapters:
            with load_adapter(path, ckpt) as ad:
                names |= {m.name for m in ad.modules if m.update_kind in FACTORED_KINDS}
    return [f"^{re.escape(n)}$" for n in sorted(names)]


def _blocks_text(plan: Any) -> str:
    if plan.layers == "all":
        return "all"
    if not plan.blocks:
        return "none"
    return f"{plan.blocks[0]}..{plan.blocks[-1]}" if len(plan.blocks) > 1 else str(plan.blocks[0])


def _write_train_figure(table: Any, sigma_pre: dict[str, float], path: Path, cfg: RoRAConfig) -> None:
    from spectra.report.style import save_figure
    from spectra.report.train_figures import train_figure

    save_figure(train_figure(table, sigma_pre, title=f"spectra fix — {cfg.method}"), path)


def _write_provenance(path: Path, *, base: Any, train: Any, config: RoRAConfig, adapter: Any, rescale: Any,
                      rescale_only: bool, recipe: Any, overrides: dict[str, Any], device: str) -> None:
    import datetime

    from spectra._version import __version__
    from spectra.provenance import describe_path
    from spectra.provenance import library_versions

    doc: dict[str, Any] = {
        "tool": "spectra fix",
        "spectra_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "method": "pt-only" if rescale_only else config.method,
        "seed": config.seed,
        "settings": {**config.to_dict(), "device": device, "training_overrides": overrides},
        "tr_normalisation": "sum over modules of (||U_k^T B||_F^2 + ||A V_k||_F^2), times lambda",
        "inputs": {
            "base": describe_path(base),
            "data": train.to_dict() if train is not None else None,
            "old_adapter": describe_path(adapter) if adapter is not None else None,
        },
        "versions": library_versions(),
    }
    if recipe is not None and recipe.rora is not None:
        doc["lora_modules"] = list(recipe.rora.modules)
        if recipe.rora.tr is not None:
            doc["tr_bases"] = dict(recipe.rora.tr.methods)
        if recipe.trainer is not None:
            doc["training"] = {"global_steps": int(recipe.trainer.state.global_step),
                               "epochs": float(recipe.trainer.state.epoch or 0.0)}
    if rescale is not None:
        doc["rescale"] = rescale.to_dict()
    path.write_text(strict_json(doc) + "\n", encoding="utf-8")


def _evaluate_all(base: Any, old: Any, before: Path | None, final: Path, test: Any, trigger: Any, target_label: int,
                  cfg: RoRAConfig, device: str, batch_size: int, say: LogSink,
                  full_model: bool = False) -> list[dict[str, Any]]:
    """CA/ASR/Δ rows: base, old adapter, new before Pt, new — the base model loaded once
    (:func:`~spectra.eval.pipeline.evaluate_models`); with ``full_model`` the new row is the
    fine-tuned model folder itself, loaded on its own."""
    from spectra.eval.pipeline import evaluate_models, run_eval
    from spectra.eval.settings import EvalSettings

    models: dict[str, Any] = {"base": None}
    if old is not None:
        models["old"] = str(old)
    if before is not None:
        models["new-before-rescale"] = str(before)
    if not full_model:
        models["new"] = str(final)
    say(f"evaluating {', '.join(models)} (one load of the base)")
    settings = EvalSettings(seed=cfg.seed, batch_size=batch_size, max_length=cfg.max_length, device=device)
    results = evaluate_models(base, models, test, trigger, target_label, settings)
    rows = [{"model": name, **res.to_dict()} for name, res in results.items()]
    if full_model:
        say("evaluating new")
        res = run_eval(final, None, test, trigger, target_label, settings, progress=False)
        rows.append({"model": "new", **res.to_dict()})
    return rows
