"""What PEFT would do with an ``adapter_config.json``: type checks and per-module scale.

The scale of a LoRA module is ``lora_alpha / r`` (``lora_alpha / sqrt(r)`` with
``use_rslora``), where ``r`` and ``lora_alpha`` come from ``rank_pattern`` /
``alpha_pattern`` when a pattern key matches the module. Which key matches is decided
by PEFT's own function (``peft.utils.other.get_pattern_key``, the one
``LoraModel._create_and_replace`` calls), so the scale here is the scale PEFT applies.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from spectra.errors import SpectraError

SUPPORTED_PEFT_TYPES = ("LORA",)

# LoRA variants whose update is not ``scale * B @ A`` (or DoRA on top of it)
_UNSUPPORTED_VARIANTS = (
    "use_qalora", "use_bdlora", "arrow_config", "kasa_config", "velora_config", "monteclora_config",
)
_UNSUPPORTED_INITS = ("mica",)
# use_dora is handled; aLoRA (alora_invocation_tokens) only changes *where* the plain update applies


def check_peft_type(config: dict[str, Any], config_path: Path) -> str:
    """The adapter's ``peft_type`` (upper case); anything but LORA is refused."""
    peft_type = config.get("peft_type")
    if peft_type is None:
        if "r" in config and "lora_alpha" in config:
            return "LORA"
        raise SpectraError(f"{config_path}: no peft_type (not a PEFT adapter config?)")
    text = str(peft_type).split(".")[-1].upper()  # tolerate "PeftType.LORA"
    if text not in SUPPORTED_PEFT_TYPES:
        raise SpectraError(f"{config_path}: unsupported PEFT type {text} (spectra audits LORA adapters)")
    return text


def check_variants(config: dict[str, Any], config_path: Path) -> None:
    """Refuse LoRA variants whose weight update spectra cannot reconstruct exactly.

    The list mirrors the fields peft 0.21's ``LoraConfig`` tags ``is_lora_variant`` (plus
    ``use_qalora`` and ``init_lora_weights="mica"``); it is static so that loading an
    adapter does not import peft.
    """
    for name in _UNSUPPORTED_VARIANTS:
        if config.get(name):
            raise SpectraError(
                f"{config_path}: LoRA variant {name} is not supported (spectra audits plain LoRA and DoRA)"
            )
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower() in _UNSUPPORTED_INITS:
        raise SpectraError(
            f"{config_path}: LoRA variant init_lora_weights={init!r} is not supported "
            f"(spectra audits plain LoRA and DoRA)"
        )


def init_note(config: dict[str, Any]) -> str | None:
    """A warning for initialisations that also rewrite the base weights (PiSSA, OLoRA, CorDA, LoRA-GA)."""
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(("pissa", "olora", "corda", "lora_ga")):
        return (
            f"init_lora_weights={init!r} also changes the base weights during training; the audit "
            f"measures scale*B@A against the BASE you passed"
        )
    return None


def _legacy_get_pattern_key(pattern_keys: Sequence[str], key_to_match: str) -> str:
    # PEFT's semantics before get_pattern_key was factored out (peft < 0.14)
    return next(filter(lambda key: re.match(rf".*\.{key}$", key_to_match), pattern_keys), key_to_match)


@functools.lru_cache(maxsize=1)
def pattern_resolver() -> Callable[[Sequence[str], str], str]:
    """PEFT's ``get_pattern_key`` (pattern keys, module key) -> matching key or the module key."""
    try:
        from peft.utils.other import get_pattern_key
    except ImportError:  # pragma: no cover - older peft
        return _legacy_get_pattern_key
    return get_pattern_key


def _rank(value: Any, where: str) -> int:
    """A LoRA rank as PEFT needs it: a positive integer (``8`` or ``8.0``; never a bool or text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value) or value < 1:
        raise SpectraError(f"adapter_config.json: {where} = {value!r}: a LoRA rank must be a positive integer")
    return int(value)


def _alpha(value: Any, where: str) -> float:
    """``lora_alpha``: a finite positive number (NaN or ∞ would make every measure meaningless)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise SpectraError(f"adapter_config.json: {where} = {value!r}: lora_alpha must be a finite positive number")
    return float(value)


#: the largest scale spectra accepts: beyond it s·B·A overflows float32 for any non-tiny factors,
#: and every measure turns into NaN or ∞ (a lora_alpha of 1e39 turned the overlap rule off)
MAX_SCALE = 1e12


def resolve_rank_alpha(config: dict[str, Any], module_name: str) -> tuple[int, float]:
    """``(r, lora_alpha)`` PEFT gives module ``module_name`` (path relative to the model).

    Raises:
        SpectraError: a rank that is not a positive integer, an alpha that is not a finite
            positive number (in the config or in a pattern that matches the module).
    """
    r = config.get("r", 8)
    alpha = config.get("lora_alpha", 8)
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    r_where, a_where = "r", "lora_alpha"
    if rank_pattern or alpha_pattern:
        get_pattern_key = pattern_resolver()
        if rank_pattern:
            key = _pattern_key(get_pattern_key, rank_pattern, module_name, "rank_pattern")
            if key in rank_pattern:
                r, r_where = rank_pattern[key], f"rank_pattern[{key!r}]"
        if alpha_pattern:
            key = _pattern_key(get_pattern_key, alpha_pattern, module_name, "alpha_pattern")
            if key in alpha_pattern:
                alpha, a_where = alpha_pattern[key], f"alpha_pattern[{key!r}]"
    return _rank(r, r_where), _alpha(alpha, a_where)


def _pattern_key(resolve: Callable[[Sequence[str], str], str], pattern: Any, module_name: str, field: str) -> str:
    """PEFT's pattern key for ``module_name``, or a one-line error for a config PEFT itself would trip
    over: a pattern that is not a mapping, or a key that is not a valid regular expression."""
    if not isinstance(pattern, dict):
        raise SpectraError(f"adapter_config.json: {field} must map module-name patterns to values, "
                           f"got {type(pattern).__name__}")
    try:
        return resolve(list(pattern.keys()), module_name)
    except re.error as exc:
        raise SpectraError(f"adapter_config.json: {field} has a key that is not a valid regular expression "
                           f"({exc})") from None


def lora_scale(config: dict[str, Any], module_name: str) -> tuple[int, float]:
    """``(r, scale)`` PEFT would use for module ``module_name``: ``alpha/r`` or ``alpha/sqrt(r)``."""
    r, alpha = resolve_rank_alpha(config, module_name)
    scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    if not scale <= MAX_SCALE:
        raise SpectraError(f"adapter_config.json: module {module_name} has scale {scale:.3g} (lora_alpha {alpha:g}, "
                           f"r {r}); above {MAX_SCALE:g} the update overflows float32 and cannot be measured")
    return r, scale
