"""The LoRA-scale dial: multiply every LoRA update of a loaded PEFT model by γ, and put it back.

Used by evaluation at a scale (``spectra eval --scale``), by the threshold sweeps (Figure 3
of Luong & Chen 2026) and by the crossing search. It edits a live model in place and
restores it exactly on exit, so it lives apart from the loaders in :mod:`spectra.io`.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import Any, get_args

from spectra.errors import SpectraError, SpectraWarning
from spectra.eval.settings import Head, check_head

#: ``head`` values of :func:`scaled_adapter` (:data:`spectra.eval.settings.Head`): modules_to_save
#: (a trained classification head) kept as trained (the paper's Figure 3), or interpolated with the LoRA scale
HEAD_MODES: tuple[str, ...] = get_args(Head)


@contextlib.contextmanager
def scaled_adapter(model: Any, gamma: float, head: str = "trained") -> Iterator[Any]:
    """Scale the adapter's LoRA updates by ``gamma`` (γ) inside the ``with`` block; restore on exit.

    * every LoRA layer's ``scaling[adapter]`` (α/r, or α/√r with rsLoRA) is multiplied by
      γ — so the update applied is ``γ·s·B·A``: the LoRA scale s of Luong & Chen's
      Figure 3 and Proposition 4.2, multiplied by γ;
    * PEFT ``modules_to_save`` copies (e.g. a fully trained classification head) are used
      as trained (``head="trained"``, the paper's sweep), or, with ``head="scaled"``, set to
      ``W_base + γ·(W_saved − W_base)`` for each floating-point parameter (an extrapolated
      head; reports name it when used).

    ``γ = 1`` is the model as trained (nothing is touched); ``γ = 0`` removes every LoRA
    update (with ``head="scaled"`` it is exactly the base model, saved modules equal to the
    originals bit for bit); ``γ = 2`` doubles every LoRA update. The original values are
    saved and put back exactly, also when the block raises. DoRA layers are scaled too,
    but DoRA renormalises the weight's columns, so for DoRA ``γ = 0`` is not the base
    model (a warning says so).

    Raises:
        SpectraError: ``k`` not finite, an unknown ``head``, or ``k != 1`` on a model with
            no LoRA layer.
    """
    import torch

    k = float(gamma)
    if not math.isfinite(k):
        raise SpectraError(f"adapter scale must be a finite number, got {k}")
    check_head(head)
    from peft.tuners.lora import LoraLayer

    try:
        from peft.utils.other import ModulesToSaveWrapper
    except ImportError:  # pragma: no cover
        ModulesToSaveWrapper = ()  # type: ignore[assignment,misc]

    lora_layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    wrappers = [m for m in model.modules() if isinstance(m, ModulesToSaveWrapper)] if head == "scaled" else []
    if k == 1.0:
        yield model
        return
    if not lora_layers and not wrappers:
        raise SpectraError("scaled_adapter: the model has no LoRA adapter to scale (load it with an adapter)")
    if any(any(bool(v) for v in getattr(m, "use_dora", {}).values()) for m in lora_layers) and k != 1.0:
        warnings.warn("DoRA adapter: scaling multiplies the LoRA direction only; the magnitude vector is not "
                      "interpolated, so γ = 0 is not exactly the base model", SpectraWarning, stacklevel=3)

    saved_scaling = [(m, dict(m.scaling)) for m in lora_layers]
    saved_params: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        for m, orig in saved_scaling:
            for name, value in orig.items():
                m.scaling[name] = value * k
        with torch.no_grad():
            for w in wrappers:
                base_mod = w.original_module
                base_params = dict(base_mod.named_parameters()) if base_mod is not None else {}
                for adapter_name, saved_mod in w.modules_to_save.items():
                    for pname, p in saved_mod.named_parameters():
                        if not p.is_floating_point():
                            continue
                        b = base_params.get(pname)
                        if b is None or b.shape != p.shape:
                            raise SpectraError(f"scaled_adapter: saved module {adapter_name}.{pname} has no base "
                                               "counterpart of the same shape to interpolate from")
                        saved_params.append((p, p.detach().clone()))
                        if k == 0.0:
                            p.copy_(b.to(p.dtype))
                        else:
                            p.copy_((b.to(torch.float32) + k * (p.to(torch.float32) - b.to(torch.float32))).to(p.dtype))
        yield model
    finally:
        for m, orig in saved_scaling:
            m.scaling.clear()
            m.scaling.update(orig)
        with torch.no_grad():
            for p, orig_p in saved_params:
                p.copy_(orig_p)
