"""RoRA training as a recipe (setup → train → save) on transformers' ``Trainer``.

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

import contextlib
import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from spectra.errors import SpectraError
from spectra.train.config import MUTATING_INITS, RoRAConfig

#: target modules tried, in order, when ``--target-modules`` is not given (attention query/value)
DEFAULT_TARGETS = (("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"), ("c_attn",), ("query_key_value",), ("Wqkv",))

LogSink = Callable[[str], None]


# --------------------------------------------------------------------------- model setup


def default_target_modules(model: nn.Module) -> list[str]:
    """The attention query/value projections of ``model`` (``query,value`` for BERT)."""
    leaf = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, nn.Linear) or
            type(mod).__name__ == "Conv1D"}
    for names in DEFAULT_TARGETS:
        if all(n in leaf for n in names):
            return list(names)
    raise SpectraError(
        f"cannot guess the attention projections of {type(model).__name__}; pass --target-modules "
        f"(e.g. query,value or all-linear)"
    )


def lora_config(cfg: RoRAConfig, model: nn.Module) -> Any:
    """PEFT ``LoraConfig`` for ``cfg`` (task SEQ_CLS: the head is trained as modules_to_save)."""
    from peft import LoraConfig

    targets = cfg.target_modules or default_target_modules(model)
    init: Any = True if cfg.init == "default" else cfg.init
    fan_in_fan_out = getattr(model.config, "model_type", None) in ("gpt2",)
    try:
        return LoraConfig(
            task_type="SEQ_CLS", r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.lora_dropout,
            target_modules=targets, init_lora_weights=init, use_rslora=cfg.use_rslora, use_dora=cfg.use_dora,
            fan_in_fan_out=fan_in_fan_out,
        )
    except (ValueError, TypeError) as exc:
        raise SpectraError(f"LoRA settings rejected by peft: {str(exc).splitlines()[0]}") from None


def count_model_blocks(model: nn.Module) -> int:
    """Number of transformer blocks of an in-memory model (config, else module names)."""
    from spectra.io.keys import parse_layer

    cfg = getattr(model, "config", None)
    for key in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v > 0:
            return v
    found = [i for i in (parse_layer(n) for n, _ in model.named_modules()) if i is not None]
    return max(found) + 1 if found else 0


def monitored_modules(names: Sequence[str], layers: int | str, n_blocks: int) -> list[str]:
    """The LoRA modules Pt rescales (``layers`` top blocks, or all) — the ones whose σ_Δ is logged."""
    from spectra.io.keys import parse_layer
    from spectra.train.rescale import select_blocks

    chosen = select_blocks(layers, n_blocks)
    if chosen is None:
        return list(names)
    return [n for n in names if parse_layer(n) in chosen]


@dataclass
class RoRAModel:
    """A PEFT model with RoRA's parts attached (what :func:`prepare_model` returns)."""

    model: nn.Module
    config: RoRAConfig
    ci: Any = None  # BaseDropout | None
    tr: Any = None  # SubspacePenalty | None
    modules: list[str] = field(default_factory=list)  # every LoRA linear module
    monitored: list[str] = field(default_factory=list)  # Pt's modules (σ_Δ logged)
    sigma_pre: dict[str, float] = field(default_factory=dict)  # σ_max(W_pre) of the monitored modules

    def layer(self, name: str) -> nn.Module:
        from spectra.train.base_dropout import lora_linear_layers

        for n, layer in lora_linear_layers(self.model):
            if n == name:
                return layer
        raise KeyError(name)


def prepare_model(
    model: nn.Module,
    cfg: RoRAConfig,
    *,
    cache: Any = None,
    fingerprint: Callable[[str, torch.Tensor], str | None] | None = None,
    log: LogSink | None = None,
) -> RoRAModel:
    """Wrap a transformers classifier with PEFT LoRA and attach CI and Tr as ``cfg`` says.

    Tr's bases are computed from the weights as they are *before* PEFT's initialisation
    (PiSSA/OLoRA subtract their init from the base weights); σ_max(W_pre) of Pt's modules
    likewise. The same call serves training, resuming and tests.
    """
    from peft import get_peft_model

    from spectra.spectral import top_singular
    from spectra.train.base_dropout import attach_base_dropout, lora_linear_layers
    from spectra.train.regularizers import attach_subspace_bases, module_weight

    cfg.validate()
    if cfg.full:  # the FFT baseline: every weight trains, nothing is attached
        for p in model.parameters():
            p.requires_grad_(True)
        if log is not None:
            log(f"fft: full fine-tuning of {sum(p.numel() for p in model.parameters()):,} parameters")
        return RoRAModel(model=model, config=cfg)
    peft_cfg = lora_config(cfg, model)
    try:
        with warnings.catch_warnings():
            # peft 0.21 reads transformers' deprecated is_gradient_checkpointing: not ours to act on
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            peft_model = get_peft_model(model, peft_cfg)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise SpectraError(f"cannot apply LoRA to the base: {str(exc).splitlines()[0]}") from None
    layers = list(lora_linear_layers(peft_model))
    if not layers:
        raise SpectraError(f"no LoRA linear layer was created for target modules {peft_cfg.target_modules}")
    names = [n for n, _ in layers]
    out = RoRAModel(model=peft_model, config=cfg, modules=names)
    blocks = cfg.rescale_blocks() if cfg.pt_active else 3
    out.monitored = monitored_modules(names, blocks, count_model_blocks(peft_model))
    originals = original_weights(layers) if cfg.init in MUTATING_INITS else {}
    if cfg.tr_active:
        out.tr = attach_subspace_bases(peft_model, cfg.top_k, cache=cache, fingerprint=fingerprint,
                                       exact=cfg.exact_spectra, layers=layers, weights=originals)
        out.sigma_pre = {n: out.tr.sigma_max[n] for n in out.monitored}
    else:
        for n, layer in layers:
            if n in out.monitored:
                W = originals[n] if n in originals else module_weight(layer)
                out.sigma_pre[n] = float(top_singular(W.float().cpu(), 1).S[0])
    if cfg.ci_active:
        out.ci = attach_base_dropout(peft_model, cfg.base_dropout)
    if log is not None:
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        log(f"{cfg.method}: LoRA r={cfg.rank} α={cfg.alpha:g} on {len(names)} modules "
            f"({', '.join(sorted({n.rsplit('.', 1)[-1] for n in names}))}), {trainable:,} trainable parameters"
            + (f"; CI p={cfg.base_dropout:g}" if out.ci else "")
            + (f"; Tr λ={cfg.lam:g} k={cfg.top_k}" if out.tr else ""))
    return out


def original_weights(layers: Sequence[tuple[str, nn.Module]], adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """W_pre of layers whose PiSSA/OLoRA init rewrote the base weight: ``W_res + s·B₀A₀``.

    Both inits set ``W_res = W_pre − s·B₀A₀`` (PEFT's ``pissa_init``/``olora_init``), so
    right after initialisation the original is recovered exactly up to rounding, without
    keeping a second copy of the model.
    """
    from spectra.train.regularizers import module_weight

    found = {}
    with torch.no_grad():
        for name, layer in layers:
            B = layer.lora_B[adapter_name].weight.float()
            A = layer.lora_A[adapter_name].weight.float()
            found[name] = module_weight(layer).float() + float(layer.scaling[adapter_name]) * (B @ A)
    return found


# --------------------------------------------------------------------------- trainer


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
    """Mean subspace overlap (when Tr's bases exist) and σ_Δ = σ_max(s·B·A) of the monitored modules."""
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
            need_svd = name in rora.monitored or hasattr(layer, U_BUFFER)
            if not need_svd:
                continue
            svd = lowrank_svd(B, A, scale)
            if name in rora.monitored:
                stats[f"sigma_delta/{name}"] = float(svd.S[0])
            if hasattr(layer, U_BUFFER):
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
        parts.append(f"overlap {logs['overlap']:.3f}")
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
        save_strategy="epoch" if save else "no", logging_strategy="epoch", eval_strategy="no",
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
    return trainer


# --------------------------------------------------------------------------- saving


def save_initial_adapter(peft_model: nn.Module, folder: str | os.PathLike[str]) -> Path:
    """Save the adapter as initialised (needed to convert PiSSA/OLoRA into a plain LoRA)."""
    cfg = peft_model.peft_config["default"]
    init = cfg.init_lora_weights
    cfg.init_lora_weights = True  # loading it must not re-run the decomposition
    try:
        peft_model.save_pretrained(str(folder))
    finally:
        cfg.init_lora_weights = init
    return Path(folder)


def save_adapter(peft_model: nn.Module, folder: str | os.PathLike[str],
                 initial_adapter: str | os.PathLike[str] | None = None) -> Path:
    """Save a standard PEFT adapter (``PeftModel.from_pretrained`` loads it on the original base).

    With PiSSA/OLoRA (``initial_adapter`` given) PEFT's conversion turns the trained
    adapter into a plain LoRA of rank 2r on the *original* base weights. peft 0.21's
    conversion drops the ``modules_to_save`` tensors (the classification head); they are
    put back from the trained model's state.
    """
    folder = Path(folder)
    if initial_adapter is None:
        peft_model.save_pretrained(str(folder))
        return folder
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    peft_model.save_pretrained(str(folder), path_initial_model_for_weight_conversion=str(initial_adapter))
    weights = folder / "adapter_model.safetensors"
    converted = load_file(str(weights))
    restored = 0
    for key, value in get_peft_model_state_dict(peft_model).items():
        if "lora_" not in key and key not in converted:
            converted[key] = value.detach().cpu().contiguous()
            restored += 1
    if restored:
        save_file(converted, str(weights), metadata={"format": "pt"})
    return folder


# --------------------------------------------------------------------------- training log


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


def write_run_settings(path: Path, settings: dict[str, Any]) -> None:
    from spectra.io.files import write_text_atomic

    write_text_atomic(path, json.dumps(settings, indent=2, sort_keys=True, default=str) + "\n")


def check_resume_settings(path: Path, settings: dict[str, Any]) -> None:
    """A resumed run must train with the settings it started with (Pt settings may change)."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpectraError(f"{path.parent}: no run.json — not a spectra fix work folder, cannot --resume") from None
    except (OSError, ValueError) as exc:
        raise SpectraError(f"{path}: unreadable ({exc})") from None
    for key in ("base", "data_sha256", *RoRAConfig.TRAINING_FIELDS):
        a = saved.get("config", {}).get(key, saved.get(key)) if key in RoRAConfig.TRAINING_FIELDS else saved.get(key)
        b = settings.get("config", {}).get(key) if key in RoRAConfig.TRAINING_FIELDS else settings.get(key)
        if json.dumps(a, default=str) != json.dumps(b, default=str):
            raise SpectraError(
                f"{path.parent}: cannot --resume, {key} was {a!r} and is now {b!r} (use the original settings, "
                f"or --overwrite to start over)"
            )


def last_checkpoint(folder: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not folder.is_dir():
        return None
    found = get_last_checkpoint(str(folder))
    return Path(found) if found else None


def nan_guard(value: float, what: str) -> None:
    if not math.isfinite(value):
        raise SpectraError(f"training diverged: {what} is {value} (lower --lr or --lam)")


# --------------------------------------------------------------------------- recipe


def load_for_training(base: str | os.PathLike[str], label_names: Sequence[str]) -> tuple[nn.Module, Any]:
    """Base model as a float32 sequence classifier with ``len(label_names)`` labels, and its tokenizer.

    A base without a classification head (e.g. a ``BertModel`` folder) gets a fresh head,
    initialised from the current seed; a head of another size is replaced.
    """
    import transformers as tf

    from spectra.io.hub import looks_like_hub_id, resolve_folder

    source = str(base) if looks_like_hub_id(base) and not Path(base).exists() else str(resolve_folder(base, "base model"))
    n = len(label_names)
    kwargs: dict[str, Any] = dict(num_labels=n, id2label=dict(enumerate(label_names)),
                                  label2id={name: i for i, name in enumerate(label_names)},
                                  ignore_mismatched_sizes=True)
    try:
        tokenizer = tf.AutoTokenizer.from_pretrained(source)
    except Exception as exc:  # noqa: BLE001 - any tokenizer failure is a bad input folder
        raise SpectraError(f"{source}: cannot load a tokenizer ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    try:
        try:
            model = tf.AutoModelForSequenceClassification.from_pretrained(source, dtype=torch.float32, **kwargs)
        except TypeError:  # transformers < 4.56 spells it torch_dtype
            model = tf.AutoModelForSequenceClassification.from_pretrained(source, torch_dtype=torch.float32, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise SpectraError(f"{source}: cannot load as a sequence classifier ({str(exc).splitlines()[0]})") from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise SpectraError(f"{source}: the tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def quiet_transformers() -> contextlib.AbstractContextManager[None]:
    """transformers' loading chatter off while loading (one implementation, in spectra.io.model)."""
    from spectra.io.model import _quiet_transformers

    return _quiet_transformers()


def checkpoint_fingerprints(base: str | os.PathLike[str]) -> Callable[[str, torch.Tensor], str | None]:
    """Cache identities of the base's weights as the audit computes them (shared cache)."""
    from spectra.io import open_base
    from spectra.io.keys import KeyMatcher

    try:
        ckpt = open_base(base)
    except SpectraError:
        return lambda name, W: None
    matcher = KeyMatcher(ckpt.keys(), tie_word_embeddings=bool(ckpt.config.get("tie_word_embeddings", True)))

    def fingerprint(name: str, W: torch.Tensor) -> str | None:
        key = matcher.match(name)
        return ckpt.fingerprint(key) if key is not None else None

    return fingerprint


class RoRARecipe:
    """Setup → train → save, with checkpoints in ``work_dir/checkpoints`` every epoch.

    ``work_dir`` holds everything ``--resume`` needs: ``run.json`` (the settings, checked on
    resume), ``checkpoints/checkpoint-<step>/`` (adapter, optimizer, scheduler, RNG states,
    ``trainer_state.json`` with the log history) and, for PiSSA/OLoRA, ``initial_adapter/``.
    """

    def __init__(self, base: str | os.PathLike[str], data: Any, work_dir: str | os.PathLike[str],
                 config: RoRAConfig, *, device: str = "auto", cache_dir: str | os.PathLike[str] | bool | None = None,
                 log: LogSink | None = None, val_data: Any = None, monitor_trigger: Any = None,
                 target_label: int = 0, **training_overrides: Any) -> None:
        self.base = str(base)
        self.data = data
        self.val_data = val_data  # clean validation rows: val_ca/val_loss every epoch
        self.monitor_trigger = monitor_trigger  # recorded, never used to choose (val_asr_monitor)
        self.target_label = target_label
        self.work_dir = Path(work_dir)
        self.config = config.validate()
        self.device = device
        self.cache_dir = cache_dir
        self.log = log or (lambda msg: None)
        self.training_overrides = training_overrides
        self.rora: RoRAModel | None = None
        self.trainer: Any = None
        self.tokenizer: Any = None

    # ---- setup
    def settings(self) -> dict[str, Any]:
        return {"base": self.base, "data_sha256": getattr(self.data, "sha256", None),
                "config": self.config.to_dict(),
                "val_data": self.val_data.to_dict() if self.val_data is not None else None}

    def setup(self) -> RoRARecipe:
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
            check_resume_settings(self.work_dir / "run.json", self.settings())
        return checkpoint

    # ---- train
    def train(self, resume: bool = False) -> Any:
        assert self.trainer is not None, "call setup() first"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        run_json = self.work_dir / "run.json"
        checkpoint = self.check_resume() if resume else None
        if checkpoint is not None:
            self.log(f"resuming from {checkpoint}")
        elif self.is_main:
            write_run_settings(run_json, self.settings())
        try:
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
            self.rora.model.save_pretrained(str(folder), safe_serialization=True)
            self.tokenizer.save_pretrained(str(folder))
            return Path(folder)
        initial = self.work_dir / "initial_adapter" if self.config.init in MUTATING_INITS else None
        return save_adapter(self.rora.model, folder, initial)

    def log_table(self) -> Any:
        return log_table(self.trainer.state.log_history if self.trainer is not None else [])
