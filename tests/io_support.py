"""Helpers shared by the spectra.io tests (test_io*.py): models through transformers' Auto
classes, peft's own LoRA layers, and edits of adapter folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from spectra.errors import SpectraError

AUTO = {"gpt2": "AutoModelForCausalLM", "llama-lm": "AutoModelForCausalLM"}


def auto_model(arch: str, folder: Path) -> torch.nn.Module:
    import transformers as tf

    return getattr(tf, AUTO.get(arch, "AutoModelForSequenceClassification")).from_pretrained(folder)


def peft_layers(model: torch.nn.Module, adapter_dir: Path) -> dict[str, torch.nn.Module]:
    """LoRA layers of ``model`` with the adapter loaded by peft, by module path (no PEFT prefix)."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    pm = PeftModel.from_pretrained(model, adapter_dir)
    return {
        name.removeprefix("base_model.model."): mod
        for name, mod in pm.named_modules()
        if isinstance(mod, LoraLayer) and "default" in mod.scaling
    }


def rewrite_adapter(folder: Path, fn) -> None:  # type: ignore[no-untyped-def]
    f = folder / "adapter_model.safetensors"
    tensors = load_file(f)
    save_file(fn(tensors), f, metadata={"format": "pt"})


def edit_config(folder: Path, **changes) -> None:  # type: ignore[no-untyped-def]
    f = folder / "adapter_config.json"
    cfg = json.loads(f.read_text())
    cfg.update(changes)
    f.write_text(json.dumps(cfg))


def assert_one_line_error(exc: pytest.ExceptionInfo[SpectraError], *parts: object) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    for p in parts:
        assert str(p) in msg, (p, msg)
    return msg
