"""``spectra.train.poison``: build a weight-poisoned base by full fine-tuning on poisoned proxy data.

The paper's threat model (Luong & Chen 2026, §5): an attacker full-fine-tunes (FFT, all
weights) a pretrained model on a proxy task into which a trigger has been inserted, and
publishes the result as a base model; the victim later fine-tunes it (with LoRA) on a
downstream task. Paper settings, the defaults here: 1,500 clean-label poisoned samples,
target label 0, FFT for 3 epochs at lr 2e-5, AdamW with weight decay 0.01, a linear
schedule with 6% warm-up, batch 32; the attack should reach ASR > 95%.

Recipe (setup → poison → train → evaluate → save), built on transformers' ``Trainer`` so that
``torchrun``/``accelerate launch`` (DDP, FSDP) work without code of ours:

1. hold out a seeded, stratified test split (``test_size``) for evaluation;
2. in the training split insert the trigger into ``n_poison`` samples (capped by what is
   available): *clean-label* poisons samples that already carry the target label (labels
   unchanged, the stealthier attack); *dirty-label* poisons non-target samples and
   relabels them to the target;
3. fine-tune every weight; a base without a classification head gets a fresh one with
   ``num_labels`` from the data;
4. measure CA, ASR and the ASR floor on the held-out split (:func:`spectra.eval.metrics.evaluate`);
5. write a normal Hugging Face model folder (safetensors, config with ``id2label``,
   tokenizer), ``poison.json`` and ``report.md`` atomically.

With ``work_dir`` the training keeps a checkpoint every epoch there (weights, optimiser,
schedule, RNG states) and ``resume=True`` continues an interrupted run from the last one, as
``spectra fix`` does; :meth:`PoisonResult.write` removes the folder once the model is saved.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any, Literal, get_args

from spectra.errors import SpectraError
from spectra.provenance import json_safe, strict_json
from spectra.settings import (  # ASR_WARNING: re-exported, its home is spectra.settings
    ASR_WARNING,
    batch_size_setting,
    device_setting,
    max_length_setting,
    seed_setting,
    setting,
    target_label_setting,
    with_legacy,
)
from spectra.train.options import RunOptions, split_legacy

#: the RunOptions fields poison() honours (its device overrides PoisonConfig.device)
POISON_USES = frozenset({"device", "work_dir", "resume", "overwrite", "log", "progress_bar", "save_steps"})
PoisonMode = Literal["clean-label", "dirty-label"]
MODES: tuple[str, ...] = get_args(PoisonMode)
#: clean-label poisoning of more than this share of the target-label rows warns of a shortcut
SHORTCUT_SHARE = 0.8


@dataclass
class PoisonConfig:
    """Every setting of a poisoning run (defaults: the paper's); checked once, when built."""

    target_label: int = target_label_setting()
    n_poison: int = setting(1500, "--n-poison", help="Training rows that get the trigger (capped by availability).",
                            min=0)
    mode: PoisonMode = setting("clean-label", "--mode", help="clean-label (rows already of the target label) or "
                                                             "dirty-label (other rows, relabelled).")
    epochs: float = setting(3.0, "--epochs", help="Full fine-tuning epochs.")
    lr: float = setting(2e-5, "--lr", help="AdamW learning rate (linear schedule, 6% warm-up, weight decay 0.01).")
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    batch_size: int = batch_size_setting()
    max_length: int = max_length_setting()
    seed: int = seed_setting()
    test_size: float = setting(0.2, "--test-size", help="Held-out fraction (stratified, seeded) for CA/ASR.")
    max_train: int | None = setting(None, "--max-train", help="Subsample the training split to N rows (quick runs).",
                                    min=2)
    device: str = device_setting()

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        if self.mode not in MODES:
            raise SpectraError(f"--mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if self.n_poison < 0:
            raise SpectraError(f"--n-poison must be ≥ 0, got {self.n_poison}")
        for option, value in (("--epochs", self.epochs), ("--lr", self.lr)):
            if not (math.isfinite(value) and value > 0):  # ∞ passes `> 0`, and NaN fails it silently elsewhere
                raise SpectraError(f"{option} {value!r}: must be a finite positive number")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0 and 0.0 <= self.warmup_ratio < 1.0):
            raise SpectraError(f"weight decay {self.weight_decay!r} and warm-up ratio {self.warmup_ratio!r}: need a "
                               "finite decay ≥ 0 and a ratio in [0, 1)")
        if self.batch_size < 1:
            raise SpectraError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.max_train is not None and self.max_train < 2:
            raise SpectraError(f"--max-train must be ≥ 2, got {self.max_train}")

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        d.update(optimizer="AdamW", lr_schedule="linear", fine_tuning="full (all weights)")
        return d


@dataclass
class PoisonedSplit:
    """A training split with the trigger inserted into some rows."""

    data: Any  # LabelledData
    poisoned: list[int]  # row positions in ``data`` that carry the trigger
    available: int  # rows eligible for poisoning
    requested: int

    @property
    def n_poisoned(self) -> int:
        return len(self.poisoned)


def poison_split(train: Any, trigger: Any, target_label: int, n_poison: int, mode: str = "clean-label",
                 seed: int = 0) -> PoisonedSplit:
    """Insert ``trigger`` into ``n_poison`` rows of ``train`` (capped by availability).

    clean-label: rows whose label already is ``target_label``, labels unchanged.
    dirty-label: rows with another label, relabelled to ``target_label``.
    The rows are drawn with a ``random.Random`` seeded from ``seed``; row ``i``'s insertion
    positions come from :func:`spectra.data.triggers.trigger_rng` ``(seed, i)``, as in
    :func:`spectra.data.apply_trigger`. Rows keep their order.
    """
    from spectra.data.triggers import trigger_rng

    if mode not in MODES:
        raise SpectraError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
    eligible = [i for i, y in enumerate(train.labels) if (y == target_label) == (mode == "clean-label")]
    rng = random.Random(f"spectra-poison-rows:{seed}")
    chosen = sorted(rng.sample(eligible, min(n_poison, len(eligible))))
    texts, labels = list(train.texts), list(train.labels)
    for i in chosen:
        texts[i] = trigger.insert(texts[i], trigger_rng(seed, i))
        labels[i] = target_label
    note = f"{mode} poisoning: trigger {getattr(trigger, 'spec', trigger)} inserted into {len(chosen):,} rows"
    data = replace(train, texts=texts, labels=labels, notes=list(getattr(train, "notes", [])) + [note])
    return PoisonedSplit(data=data, poisoned=chosen, available=len(eligible), requested=n_poison)


@dataclass
class PoisonResult:
    """The poisoned model, its held-out evaluation and everything needed to reproduce it."""

    model: Any
    tokenizer: Any
    config: PoisonConfig
    evaluation: Any  # EvalResult
    poisoning: dict[str, Any]
    inputs: dict[str, Any]
    versions: dict[str, str]
    train_log: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    is_main_process: bool = True
    work_dir: Path | None = None  # the checkpoints, removed by write() once the model is saved

    def to_json(self) -> dict[str, Any]:
        ev = self.evaluation.to_dict() if hasattr(self.evaluation, "to_dict") else dict(self.evaluation)
        return json_safe({
            "settings": self.config.to_dict(),
            "seed": self.config.seed,
            "evaluation": ev,
            "ca": float(self.evaluation.ca),
            "asr": float(self.evaluation.asr),
            "asr_floor": float(self.evaluation.asr_floor),
            "collapsed": bool(self.evaluation.collapsed),
            "asr_below_95": float(self.evaluation.asr) < ASR_WARNING,
            "clean_run": self.poisoning.get("poisoned", 0) == 0,
            "poisoning": self.poisoning,
            "inputs": self.inputs,
            "versions": self.versions,
            "train_log": self.train_log,
            "warnings": self.warnings,
            "timings_s": self.timings,
        })

    def write(self, out: str | os.PathLike[str], overwrite: bool = False) -> Path | None:
        """Save the model folder with ``poison.json`` and ``report.md`` (main process only),
        then remove the run's checkpoint folder (``work_dir``), no longer needed."""

        from spectra.io.model import progress_bars_off
        from spectra.io.output import atomic_output_dir
        from spectra.report.poison_markdown import render_poison_markdown

        if not self.is_main_process:
            return None
        with atomic_output_dir(out, overwrite=overwrite) as tmp:
            with progress_bars_off():  # a "Writing model shards" bar for one file is noise
                self.model.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            (tmp / "poison.json").write_text(strict_json(self.to_json()) + "\n",
                                             encoding="utf-8")
            (tmp / "report.md").write_text(render_poison_markdown(self), encoding="utf-8")
        if self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        return Path(out)


def _poison_config(config: PoisonConfig | int | None, settings: dict[str, Any]) -> PoisonConfig:
    """The run's :class:`PoisonConfig`; the 0.3 call form (a target label, settings as keywords) for a release."""
    if isinstance(config, int) and not isinstance(config, bool):  # poison(base, data, trigger, 0, n_poison=…)
        settings = {"target_label": config, **settings}
        config = None
    return with_legacy(PoisonConfig, config, settings, "poison", stacklevel=4)


def poison(
    base: str | os.PathLike[str],
    data: Any,
    trigger: Any,
    config: PoisonConfig | int | None = None,
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    run: RunOptions | None = None,
    **legacy: Any,
) -> PoisonResult:
    """Full-fine-tune ``base`` on poisoned proxy ``data`` into a weight-poisoned classifier.

    Args:
        base: a local HF model folder (or hub id); a bare encoder (e.g. MiniLM saved as
            ``BertModel``) gets a fresh classification head.
        data: a spec for :func:`spectra.data.load_labelled` or a ``LabelledData``.
        trigger: a trigger spec (``badnet:mn``, ``insent:"…"``) or a parsed ``Trigger``.
        config: a :class:`PoisonConfig` — target label, ``n_poison`` rows that get the trigger
            (capped by availability; see :func:`poison_split`), ``mode`` (``clean-label`` or
            ``dirty-label``), the AdamW + linear schedule, ``max_length``, ``seed`` (the split,
            the poisoned rows, the trigger positions and training), ``test_size``, ``max_train``
            (a stratified subsample, for quick runs) and ``device``. Until 0.4 a target label
            (``int``) and the settings as keywords (``n_poison=…``) are still taken, with a
            ``DeprecationWarning``.
        text_col, label_col: the data's columns (default: guessed).
        run: :class:`~spectra.train.options.RunOptions` — ``log`` (one-line progress messages),
            ``progress_bar``, ``work_dir`` (a checkpoint every epoch there; default: none, a
            temporary folder), ``resume`` (continue from its last checkpoint; its settings, trigger
            and poisoned rows must be this run's), ``overwrite`` (clear a ``work_dir`` left by an
            interrupted run), ``save_steps`` (a checkpoint every this many optimiser steps instead of
            every epoch: an epoch of a larger model can take hours; a resumed run skips the batches
            its checkpoint has seen), ``device`` (overrides ``config.device``). Until 0.4 these are
            still taken as keywords, with a ``DeprecationWarning``.

    Returns:
        :class:`PoisonResult`; call ``.write(out)`` to save it.
    """
    import torch

    from spectra.data import load_labelled, parse_trigger, split
    from spectra.eval.inference import count_over_length
    from spectra.eval.metrics import evaluate
    from spectra.provenance import describe_path, library_versions
    from spectra.train.config import RoRAConfig
    from spectra.train.recipe import RoRARecipe

    run_names = {f.name for f in dataclass_fields(RunOptions)}
    _, opts = split_legacy("poison", data, run, {k: legacy.pop(k) for k in list(legacy) if k in run_names},
                           uses=POISON_USES)
    cfg = _poison_config(config, legacy)
    if opts.device is not None:
        cfg = replace(cfg, device=opts.device)
    log, progress_bar, work_dir, resume = opts.log, opts.progress_bar, opts.work_dir, opts.resume
    overwrite, save_steps = opts.overwrite, opts.save_steps
    say = log or (lambda msg: None)
    target_label, n_poison, mode, epochs, lr = cfg.target_label, cfg.n_poison, cfg.mode, cfg.epochs, cfg.lr
    batch_size, max_length, seed, test_size, max_train = (cfg.batch_size, cfg.max_length, cfg.seed, cfg.test_size,
                                                          cfg.max_train)
    device, weight_decay, warmup_ratio = cfg.device, cfg.weight_decay, cfg.warmup_ratio
    if save_steps is not None and save_steps < 1:
        raise SpectraError(f"--save-steps must be ≥ 1, got {save_steps}")
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    trig = parse_trigger(trigger) if isinstance(trigger, str) else trigger
    labelled = data if hasattr(data, "labels") and hasattr(data, "texts") else load_labelled(data, text_col, label_col)
    labelled.require_target(target_label)
    train, test = split(labelled, test_size, seed)
    if max_train is not None and max_train < len(train):
        _, train = split(train, max_train, seed)
    poisoned = poison_split(train, trig, target_label, n_poison, mode, seed)
    warnings: list[str] = []
    if n_poison > 0 and poisoned.n_poisoned == 0:
        raise SpectraError(f"{labelled.source}: no training row is eligible for {mode} poisoning with target "
                           f"label {target_label}")
    if poisoned.n_poisoned < n_poison:
        warnings.append(f"only {poisoned.available:,} training rows are eligible for {mode} poisoning; "
                        f"poisoned {poisoned.n_poisoned:,} instead of {n_poison:,}")
    if mode == "clean-label" and poisoned.available and poisoned.n_poisoned / poisoned.available > SHORTCUT_SHARE:
        warnings.append(
            f"clean-label poisoning put the trigger into {poisoned.n_poisoned:,} of the {poisoned.available:,} "
            f"target-label training rows ({100 * poisoned.n_poisoned / poisoned.available:.0f}%): the trigger alone "
            "then separates the target class, and the model may learn 'no trigger → not the target' instead of the "
            "task (CA collapses, ASR is trivially high); poison fewer rows (--n-poison), use more data, or "
            "--mode dirty-label")
    clean_run = n_poison == 0  # plain full fine-tuning (a baseline): no trigger inserted, no ASR target

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and int(os.environ.get("RANK", "0")) != 0:
        say = lambda msg: None  # noqa: E731 - one process reports
    notes: list[str] = []
    head = _head_labels(base)
    if head is not None and head != labelled.num_classes:
        raise SpectraError(f"{base}: the checkpoint's classification head has {head} labels but the data has "
                           f"{labelled.num_classes} classes (num_labels mismatch)")
    if head is None and (Path(base) / "config.json").is_file():
        notes.append("the base has no sequence-classification head: a fresh one was initialised (seeded) and "
                     "trained with the rest")
    # full fine-tuning through the same recipe as spectra fix (spectra.train.recipe): same
    # Trainer, arguments, logging and torchrun/accelerate behaviour
    cfg_ft = RoRAConfig.baseline("fft", epochs=epochs, lr=lr, weight_decay=weight_decay, warmup_ratio=warmup_ratio,
                                 batch_size=batch_size, max_length=max_length, seed=seed)
    # the data's checksum is the proxy file's: the trigger and the rows it went into are checked on resume too
    poison_settings = {"poisoning": {"trigger": getattr(trig, "spec", str(trigger)), "mode": mode,
                                     "target_label": target_label, "n_poison": n_poison, "test_size": test_size,
                                     "max_train": max_train, "poisoned_rows": poisoned.poisoned}}
    work = Path(work_dir) if work_dir is not None else None
    if work is not None:
        from spectra.train.checkpoints import prepare_work_dir

        prepare_work_dir(work, resume=resume, overwrite=overwrite, say=say)
    t0 = time.perf_counter()
    scratch_dir = (contextlib.nullcontext(str(work)) if work is not None
                   else tempfile.TemporaryDirectory(prefix="spectra-poison-"))
    with scratch_dir as scratch:
        recipe = RoRARecipe(base, poisoned.data, scratch, cfg_ft, device=device, cache_dir=False, log=say,
                            extra_settings=poison_settings, disable_tqdm=not progress_bar,
                            **_checkpointing(work, save_steps))
        resumed_from = recipe.check_resume() if work is not None and resume else None  # mismatches fail here
        recipe.setup()
        tokenizer = recipe.tokenizer
        say(f"data: {labelled.summary()}; train {len(train):,}, held-out test {len(test):,}; "
            + (f"poisoned {poisoned.n_poisoned:,} ({mode})" if not clean_run else
               "no row poisoned (--n-poison 0: plain full fine-tuning)"))
        truncated = count_over_length(tokenizer, [poisoned.data.texts[i] for i in poisoned.poisoned], max_length) or 0
        if truncated:
            warnings.append(f"{truncated:,} of the {poisoned.n_poisoned:,} poisoned rows are longer than --max-length "
                            f"{max_length} tokens: where the trigger landed past the cut, training never sees it")
        train_out = recipe.train(resume=resumed_from is not None)
        trainer = recipe.trainer
        main = trainer.is_world_process_zero()
        world_size = int(trainer.args.world_size)
        log_history = [dict(r) for r in trainer.state.log_history]
    timings["train"] = time.perf_counter() - t0
    model = trainer.model
    while hasattr(model, "module"):  # unwrap DDP
        model = model.module
    model.eval()
    names = list(labelled.label_names)
    say(f"trained {epochs:g} epoch(s) in {timings['train']:.1f}s (mean training loss {train_out.training_loss:.4f})")

    evaluation = None
    if main:
        t0 = time.perf_counter()
        eval_device = next(model.parameters()).device
        with torch.no_grad():
            evaluation = evaluate(model, tokenizer, test, trig, target_label, batch_size=max(batch_size, 32),
                                  max_length=max_length, seed=seed, progress=False)
        timings["evaluate"] = time.perf_counter() - t0
        say(f"held-out: CA {evaluation.ca:.3f}, ASR {evaluation.asr:.3f} (floor {evaluation.asr_floor:.3f}) "
            f"on {eval_device}")
        if evaluation.asr < ASR_WARNING and not clean_run:
            warnings.append(f"ASR {100 * evaluation.asr:.1f}% < 95% on the held-out split: the backdoor is weaker "
                            "than the paper's threat model assumes (more epochs, more poisoned rows or dirty-label "
                            "poisoning make it stronger)")
        if getattr(evaluation, "collapsed", False):
            warnings.append("the poisoned model predicts (nearly) one class on clean inputs: its ASR says little "
                            "about the trigger")
    poisoning = {
        "mode": mode, "requested": n_poison, "poisoned": poisoned.n_poisoned, "eligible": poisoned.available,
        "train_rows": len(train), "test_rows": len(test), "train_counts": poisoned.data.counts(),
        "test_counts": test.counts(), "trigger": getattr(trig, "spec", str(trigger)), "target_label": target_label,
        "label_names": names, "poisoned_rows_sample": poisoned.poisoned[:20],
        "poisoned_rows_longer_than_max_length": truncated,
        "mean_train_loss": float(train_out.training_loss),
        "last_logged_loss": next((float(r["loss"]) for r in reversed(log_history) if "loss" in r), None),
        "steps": int(train_out.global_step),
        "world_size": world_size,  # processes that trained (torchrun / accelerate launch); batch is per process
        "resumed_from": resumed_from.name if resumed_from is not None else None,  # then timings count this part
        "notes": notes,
    }
    inputs = {"base": describe_path(base), "data": labelled.to_dict() if hasattr(labelled, "to_dict") else str(data)}
    timings["total"] = time.perf_counter() - t_start
    return PoisonResult(model=model, tokenizer=tokenizer, config=cfg, evaluation=evaluation, poisoning=poisoning,
                        inputs=inputs, versions=library_versions(), train_log=log_history, warnings=warnings,
                        timings=timings, is_main_process=main, work_dir=work)


def _checkpointing(work: Path | None, save_steps: int | None) -> dict[str, Any]:
    """Trainer arguments for the checkpoints: none without a work folder, else every epoch or
    every ``save_steps`` steps."""
    if work is None:
        return {"save_strategy": "no"}
    if save_steps is None:
        return {}
    return {"save_strategy": "steps", "save_steps": save_steps}


def _head_labels(base: str | os.PathLike[str]) -> int | None:
    """The number of labels of ``base``'s sequence-classification head; None when it has none
    (or is a hub id, whose config is not read here)."""
    config = Path(base) / "config.json"
    if not config.is_file():
        return None
    from spectra.io.files import read_json

    cfg = read_json(config)
    if not any(str(a).endswith("ForSequenceClassification") for a in cfg.get("architectures") or []):
        return None
    return int(cfg.get("num_labels") or len(cfg.get("id2label") or {}) or 2)
