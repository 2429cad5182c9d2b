"""Training: RoRA (Luong & Chen 2026) on PEFT LoRA, and weight poisoning for research.

RoRA's parts, each switchable (``RoRAConfig(ci=, tr=, pt=)``, ``RoRAConfig.baseline()``):

- :mod:`spectra.train.base_dropout` — CI, dropout on the frozen base path;
- :mod:`spectra.train.regularizers` — Tr, ``λ·Σ(‖U_kᵀB‖² + ‖A V_k‖²)`` (sum over modules);
- :mod:`spectra.train.rescale` — Pt, ``σ_max(s'BA) = σ_max(W_pre)`` via ``alpha_pattern``;
- :mod:`spectra.train.model` — the PEFT model with CI and Tr attached (or whole, for FFT);
- :mod:`spectra.train.trainer` — the ``Trainer`` with Tr's loss, the log line, the arguments;
- :mod:`spectra.train.checkpoints` — saving adapters, resume settings, the last checkpoint;
- :mod:`spectra.train.recipe` — setup → train → save on those (torchrun/accelerate);
- :mod:`spectra.train.validation` — the per-epoch validation curve and the learning-rate pick;
- :mod:`spectra.train.fix` — ``run_fix``, the library call behind ``spectra fix``;
- :mod:`spectra.train.poison` — ``poison``, weight poisoning by full fine-tuning (same recipe).

Names are resolved lazily: importing this package imports neither torch nor transformers.
"""

from __future__ import annotations

from spectra._lazy import lazy_exports

_LAZY = {
    "RoRAConfig": "spectra.train.config",
    "attach_base_dropout": "spectra.train.base_dropout",
    "attach_subspace_bases": "spectra.train.regularizers",
    "subspace_penalty": "spectra.train.regularizers",
    "SubspacePenalty": "spectra.train.regularizers",
    "plan_rescale": "spectra.train.rescale",
    "rescale_adapter": "spectra.train.rescale",
    "RescalePlan": "spectra.train.rescale",
    "prepare_model": "spectra.train.model",
    "RoRATrainer": "spectra.train.trainer",
    "RoRARecipe": "spectra.train.recipe",
    "save_adapter": "spectra.train.checkpoints",
    "run_fix": "spectra.train.fix",
    "FixResult": "spectra.train.fix",
}


__getattr__, __all__ = lazy_exports(__name__, _LAZY)
