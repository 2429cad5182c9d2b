"""What survives a run and a crash: the saved adapter (PiSSA/OLoRA converted back to a plain
LoRA), the settings a resumed run must match, and the last checkpoint to resume from."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spectra.errors import SpectraError
from spectra.train.config import RoRAConfig

if TYPE_CHECKING:  # torch is imported where a model is handled, not by every caller of these helpers
    from torch import nn


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


def write_run_settings(path: Path, settings: dict[str, Any]) -> None:
    """Write the settings a run trains with (``run.json``), atomically, so that a resume can check them
    (:func:`check_resume_settings`)."""
    from spectra.io.files import write_text_atomic

    write_text_atomic(path, json.dumps(settings, indent=2, sort_keys=True, default=str) + "\n")


def check_resume_settings(path: Path, settings: dict[str, Any], extra_keys: tuple[str, ...] = ()) -> None:
    """A resumed run must train with the settings it started with (Pt settings may change).

    ``extra_keys`` names further top-level entries of ``settings`` that must match too (e.g.
    ``spectra poison``'s trigger and poisoned rows, which the data's checksum does not cover).
    """
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpectraError(f"{path.parent}: no run.json — not a spectra work folder, cannot --resume") from None
    except (OSError, ValueError) as exc:
        raise SpectraError(f"{path}: unreadable ({exc})") from None
    for key in ("base", "data_sha256", *RoRAConfig.TRAINING_FIELDS, *extra_keys):
        a = saved.get("config", {}).get(key, saved.get(key)) if key in RoRAConfig.TRAINING_FIELDS else saved.get(key)
        b = settings.get("config", {}).get(key) if key in RoRAConfig.TRAINING_FIELDS else settings.get(key)
        for name, was, now in _differences(key, a, b):
            raise SpectraError(
                f"{path.parent}: cannot --resume, {name} was {_short(was)} and is now {_short(now)} (use the original "
                f"settings, or --overwrite to start over)"
            )


def _differences(name: str, a: Any, b: Any) -> list[tuple[str, Any, Any]]:
    """``(dotted name, was, now)`` for each differing entry; nested settings are compared per key."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in _differences(f"{name}.{k}", a.get(k), b.get(k))]
    same = json.dumps(a, default=str, sort_keys=True) == json.dumps(b, default=str, sort_keys=True)
    return [] if same else [(name, a, b)]


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` cut to one readable line (a list of 1,500 poisoned rows must not fill the screen)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def default_work_dir(out: str | os.PathLike[str]) -> Path:
    """``OUT.partial`` next to ``OUT``: where checkpoints live until the run is complete."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def prepare_work_dir(work: Path, *, resume: bool, overwrite: bool, say: Callable[[str], None]) -> None:
    """Make ``work`` ready for a run: kept for ``resume``, cleared for ``overwrite``.

    A folder holding an interrupted run is never silently reused or deleted: without
    ``resume`` or ``overwrite`` it is an error (the checkpoints may be hours of training).
    """
    import shutil

    has_state = work.exists() and any(work.iterdir())
    if not has_state:
        if resume:
            say(f"--resume: nothing to resume in {work}; starting from scratch")
        return
    if resume:
        return
    if overwrite:
        shutil.rmtree(work, ignore_errors=True)  # every DDP rank gets here; one of them removes it
        return
    raise SpectraError(
        f"{work}: a previous run was interrupted here (pass --resume to continue it or --overwrite to start over)"
    )


def last_checkpoint(folder: Path) -> Path | None:
    """The newest ``checkpoint-N`` folder under ``folder`` (transformers' rule), or None when there is none."""
    from transformers.trainer_utils import get_last_checkpoint

    if not folder.is_dir():
        return None
    found = get_last_checkpoint(str(folder))
    return Path(found) if found else None


def checkpoint_progress(folder: Path) -> tuple[int, int] | None:
    """``(global_step, max_steps)`` from the newest checkpoint's ``trainer_state.json`` under
    ``folder``; ``None`` when there is no readable one."""
    found = last_checkpoint(folder)
    if found is None:
        return None
    try:
        state = json.loads((found / "trainer_state.json").read_text(encoding="utf-8"))
        return int(state["global_step"]), int(state["max_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
