"""Load a sequence classifier (base + optional PEFT adapter) and scale its adapter.

``load_classifier`` is the one place spectra builds a runnable model; ``scaled_adapter``
turns the adapter's strength into a dial (k = 0: the base model, k = 1: as trained) for
evaluation and the Figure 3-style sweeps. transformers / peft are imported inside the
functions so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spectra.errors import SpectraError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
_PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


class SpectraWarning(UserWarning):
    """Something the user should know about that does not stop the run."""


def resolve_device(device: str | Any = "auto") -> torch.device:
    """``auto`` → ``cuda`` when available (else ``mps``, else ``cpu``); ``cpu``; ``cuda[:N]``.

    Raises:
        SpectraError: an unknown device string, or CUDA asked for but not available.
    """
    import torch

    if isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise SpectraError(f"--device {device!r}: unknown device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SpectraError(f"--device {device}: CUDA is not available on this machine (use --device cpu or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SpectraError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type not in ("cpu", "mps"):
        raise SpectraError(f"--device {device!r}: unsupported device type {dev.type!r} (use auto, cpu or cuda[:N])")
    return dev


def _model_source(base: str | os.PathLike[str], allow_pickle: bool) -> str:
    """A local folder (checked) or, when no such path exists, a hub id."""
    path = Path(base).expanduser()
    if path.exists():
        if not path.is_dir():
            raise SpectraError(f"{path}: expected a Hugging Face model folder (config.json + model.safetensors), got a file")
        if not (path / "config.json").is_file():
            what = "folder is empty" if not any(path.iterdir()) else "no config.json (not a Hugging Face model folder)"
            raise SpectraError(f"{path}: {what}")
        if not any((path / f).is_file() for f in _SAFE_WEIGHTS):
            if any((path / f).is_file() for f in _PICKLE_WEIGHTS):
                if not allow_pickle:
                    raise SpectraError(f"{path}: weights are pickle (.bin) files; pass --allow-pickle to load them "
                                       "with torch.load(weights_only=True), or convert them to safetensors")
            else:
                raise SpectraError(f"{path}: no model weights (model.safetensors or model.safetensors.index.json)")
        return str(path)
    text = os.fspath(base)
    if _HUB_ID.match(text) and not text.startswith("."):
        return text
    raise SpectraError(f"{path}: no such folder")


def _check_adapter_folder(adapter: str | os.PathLike[str], allow_pickle: bool) -> str:
    path = Path(adapter).expanduser()
    if not path.exists():
        text = os.fspath(adapter)
        if _HUB_ID.match(text) and "/" in text:
            return text
        raise SpectraError(f"{path}: no such folder")
    if not path.is_dir():
        raise SpectraError(f"{path}: expected a PEFT adapter folder (adapter_config.json + adapter_model.safetensors)")
    if not (path / "adapter_config.json").is_file():
        raise SpectraError(f"{path}: no adapter_config.json (not a PEFT adapter folder)")
    if not (path / "adapter_model.safetensors").is_file():
        if (path / "adapter_model.bin").is_file():
            if not allow_pickle:
                raise SpectraError(f"{path}: adapter weights are a pickle (adapter_model.bin); pass --allow-pickle")
        else:
            raise SpectraError(f"{path}: no adapter weights (adapter_model.safetensors)")
    return str(path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SpectraError(f"{path}: cannot read JSON ({str(exc).splitlines()[0] if str(exc) else exc})") from None
    if not isinstance(data, dict):
        raise SpectraError(f"{path}: expected a JSON object")
    return data


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def load_classifier(
    base: str | os.PathLike[str],
    adapter: str | os.PathLike[str] | None = None,
    num_labels: int | None = None,
    device: str | Any = "cpu",
    allow_pickle: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A sequence classifier (in eval mode on ``device``) and its tokenizer.

    Args:
        base: a local Hugging Face model folder (safetensors) or a hub id. A checkpoint
            without a sequence-classification head (e.g. MiniLM saved as ``BertModel``, a
            causal LM) gets a fresh head, initialised from a fixed seed so that runs are
            reproducible, and a :class:`SpectraWarning` (unless the adapter brings its own
            trained head through ``modules_to_save``).
        adapter: a PEFT adapter folder, loaded with ``peft.PeftModel.from_pretrained``.
        num_labels: the number of classes the caller needs (usually the data's). It must
            equal the checkpoint head's; a fresh head is built with it (default 2).
        device: ``auto``, ``cpu``, ``cuda[:N]`` or a ``torch.device``.
        allow_pickle: allow ``.bin`` weights (loaded with ``torch.load(weights_only=True)``).

    The tokenizer comes from ``base``, else from ``adapter``. Without a pad token (LLaMA,
    GPT-2) the EOS token pads, and ``config.pad_token_id`` is set so the classifier can
    find each row's last real token.

    Raises:
        SpectraError: missing/invalid folders, pickle weights without ``allow_pickle``, a
            ``num_labels`` that differs from the checkpoint's head, an adapter that does not
            fit the base, no tokenizer.
    """
    import torch
    import transformers as tf

    src = _model_source(base, allow_pickle)
    ad_src = _check_adapter_folder(adapter, allow_pickle) if adapter is not None else None
    dev = resolve_device(device)
    if num_labels is not None and num_labels < 2:
        raise SpectraError(f"{base}: a classifier needs num_labels >= 2, got {num_labels}")

    with _quiet_transformers():
        try:
            config = tf.AutoConfig.from_pretrained(src)
        except (OSError, ValueError, KeyError) as exc:
            raise SpectraError(f"{src}: cannot read the model config ({_one_line(exc)})") from None
    archs = list(getattr(config, "architectures", None) or [])
    has_head = any(a.endswith("ForSequenceClassification") for a in archs)
    ckpt_labels = int(config.num_labels) if has_head else None
    if has_head and num_labels is not None and num_labels != ckpt_labels:
        raise SpectraError(f"{src}: the checkpoint's classification head has {ckpt_labels} labels but "
                           f"{num_labels} are needed (num_labels mismatch)")
    n = num_labels or ckpt_labels or 2

    kwargs: dict[str, Any] = {"num_labels": n, "output_loading_info": True}
    if not allow_pickle:
        kwargs["use_safetensors"] = True
    if dev.type == "cpu":
        kwargs["dtype"] = torch.float32
    try:
        with _quiet_transformers(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # a fresh head is the same head on every run
            model, info = tf.AutoModelForSequenceClassification.from_pretrained(src, **kwargs)
    except ValueError as exc:
        msg = _one_line(exc)
        if "Unrecognized configuration class" in msg or "not supported" in msg.lower():
            raise SpectraError(f"{src}: {config.model_type!r} models have no sequence-classification class in "
                               "transformers") from None
        raise SpectraError(f"{src}: cannot load the model ({msg})") from None
    except (OSError, RuntimeError, KeyError) as exc:
        raise SpectraError(f"{src}: cannot load the model ({_one_line(exc)})") from None
    missing = list(info.get("missing_keys", []) or [])
    mismatched = list(info.get("mismatched_keys", []) or [])
    if mismatched:
        raise SpectraError(f"{src}: weights do not fit the model ({len(mismatched)} shape mismatch(es), e.g. {mismatched[0]})")
    fresh_head = any(_is_head_key(k) for k in missing)
    body_missing = [k for k in missing if not _is_head_key(k)]
    if body_missing:
        warnings.warn(f"{src}: {len(body_missing)} weight(s) missing from the checkpoint were initialised at random "
                      f"(e.g. {body_missing[0]})", SpectraWarning, stacklevel=2)

    tokenizer = _load_tokenizer(src, ad_src)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            raise SpectraError(f"{src}: the tokenizer has no pad, EOS or UNK token to pad batches with")
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id

    head_from_adapter = False
    if ad_src is not None:
        model, head_from_adapter = _attach_adapter(model, ad_src, n)
    if fresh_head and not head_from_adapter:
        warnings.warn(f"{src}: no sequence-classification head in the checkpoint; a fresh {n}-label head was "
                      "initialised (fixed seed) — its predictions mean nothing until trained",
                      SpectraWarning, stacklevel=2)
    model.to(dev)
    model.eval()
    return model, tokenizer


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' own loading chatter (progress bars, missing-key notices) off; our
    warnings say what matters."""
    from transformers.utils import logging as tf_logging

    level = tf_logging.get_verbosity()
    bars = tf_logging.is_progress_bar_enabled()
    tf_logging.set_verbosity_error()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        tf_logging.set_verbosity(level)
        if bars:
            tf_logging.enable_progress_bar()


def _is_head_key(key: str) -> bool:
    """Keys of a classification head (or the pooler that feeds BERT's head)."""
    return bool(re.search(r"(^|\.)(classifier|score|pooler)(\.|$)", key))


def _load_tokenizer(src: str, ad_src: str | None) -> PreTrainedTokenizerBase:
    import transformers as tf

    errors = []
    for where in [src] + ([ad_src] if ad_src else []):
        if Path(where).is_dir() and not any((Path(where) / f).is_file() for f in
                                            ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                                             "tokenizer.model", "vocab.json", "spiece.model")):
            errors.append(f"{where}: no tokenizer files")
            continue
        try:
            return tf.AutoTokenizer.from_pretrained(where)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            errors.append(f"{where}: {_one_line(exc)}")
    raise SpectraError(f"{src}: no usable tokenizer ({'; '.join(errors)}); save one into the model folder "
                       "with tokenizer.save_pretrained(folder)")


def _attach_adapter(model: Any, ad_src: str, n: int) -> tuple[Any, bool]:
    """Wrap ``model`` with the PEFT adapter; report whether it brings a trained head."""
    from peft import PeftModel

    cfg_path = Path(ad_src) / "adapter_config.json"
    if cfg_path.is_file():
        cfg = _read_json(cfg_path)
        peft_type = str(cfg.get("peft_type", "")).upper()
        if peft_type and peft_type != "LORA":
            raise SpectraError(f"{cfg_path}: peft_type {peft_type} is not supported (LoRA adapters only)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peft_model = PeftModel.from_pretrained(model, ad_src, is_trainable=False)
    except (RuntimeError, ValueError, KeyError, OSError, TypeError) as exc:
        msg = _one_line(exc)
        if "size mismatch" in str(exc):
            msg = "shape mismatch between the adapter and the base (" + msg + "); is num_labels or the base right?"
        raise SpectraError(f"{ad_src}: the adapter does not fit the base model ({msg})") from None
    head = False
    try:
        from peft.utils.other import ModulesToSaveWrapper
    except ImportError:  # pragma: no cover
        ModulesToSaveWrapper = ()  # type: ignore[assignment,misc]
    for name, module in peft_model.named_modules():
        if isinstance(module, ModulesToSaveWrapper) and _is_head_key(name):
            head = True
    return peft_model, head


#: ``head`` values of :func:`scaled_adapter`: modules_to_save (a trained classification head)
#: kept as trained (the paper's Figure 3), or interpolated with the LoRA scale
HEAD_MODES = ("trained", "scaled")


@contextlib.contextmanager
def scaled_adapter(model: Any, k: float, head: str = "trained") -> Iterator[Any]:
    """Scale the adapter's LoRA updates by ``k`` inside the ``with`` block; restore on exit.

    * every LoRA layer's ``scaling[adapter]`` (α/r, or α/√r with rsLoRA) is multiplied by
      ``k`` — so the update applied is ``k·s·B·A``: the LoRA scale s of Luong & Chen's
      Figure 3 and Proposition 4.2, multiplied by k;
    * PEFT ``modules_to_save`` copies (e.g. a fully trained classification head) are used
      as trained (``head="trained"``, the paper's sweep), or, with ``head="scaled"``, set to
      ``W_base + k·(W_saved − W_base)`` for each floating-point parameter (an extrapolated
      head; reports name it when used).

    ``k = 1`` is the model as trained (nothing is touched); ``k = 0`` removes every LoRA
    update (with ``head="scaled"`` it is exactly the base model, saved modules equal to the
    originals bit for bit); ``k = 2`` doubles every LoRA update. The original values are
    saved and put back exactly, also when the block raises. DoRA layers are scaled too,
    but DoRA renormalises the weight's columns, so for DoRA ``k = 0`` is not the base
    model (a warning says so).

    Raises:
        SpectraError: ``k`` not finite, an unknown ``head``, or ``k != 1`` on a model with
            no LoRA layer.
    """
    import torch

    k = float(k)
    if not math.isfinite(k):
        raise SpectraError(f"adapter scale must be a finite number, got {k}")
    if head not in HEAD_MODES:
        raise SpectraError(f"--head {head!r}: use trained (the head as trained) or scaled (interpolated with k)")
    from peft.tuners.lora import LoraLayer

    try:
        from peft.utils.other import ModulesToSaveWrapper
    except ImportError:  # pragma: no cover
        ModulesToSaveWrapper = ()  # type: ignore[assignment,misc]

    lora_layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    wrappers = [m for m in model.modules() if isinstance(m, ModulesToSaveWrapper)] if head == "scaled" else []
    if k == 1.0:
        yield model
        return
    if not lora_layers and not wrappers:
        raise SpectraError("scaled_adapter: the model has no LoRA adapter to scale (load it with an adapter)")
    if any(any(bool(v) for v in getattr(m, "use_dora", {}).values()) for m in lora_layers) and k != 1.0:
        warnings.warn("DoRA adapter: scaling multiplies the LoRA direction only; the magnitude vector is not "
                      "interpolated, so k = 0 is not exactly the base model", SpectraWarning, stacklevel=3)

    saved_scaling = [(m, dict(m.scaling)) for m in lora_layers]
    saved_params: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        for m, orig in saved_scaling:
            for name, value in orig.items():
                m.scaling[name] = value * k
        with torch.no_grad():
            for w in wrappers:
                base_mod = w.original_module
                base_params = dict(base_mod.named_parameters()) if base_mod is not None else {}
                for adapter_name, saved_mod in w.modules_to_save.items():
                    for pname, p in saved_mod.named_parameters():
                        if not p.is_floating_point():
                            continue
                        b = base_params.get(pname)
                        if b is None or b.shape != p.shape:
                            raise SpectraError(f"scaled_adapter: saved module {adapter_name}.{pname} has no base "
                                               "counterpart of the same shape to interpolate from")
                        saved_params.append((p, p.detach().clone()))
                        if k == 0.0:
                            p.copy_(b.to(p.dtype))
                        else:
                            p.copy_((b.to(torch.float32) + k * (p.to(torch.float32) - b.to(torch.float32))).to(p.dtype))
        yield model
    finally:
        for m, orig in saved_scaling:
            m.scaling.clear()
            m.scaling.update(orig)
        with torch.no_grad():
            for p, orig_p in saved_params:
                p.copy_(orig_p)
