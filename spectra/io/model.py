"""Load a sequence classifier (base + optional PEFT adapter): the one place spectra builds a
runnable model. transformers / peft are imported inside the functions so importing this
module costs nothing. (Changing a loaded model — the LoRA-scale dial of the sweeps — is
:mod:`spectra.eval.scaling`'s job.)

``SpectraWarning`` is re-exported here for code that filtered it by this module's name
before it moved to :mod:`spectra.errors`.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spectra.device import resolve_device
from spectra.errors import SpectraError, SpectraWarning, one_line, pickle_refused
from spectra.io.hub import looks_like_hub_id, missing_local, resolve_folder
from spectra.io.files import protect, read_json, regular_entries

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

_SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
_PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def _model_source(base: str | os.PathLike[str], allow_pickle: bool) -> str:
    """A local folder (checked) or, when no such path exists, a hub id."""
    path = Path(base).expanduser()
    if path.is_dir():
        regular_entries(path)
    if path.exists():
        if not path.is_dir():
            raise SpectraError(f"{path}: expected a Hugging Face model folder (config.json + model.safetensors), got a file")
        if not (path / "config.json").is_file():
            what = "folder is empty" if not any(path.iterdir()) else "no config.json (not a Hugging Face model folder)"
            raise SpectraError(f"{path}: {what}")
        if not any((path / f).is_file() for f in _SAFE_WEIGHTS):
            if any((path / f).is_file() for f in _PICKLE_WEIGHTS):
                if not allow_pickle:
                    raise pickle_refused(path, "its weights are")
            else:
                raise SpectraError(f"{path}: no model weights (model.safetensors or model.safetensors.index.json)")
        protect(path)
        return str(path.absolute())  # what the model records as its name_or_path, and PEFT as the adapter's base
    text = os.fspath(base)
    if looks_like_hub_id(text):  # the snapshot, through huggingface_hub's cache (offline mode honoured)
        return _model_source(resolve_folder(text, "model", allow_pickle), allow_pickle)
    raise missing_local(text, "model")


def _check_adapter_folder(adapter: str | os.PathLike[str], allow_pickle: bool) -> str:
    path = Path(adapter).expanduser()
    if not path.exists():
        text = os.fspath(adapter)
        if looks_like_hub_id(text):
            return _check_adapter_folder(resolve_folder(text, "adapter", allow_pickle), allow_pickle)
        raise missing_local(text, "adapter")
    if not path.is_dir():
        raise SpectraError(f"{path}: expected a PEFT adapter folder (adapter_config.json + adapter_model.safetensors)")
    regular_entries(path)
    if not (path / "adapter_config.json").is_file():
        raise SpectraError(f"{path}: no adapter_config.json (not a PEFT adapter folder)")
    if not (path / "adapter_model.safetensors").is_file():
        if (path / "adapter_model.bin").is_file():
            if not allow_pickle:
                raise pickle_refused(path, "its adapter weights (adapter_model.bin) are")
        else:
            raise SpectraError(f"{path}: no adapter weights (adapter_model.safetensors)")
    protect(path)
    return str(path)


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
            raise SpectraError(f"{src}: cannot read the model config ({one_line(exc)})") from None
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
        msg = one_line(exc)
        if "Unrecognized configuration class" in msg or "not supported" in msg.lower():
            raise SpectraError(f"{src}: {config.model_type!r} models have no sequence-classification class in "
                               "transformers") from None
        raise SpectraError(f"{src}: cannot load the model ({msg})") from None
    except (OSError, RuntimeError, KeyError) as exc:
        raise SpectraError(f"{src}: cannot load the model ({one_line(exc)})") from None
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
    # callers that measure predictions (eval) refuse a random head unless asked; training gives it one
    model.spectra_fresh_head = fresh_head and not head_from_adapter
    if fresh_head and not head_from_adapter:
        warnings.warn(f"{src}: no sequence-classification head in the checkpoint; a fresh {n}-label head was "
                      "initialised (fixed seed) — its predictions mean nothing until trained",
                      SpectraWarning, stacklevel=2)
    model.to(dev)
    model.eval()
    return model, tokenizer


@contextlib.contextmanager
def progress_bars_off() -> Iterator[None]:
    """transformers' own progress bars (loading, "Writing model shards" at each checkpoint)
    off for the block, then back as they were: in a log file they are noise."""
    from transformers.utils import logging as tf_logging

    bars = tf_logging.is_progress_bar_enabled()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            tf_logging.enable_progress_bar()


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' own loading chatter (progress bars, missing-key notices) off; our
    warnings say what matters."""
    from transformers.utils import logging as tf_logging

    level = tf_logging.get_verbosity()
    tf_logging.set_verbosity_error()
    try:
        with progress_bars_off():
            yield
    finally:
        tf_logging.set_verbosity(level)


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
            errors.append(f"{where}: {one_line(exc)}")
    raise SpectraError(f"{src}: no usable tokenizer ({'; '.join(errors)}); save one into the model folder "
                       "with tokenizer.save_pretrained(folder)")


def _attach_adapter(model: Any, ad_src: str, n: int) -> tuple[Any, bool]:
    """Wrap ``model`` with the PEFT adapter; report whether it brings a trained head."""
    from peft import PeftModel

    cfg_path = Path(ad_src) / "adapter_config.json"
    if cfg_path.is_file():
        cfg = read_json(cfg_path)
        peft_type = str(cfg.get("peft_type", "")).upper()
        if peft_type and peft_type != "LORA":
            raise SpectraError(f"{cfg_path}: peft_type {peft_type} is not supported (LoRA adapters only)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peft_model = PeftModel.from_pretrained(model, ad_src, is_trainable=False)
    except (RuntimeError, ValueError, KeyError, OSError, TypeError) as exc:
        msg = one_line(exc)
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
