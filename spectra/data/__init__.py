"""Labelled text, backdoor triggers and CA/ASR evaluation.

``load_labelled`` / ``split`` (:mod:`spectra.data.datasets`), the built-in corpora
``mr``/``cr``/``rt`` (:mod:`spectra.data.builtin`), ``parse_trigger`` / ``apply_trigger``
(:mod:`spectra.data.triggers`), ``wilson_interval`` (:mod:`spectra.data.stats`) and
``predict_logits`` / ``evaluate`` / ``run_eval`` (:mod:`spectra.data.evaluate`, which
imports torch). Names are resolved lazily so ``import spectra.data`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "LabelledData": "spectra.data.labelled",
    "build_labelled": "spectra.data.labelled",
    "load_labelled": "spectra.data.datasets",
    "split": "spectra.data.datasets",
    "BUILTINS": "spectra.data.builtin",
    "Trigger": "spectra.data.triggers",
    "parse_trigger": "spectra.data.triggers",
    "apply_trigger": "spectra.data.triggers",
    "trigger_rng": "spectra.data.triggers",
    "wilson_interval": "spectra.data.stats",
    "newcombe_interval": "spectra.data.stats",
    "predict_logits": "spectra.data.evaluate",
    "evaluate": "spectra.data.evaluate",
    "run_eval": "spectra.data.evaluate",
    "EvalResult": "spectra.data.evaluate",
    "eval_markdown": "spectra.data.evaluate",
}

if TYPE_CHECKING:  # pragma: no cover
    from spectra.data.builtin import BUILTINS
    from spectra.data.datasets import load_labelled, split
    from spectra.data.labelled import LabelledData, build_labelled
    from spectra.data.evaluate import EvalResult, eval_markdown, evaluate, predict_logits, run_eval
    from spectra.data.stats import newcombe_interval, wilson_interval
    from spectra.data.triggers import Trigger, apply_trigger, parse_trigger, trigger_rng


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'spectra.data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_LAZY)
