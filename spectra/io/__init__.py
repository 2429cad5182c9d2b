"""All file I/O of spectra: checkpoints, adapters, key matching, output folders.

Names are imported lazily so that ``import spectra.io.output`` (used by the CLI at
start-up) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spectra._lazy import lazy_exports

_LAZY = {
    "open_base": "spectra.io.checkpoint",
    "BaseCheckpoint": "spectra.io.checkpoint",
    "load_adapter": "spectra.io.adapter",
    "Adapter": "spectra.io.adapter",
    "AdaptedModule": "spectra.io.adapter",
    "LowRankUpdate": "spectra.io.adapter",
    "DenseUpdate": "spectra.io.adapter",
    "base_weight_for": "spectra.io.adapter",
    "KeyMatcher": "spectra.io.keys",
    "parse_layer": "spectra.io.keys",
    "module_type": "spectra.io.keys",
    "module_group": "spectra.io.keys",
    "lora_scale": "spectra.io.peft_config",
    "resolve_rank_alpha": "spectra.io.peft_config",
    "atomic_output_dir": "spectra.io.output",
    "check_output_dir": "spectra.io.output",
    "write_text_atomic": "spectra.io.files",
    "read_json": "spectra.io.files",
    "cache_dir": "spectra.io.files",
    "load_classifier": "spectra.io.model",
}

if TYPE_CHECKING:  # pragma: no cover
    from spectra.io.adapter import (
        AdaptedModule,
        Adapter,
        DenseUpdate,
        LowRankUpdate,
        base_weight_for,
        load_adapter,
    )
    from spectra.io.checkpoint import BaseCheckpoint, open_base
    from spectra.io.files import cache_dir, read_json, write_text_atomic
    from spectra.io.keys import KeyMatcher, module_group, module_type, parse_layer
    from spectra.io.output import atomic_output_dir, check_output_dir
    from spectra.io.peft_config import lora_scale, resolve_rank_alpha


__getattr__, __all__ = lazy_exports(__name__, _LAZY)
