"""RoRA's ``Trainer``: the loss with Tr's penalty, the per-epoch log line, and the arguments.

Everything distributed is the Trainer's: ``torchrun --nproc_per_node N`` or
``accelerate launch`` run the same code as DDP (gloo on CPU, NCCL on GPUs), and
``--batch-size`` is per process. RoRA adds three things to a PEFT LoRA model:

- CI: forward hooks on the frozen base layers (:mod:`spectra.train.base_dropout`);
- Tr: bases as non-persistent buffers on the LoRA layers and the penalty added to the
  loss in :meth:`RoRATrainer.compute_loss` (:mod:`spectra.train.regularizers`). The
  penalty reads the LoRA factors directly (outside the forward pass), which DDP handles
  (a parameter's gradient is reduced once, with the penalty's part included); FSDP
  shards parameters outside the forward and is not supported with Tr;
- logging: ``penalty`` (λ·Σ, the term added to the loss), ``task_loss``, the mean
  ``overlap`` of ΔW with W_pre's top-k subspaces, and ``σ_Δ`` of the modules Pt will
  rescale, at every log (every epoch by default) — in ``trainer.state.log_history``,
  which every checkpoint stores, so a resumed run keeps the whole history.

Pt acts on the saved adapter (:mod:`spectra.train.rescale`), not here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from spectra.errors import SpectraError
from spectra.train.config import RoRAConfig
from spectra.train.model import LogSink, RoRAModel


class RoRATrainer(Trainer):
    """Trainer whose loss is ``task + λ·Σ(‖U_kᵀB‖² + ‖A V_k‖²)`` and whose logs carry
    ``task_loss``, ``penalty``, ``overlap`` and ``sigma_delta/<module>``."""

    def __init__(self, *args: Any, rora: RoRAModel | None = None, log_sink: LogSink | None = None,
                 validation: Callable[[nn.Module], dict[str, float]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Sequence classifiers return a per-batch *mean* cross-entropy, but transformers
        # (5.x) treats any model whose forward takes **kwargs as normalising by
        # num_items_in_batch: it then skips the division by the accumulation steps and
        # multiplies by the number of processes, so under DDP or gradient accumulation the
        # task gradient grew N-fold against Tr's penalty. A mean loss per batch, divided by
        # the accumulation steps and averaged by DDP, is the correct global mean here.
        self.model_accepts_loss_kwargs = False
        self.rora = rora
        self.rora_log_sink = log_sink
        self.validation = validation  # per-epoch clean validation (spectra.train.validation)
        self._pen_sum = 0.0
        self._pen_n = 0

    def _ga_divisor(self, num_items_in_batch: Any) -> int:
        # the Trainer divides a per-batch-mean loss by the accumulation steps itself;
        # a loss already normalised over the accumulated batch it leaves alone, so the
        # penalty (a per-step quantity) must then be divided here
        scaled = getattr(self, "loss_is_scaled_for_ga", None)
        if scaled is None:
            scaled = (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or \
                self.compute_loss_func is not None
        steps = getattr(self, "current_gradient_accumulation_steps", None) or self.args.gradient_accumulation_steps
        return int(steps) if scaled else 1

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                      num_items_in_batch=num_items_in_batch)
        rora = self.rora
        if rora is None or rora.tr is None or not model.training:
            return result
        loss, outputs = result if return_outputs else (result, None)
        penalty = rora.config.lam * rora.tr()
        self._pen_sum += float(penalty.detach())
        self._pen_n += 1
        loss = loss + penalty.to(loss.dtype) / self._ga_divisor(num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self.rora is not None:
            logs.update(self._rora_stats(logs["loss"]))
        if "loss" in logs and self.validation is not None and self.is_world_process_zero():
            logs.update(self.validation(self.model))
        super().log(logs, *args, **kwargs)
        if "loss" in logs and self.rora_log_sink is not None and self.is_world_process_zero():
            self.rora_log_sink(format_log(logs))

    def _rora_stats(self, loss: float) -> dict[str, float]:
        stats: dict[str, float] = {}
        pen = self._pen_sum / self._pen_n if self._pen_n else 0.0
        self._pen_sum, self._pen_n = 0.0, 0
        stats["penalty"] = pen
        stats["task_loss"] = loss - pen
        stats.update(spectral_stats(self.rora))
        return stats


def spectral_stats(rora: RoRAModel) -> dict[str, float]:
    """Mean subspace overlap (when Tr's bases exist) and σ_Δ = σ_max(s·B·A) of the monitored modules
    (with a PiSSA/OLoRA init, of the update since initialisation, s·(BA − B₀A₀))."""
    from spectra.spectral import lowrank_svd, subspace_overlap
    from spectra.train.base_dropout import lora_linear_layers
    from spectra.train.regularizers import U_BUFFER, V_BUFFER

    stats: dict[str, float] = {}
    overlaps = []
    with torch.no_grad():
        for name, layer in lora_linear_layers(rora.model):
            if "default" not in layer.lora_A:
                continue
            B = layer.lora_B["default"].weight.detach().float().cpu()
            A = layer.lora_A["default"].weight.detach().float().cpu()
            scale = float(layer.scaling["default"])
            tr_bases = hasattr(layer, U_BUFFER)
            svd = lowrank_svd(B, A, scale) if tr_bases else None  # Tr's overlap reads s·BA, what it penalises
            if name in rora.initial_factors:  # PiSSA/OLoRA: the update s·(BA − B₀A₀) = s·[B, −B₀]·[A; A₀]
                B0, A0 = rora.initial_factors[name]
                stats[f"sigma_delta/{name}"] = float(
                    lowrank_svd(torch.cat([B, -B0], dim=1), torch.cat([A, A0], dim=0), scale).S[0])
            elif name in rora.monitored:
                svd = svd if svd is not None else lowrank_svd(B, A, scale)
                stats[f"sigma_delta/{name}"] = float(svd.S[0])
            if svd is not None and tr_bases:
                U = getattr(layer, U_BUFFER).cpu()
                V = getattr(layer, V_BUFFER).cpu()
                overlaps.append(float(subspace_overlap(U, V.mT, svd.U, svd.S, svd.Vh)["overlap"]))
    if overlaps:
        stats["overlap"] = sum(overlaps) / len(overlaps)
    ratios = [rora.sigma_pre[n] / stats[f"sigma_delta/{n}"] for n in rora.monitored
              if stats.get(f"sigma_delta/{n}", 0) > 0 and n in rora.sigma_pre]
    if ratios:
        stats["ratio_min"] = min(ratios)
        stats["ratio_median"] = sorted(ratios)[len(ratios) // 2]
    return stats


def format_log(logs: dict[str, Any]) -> str:
    """One line per log: epoch, loss, task loss, penalty, overlap, σ_pre/σ_Δ."""
    parts = [f"epoch {logs.get('epoch', float('nan')):.2f}", f"loss {logs.get('loss', float('nan')):.4f}"]
    if logs.get("penalty"):
        parts += [f"task {logs['task_loss']:.4f}", f"penalty {logs['penalty']:.4g}"]
    if "overlap" in logs:
        parts.append(f"overlap {logs['overlap']:.2g}")  # Tr drives it to ~1e-7: fixed digits read "0.000"
    if "val_ca" in logs:
        parts.append(f"val CA {100 * logs['val_ca']:.1f}%")
    if "val_asr_monitor" in logs:
        parts.append(f"val ASR (monitor) {100 * logs['val_asr_monitor']:.1f}%")
    if "ratio_median" in logs:
        parts.append(f"σ_pre/σ_Δ median {logs['ratio_median']:.3g}")
    return "  ".join(parts)


# --------------------------------------------------------------------------- data


class EncodedDataset(torch.utils.data.Dataset):
    """Tokenised texts with labels, padded per batch by ``DataCollatorWithPadding``."""

    def __init__(self, tokenizer: Any, texts: Sequence[str], labels: Sequence[int], max_length: int) -> None:
        enc = tokenizer(list(texts), truncation=True, max_length=max_length)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        self.rows = [{**{k: enc[k][i] for k in keys}, "labels": int(labels[i])} for i in range(len(texts))]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


# --------------------------------------------------------------------------- arguments


def training_arguments(cfg: RoRAConfig, output_dir: str | os.PathLike[str], device: str = "auto",
                       save: bool = True, **overrides: Any) -> Any:
    """``TrainingArguments`` with the paper's recipe: AdamW, linear schedule, 6 % warm-up, a
    checkpoint and a log line every epoch, seeds recorded."""
    from transformers import TrainingArguments

    use_cpu = _training_device(device) == "cpu"
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir), num_train_epochs=cfg.epochs, learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_ratio, lr_scheduler_type="linear",
        optim="adamw_torch", per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, seed=cfg.seed, data_seed=cfg.seed,
        save_strategy="epoch" if save else "no", save_total_limit=1, logging_strategy="epoch", eval_strategy="no",
        report_to="none", disable_tqdm=True, use_cpu=use_cpu, remove_unused_columns=False,
        dataloader_num_workers=0,
        # Tr's bases are constant buffers: broadcasting them every step would cost k·(m+n)
        # floats per module per step for nothing
        ddp_broadcast_buffers=False,
    )
    kwargs.update(overrides)
    import dataclasses

    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    if "warmup_ratio" in known and "warmup_ratio" not in overrides:  # transformers 4.x: a separate ratio
        kwargs["warmup_ratio"] = kwargs.pop("warmup_steps")
    if "group_by_length" in kwargs and "group_by_length" not in known:  # transformers 5 renamed it
        if kwargs.pop("group_by_length"):
            kwargs["train_sampling_strategy"] = "group_by_length"
    return TrainingArguments(**kwargs)


def _training_device(device: str) -> str:
    """``cpu`` or ``cuda`` for the Trainer (:func:`spectra.device.resolve_device` checks the
    string); a numbered GPU is refused: under DDP each process picks its own."""
    from spectra.device import resolve_device

    if str(device).lower().startswith("cuda:"):
        raise SpectraError(f"--device {device}: training picks the device per process; use "
                           f"CUDA_VISIBLE_DEVICES={str(device).split(':', 1)[1]} with --device cuda")
    return "cpu" if resolve_device(device).type == "cpu" else "cuda"


def build_trainer(rora: RoRAModel, train_dataset: Any, tokenizer: Any, args: Any,
                  log_sink: LogSink | None = None, callbacks: Sequence[Any] = (),
                  validation: Callable[[nn.Module], dict[str, float]] | None = None) -> Any:
    """A :class:`RoRATrainer` for ``rora`` with dynamic padding and spectra's log line."""
    from transformers import DataCollatorWithPadding
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer = RoRATrainer(model=rora.model, args=args, train_dataset=train_dataset,
                  data_collator=DataCollatorWithPadding(tokenizer), rora=rora, log_sink=log_sink,
                  callbacks=list(callbacks), validation=validation)
    trainer.remove_callback(PrinterCallback)  # the log sink prints one compact line instead
    if log_sink is not None:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(EtaCallback(log_sink))
    return trainer


def _eta_callback_class() -> type:
    from transformers import TrainerCallback

    class _EtaCallback(TrainerCallback):
        """Training steps with an ETA in the log (the per-epoch line alone left a user
        without a word for minutes: poisoning MiniLM is silent for 5.5 min otherwise)."""

        def __init__(self, log: LogSink, interval_s: float = 30.0) -> None:
            from spectra.progress import EtaLog

            self.eta = EtaLog("training steps", log, interval_s)

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                self.eta(state.global_step, state.max_steps)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                self.eta(state.global_step, state.max_steps)

    return _EtaCallback


def EtaCallback(log: LogSink, interval_s: float = 30.0) -> Any:  # noqa: N802 - a class, built lazily
    """A ``TrainerCallback`` that logs training steps done, elapsed time and an ETA
    (:class:`spectra.progress.EtaLog`) every ``interval_s`` seconds and each tenth of the run."""
    return _eta_callback_class()(log, interval_s)


def log_table(log_history: Sequence[dict[str, Any]]) -> Any:
    """The per-epoch training log (rows that carry a ``loss``) as a DataFrame.

    Columns: ``epoch, step, loss, task_loss, penalty, overlap, learning_rate, ratio_min,
    ratio_median`` then ``sigma_delta/<module>`` for Pt's modules.
    """
    import pandas as pd

    rows = [dict(r) for r in log_history if "loss" in r and "train_runtime" not in r]
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=["epoch", "step", "loss", "task_loss", "penalty"])
    lead = [c for c in ("epoch", "step", "loss", "task_loss", "penalty", "val_ca", "val_loss", "val_asr_monitor",
                        "overlap", "learning_rate", "grad_norm", "ratio_min", "ratio_median") if c in table.columns]
    sig = sorted(c for c in table.columns if c.startswith("sigma_delta/"))
    rest = [c for c in table.columns if c not in lead and c not in sig]
    return table[lead + sig + rest]


def nan_guard(value: float, what: str) -> None:
    """Stop training with one line when a loss or penalty stops being finite (a diverged run is not a result)."""
    if not math.isfinite(value):
        raise SpectraError(f"training diverged: {what} is {value} (lower --lr or --lam)")
