"""``spectra.threshold``: how far an adapter's scale must grow before it overrides a backdoor.

The science is Proposition 4.2 of Luong & Chen (2026), "Why LoRA Fails to Forget": for a
linear classifier ``z = (W_pre + sΔW) x`` with ``‖x‖ = 1`` and margin direction
``c = e_y − e_ybd``, if

    ⟨c, W_pre x̃⟩ ≤ −ρ_bd ‖c‖ σ_pre,   ⟨c, ΔW x⟩ ≥ ρ_cl ‖c‖ σ_Δ,   |⟨c, ΔW (x̃ − x)⟩| ≤ ρ_tr ‖c‖ σ_Δ

and ``ρ_eff = ρ_cl − ρ_tr > 0``, every ``s > s* = (ρ_bd / ρ_eff) · (σ_pre / σ_Δ)`` makes the
triggered margin positive (the backdoor is forgotten on x̃).

This module measures those quantities per sample from margins. Let ``γ`` multiply every
adapted module's scale (``γ = 1``: the adapter as trained; ``γ = 0``: the base) and
``M_γ(x) = z_y(x) − z_ybd(x)``. For a non-target sample x and its triggered twin x̃:

- ``D(x) = M_1(x) − M_0(x)``, the adapter's margin gain (exactly ⟨c, ΔW x⟩ for a linear model);
- ``γ*_bound = −M_0(x̃) / (D(x) − |D(x̃) − D(x)|)`` when the denominator is positive, else ∞
  (Proposition 4.2's sufficient scale, per sample);
- ``γ*_flip = −M_0(x̃) / D(x̃)`` when ``D(x̃) > 0``, else ∞ (the exact crossing of a linear model);
- both are 0 when ``M_0(x̃) > 0`` (the base does not flip x̃ in the first place);
- ``ρ_bd = −M_0(x̃) / (‖c‖σ_pre)``, ``ρ_cl = D(x) / (‖c‖σ_Δ)``, ``ρ_tr = |D(x̃) − D(x)| / (‖c‖σ_Δ)``
  with ``‖c‖ = √2`` and σ_pre, σ_Δ of one chosen module; ``s* = γ*·s`` with s that
  module's PEFT scale.

:func:`threshold_from_margins` is the pure tensor core; :func:`linear_threshold` builds
the margins of a linear classifier on fixed features (the exact case);
:func:`threshold` runs a transformer classifier with a PEFT adapter, measures CA(γ) and
ASR(γ) on a grid with :func:`spectra.io.model.scaled_adapter` and returns a
:class:`ThresholdReport` whose ``.write(out)`` produces ``threshold.json``,
``threshold_samples.csv``, ``fig_sweep.png`` and ``report.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spectra._lazy import lazy_exports

#: name → module; resolved on first use, so that ``spectra.threshold.settings`` (which the CLI
#: imports to build its options) does not import torch
_PUBLIC = {
    **dict.fromkeys(("C_NORM", "INF", "ThresholdResult", "aggregate", "linear_threshold", "margins", "quantile",
                     "threshold_from_margins"), "spectra.threshold.margins"),
    **dict.fromkeys(("ModuleChoice", "choose_module", "module_sigmas"), "spectra.threshold.modules"),
    **dict.fromkeys(("DEFINITIONS", "ThresholdReport", "measured_crossing", "measured_threshold",
                     "measured_threshold_working"), "spectra.threshold.report"),
    **dict.fromkeys(("DEFAULT_GRID", "ThresholdSettings", "parse_grid"), "spectra.threshold.settings"),
    "threshold": "spectra.threshold.sweep",
}

if TYPE_CHECKING:  # pragma: no cover
    from spectra.threshold.margins import C_NORM, INF, ThresholdResult, aggregate, linear_threshold, margins, \
        quantile, threshold_from_margins
    from spectra.threshold.modules import ModuleChoice, choose_module, module_sigmas
    from spectra.threshold.report import DEFINITIONS, ThresholdReport, measured_crossing, measured_threshold, \
        measured_threshold_working
    from spectra.threshold.settings import DEFAULT_GRID, ThresholdSettings, parse_grid
    from spectra.threshold.sweep import threshold

__getattr__, _ = lazy_exports(__name__, _PUBLIC)
__all__ = sorted(_PUBLIC)
