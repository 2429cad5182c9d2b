"""Labelled text and backdoor triggers.

``load_labelled`` / ``split`` (:mod:`spectra.data.datasets`), the built-in corpora
``mr``/``cr``/``rt`` (:mod:`spectra.data.builtin`), ``parse_trigger`` / ``apply_trigger``
(:mod:`spectra.data.triggers`), ``wilson_interval`` (:mod:`spectra.data.stats`). Names are
resolved lazily so ``import spectra.data`` stays light. Evaluation is :mod:`spectra.eval`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spectra._lazy import lazy_exports

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
}

if TYPE_CHECKING:  # pragma: no cover
    from spectra.data.builtin import BUILTINS
    from spectra.data.datasets import load_labelled, split
    from spectra.data.labelled import LabelledData, build_labelled
    from spectra.data.stats import newcombe_interval, wilson_interval
    from spectra.data.triggers import Trigger, apply_trigger, parse_trigger, trigger_rng


__getattr__, __all__ = lazy_exports(__name__, _LAZY)
