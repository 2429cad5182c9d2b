"""spectra: spectral audit, backdoor-override estimates and RoRA repair for LoRA adapters.

Heavy dependencies (torch, transformers, peft, matplotlib) are imported lazily so that
``import spectra`` and ``spectra --help`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spectra.errors import SpectraError

from spectra._version import __version__

_LAZY = {
    "audit": ("spectra.audit", "audit"),
    "AuditReport": ("spectra.audit", "AuditReport"),
    "threshold": ("spectra.threshold", "threshold"),
    "ThresholdReport": ("spectra.threshold", "ThresholdReport"),
    "run_fix": ("spectra.train.fix", "run_fix"),
    "RoRAConfig": ("spectra.train.config", "RoRAConfig"),
    "run_eval": ("spectra.eval.pipeline", "run_eval"),
    "poison": ("spectra.train.poison", "poison"),
    "run_demo": ("spectra.demo", "run_demo"),
    # the settings objects each call takes (every default has its home there; the CLI is generated from them)
    "AuditSettings": ("spectra.audit.settings", "AuditSettings"),
    "ThresholdSettings": ("spectra.threshold.settings", "ThresholdSettings"),
    "EvalSettings": ("spectra.eval.settings", "EvalSettings"),
    "PoisonConfig": ("spectra.train.poison", "PoisonConfig"),
    "FixData": ("spectra.train.options", "FixData"),
    "RunOptions": ("spectra.train.options", "RunOptions"),
}

if TYPE_CHECKING:  # pragma: no cover
    from spectra.audit import AuditReport, audit


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'spectra' has no attribute {name!r}")


__all__ = ["SpectraError", "__version__", *_LAZY]
