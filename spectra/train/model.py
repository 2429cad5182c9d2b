"""The model a run trains: a classifier loaded for training, wrapped with PEFT LoRA and RoRA's
parts (CI hooks, Tr bases) as the config says — or left whole for full fine-tuning."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spectra.errors import SpectraError
from spectra.train.config import MUTATING_INITS, RoRAConfig

#: target modules tried, in order, when ``--target-modules`` is not given (attention query/value)
DEFAULT_TARGETS = (("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"), ("c_attn",), ("query_key_value",), ("Wqkv",))

LogSink = Callable[[str], None]


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
    #: (B₀, A₀) of monitored modules whose PiSSA/OLoRA init moved part of W_pre into the
    #: adapter: their update is s·(BA − B₀A₀), not s·BA (which starts at W_pre's top part)
    initial_factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

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
    if cfg.init in MUTATING_INITS:
        out.initial_factors = {n: (layer.lora_B["default"].weight.detach().float().cpu().clone(),
                                   layer.lora_A["default"].weight.detach().float().cpu().clone())
                               for n, layer in layers if n in out.monitored}
    if cfg.ci_active:
        out.ci = attach_base_dropout(peft_model, cfg.base_dropout)
    if log is not None:
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        kind = ("DoRA" if cfg.use_dora else "LoRA") + (f" ({cfg.init} init)" if cfg.init != "default" else "")
        log(f"{cfg.method}: {kind} r={cfg.rank} α={cfg.alpha:g} on {len(names)} modules "
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


def load_for_training(base: str | os.PathLike[str], label_names: Sequence[str]) -> tuple[nn.Module, Any]:
    """Base model as a float32 sequence classifier with ``len(label_names)`` labels, and its tokenizer.

    A base without a classification head (e.g. a ``BertModel`` folder) gets a fresh head,
    initialised from the current seed; a head of another size is replaced.
    """
    import transformers as tf

    from spectra.io.hub import resolve_folder

    # an hf:// reference becomes its cached snapshot; a local folder its absolute path, which the model
    # records as its name_or_path and PEFT as the trained adapter's base (a relative one broke elsewhere)
    source = str(Path(resolve_folder(base, "base model")).absolute())
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
