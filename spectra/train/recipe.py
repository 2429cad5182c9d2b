"""RoRA training as a recipe (setup → train → save), torchtune-style, on transformers' ``Trainer``.

Everything distributed is the Trainer's: ``torchrun --nproc_per_node N`` or ``accelerate
launch`` run the same code as DDP (gloo on CPU, NCCL on GPUs), and ``--batch-size`` is per
process. The model (:mod:`spectra.train.model`), the Trainer (:mod:`spectra.train.trainer`)
and the checkpoints (:mod:`spectra.train.checkpoints`) are each built in their own module;
this one strings them together. Full fine-tuning (``finetune="full"``) runs the same recipe.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from spectra.errors import SpectraError
from spectra.io.model import progress_bars_off
from spectra.train.checkpoints import check_resume_settings, last_checkpoint, save_adapter, save_initial_adapter, \
    write_run_settings
from spectra.train.config import MUTATING_INITS, RoRAConfig
from spectra.train.model import LogSink, RoRAModel, checkpoint_fingerprints, load_for_training, prepare_model, \
    quiet_transformers
from spectra.train.trainer import EncodedDataset, build_trainer, log_table, nan_guard, training_arguments


class RoRARecipe:
    """Setup → train → save, with checkpoints in ``work_dir/checkpoints`` every epoch.

    ``work_dir`` holds everything ``--resume`` needs: ``run.json`` (the settings, checked on
    resume), ``checkpoints/checkpoint-<step>/`` (adapter, optimizer, scheduler, RNG states,
    ``trainer_state.json`` with the log history) and, for PiSSA/OLoRA, ``initial_adapter/``.
    """

    def __init__(self, base: str | os.PathLike[str], data: Any, work_dir: str | os.PathLike[str],
                 config: RoRAConfig, *, device: str = "auto", cache_dir: str | os.PathLike[str] | bool | None = None,
                 log: LogSink | None = None, val_data: Any = None, monitor_trigger: Any = None,
                 target_label: int = 0, extra_settings: dict[str, Any] | None = None,
                 **training_overrides: Any) -> None:
        self.base = str(base)
        self.data = data
        self.val_data = val_data  # clean validation rows: val_ca/val_loss every epoch
        self.monitor_trigger = monitor_trigger  # recorded, never used to choose (val_asr_monitor)
        self.target_label = target_label
        self.work_dir = Path(work_dir)
        self.config = config  # validated when it was built
        self.device = device
        self.cache_dir = cache_dir
        self.log = log or (lambda msg: None)
        self.training_overrides = training_overrides
        # settings outside RoRAConfig that a resumed run must match too (spectra poison's trigger and rows)
        self.extra_settings = dict(extra_settings or {})
        self.rora: RoRAModel | None = None
        self.trainer: Any = None
        self.tokenizer: Any = None

    # ---- setup
    def settings(self) -> dict[str, Any]:
        return {"base": self.base, "data_sha256": getattr(self.data, "sha256", None),
                "config": self.config.to_dict(),
                "val_data": self.val_data.to_dict() if self.val_data is not None else None, **self.extra_settings}

    def setup(self) -> RoRARecipe:
        """Build the model, the LoRA/RoRA wrapping, the data and the trainer (checks the data has two
        classes); returns self."""
        from transformers import set_seed

        from spectra.io.spectrum_cache import SpectrumCache, default_folder

        cfg = self.config
        if len(set(self.data.labels)) < 2:
            raise SpectraError(f"{self.data.source}: training data has a single class; RoRA needs at least two")
        set_seed(cfg.seed)  # the fresh head (if any) is initialised from the seed
        with quiet_transformers():
            model, self.tokenizer = load_for_training(self.base, self.data.label_names)
        cache = None if self.cache_dir is False else SpectrumCache(
            self.cache_dir or default_folder())
        self.rora = prepare_model(model, cfg, cache=cache, fingerprint=checkpoint_fingerprints(self.base),
                                  log=self.log)
        dataset = EncodedDataset(self.tokenizer, self.data.texts, self.data.labels, cfg.max_length)
        args = training_arguments(cfg, self.work_dir / "checkpoints", self.device, **self.training_overrides)
        validation = None
        if self.val_data is not None:
            from spectra.train.validation import EpochValidation

            validation = EpochValidation(self.val_data, self.tokenizer, trigger=self.monitor_trigger,
                                         target_label=self.target_label, max_length=cfg.max_length, seed=cfg.seed)
        self.trainer = build_trainer(self.rora, dataset, self.tokenizer, args, log_sink=self.log,
                                     validation=validation)
        if cfg.init in MUTATING_INITS and self.is_main and not (self.work_dir / "initial_adapter").is_dir():
            save_initial_adapter(self.rora.model, self.work_dir / "initial_adapter")
        return self

    @property
    def is_main(self) -> bool:
        return self.trainer is None or bool(self.trainer.is_world_process_zero())

    def check_resume(self) -> Path | None:
        """The checkpoint ``train(resume=True)`` would continue from, after checking that
        ``run.json`` matches this run's settings (cheap: call it before :meth:`setup`)."""
        checkpoint = last_checkpoint(self.work_dir / "checkpoints")
        if checkpoint is not None:
            check_resume_settings(self.work_dir / "run.json", self.settings(), tuple(self.extra_settings))
        return checkpoint

    # ---- train
    def train(self, resume: bool = False) -> Any:
        """Train, from the last checkpoint with ``resume`` (whose settings must match the run's); a
        training loss that is not finite stops it. Returns the trainer's output (Pt is a separate step)."""
        assert self.trainer is not None, "call setup() first"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        run_json = self.work_dir / "run.json"
        checkpoint = self.check_resume() if resume else None
        if checkpoint is not None:
            self.log(f"resuming from {checkpoint}")
        elif self.is_main:
            write_run_settings(run_json, self.settings())
        # without the Trainer's bar (a log, not a terminal), transformers' own bars go too:
        # each checkpoint would print a "Writing model shards" bar into the log
        quiet = progress_bars_off() if self.trainer.args.disable_tqdm else contextlib.nullcontext()
        try:
            with quiet:
                result = self.trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        except ValueError as exc:
            if "checkpoint" in str(exc).lower():
                raise SpectraError(f"{checkpoint}: cannot resume ({str(exc).splitlines()[0]})") from None
            raise
        nan_guard(float(result.training_loss), "the training loss")
        return result

    # ---- save
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """The trained adapter as a standard PEFT folder (PiSSA/OLoRA converted to plain LoRA);
        with full fine-tuning, the whole model and its tokenizer as a Hugging Face folder."""
        assert self.rora is not None
        if self.config.full:
            with progress_bars_off():  # a "Writing model shards" bar for one file is noise
                self.rora.model.save_pretrained(str(folder), safe_serialization=True)
            self.tokenizer.save_pretrained(str(folder))
            return Path(folder)
        initial = self.work_dir / "initial_adapter" if self.config.init in MUTATING_INITS else None
        return save_adapter(self.rora.model, folder, initial)

    def log_table(self) -> Any:
        return log_table(self.trainer.state.log_history if self.trainer is not None else [])
