"""Which adapted module's σ's normalise the ρ's of Proposition 4.2, and those σ's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from spectra.errors import SpectraError


@dataclass
class ModuleChoice:
    """The module whose σ's normalise the ρ's."""

    name: str
    module_type: str
    layer: int | None
    update_kind: str
    shape: tuple[int, int]
    rank: int
    scale: float
    sigma_pre: float
    sigma_delta: float
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "module_type": self.module_type, "layer": self.layer,
                "update_kind": self.update_kind, "shape": list(self.shape), "rank": self.rank,
                "scale": self.scale, "sigma_pre": self.sigma_pre, "sigma_delta": self.sigma_delta, "why": self.why}


_ATTN_OUT = {"o_proj", "out_proj", "dense", "c_proj", "o", "wo", "dense_4h_to_h"}
_MLP_IN = {"gate_proj", "up_proj", "fc1", "c_fc", "w1", "w3", "wi", "dense_h_to_4h", "gate_up_proj"}


def _output_rank(m: Any) -> tuple[int, int, int]:
    """Sort key: larger = nearer the output (head > pooler > last block's down-projection > …)."""
    from spectra.io.keys import base_module_type

    group = getattr(m, "module_group", "other")
    name = m.name.lower()
    if group == "head":
        return (3, 0, 0) if "pooler" not in name else (2, 0, 0)
    if m.layer is not None:
        if group == "attn":
            pos = 1 if base_module_type(m.name) in _ATTN_OUT else 0
        elif group == "mlp":
            pos = 2 if (base_module_type(m.name) in _MLP_IN or "intermediate" in name) else 3
        else:
            pos = 0
        return (1, int(m.layer), pos)
    return (0, 0, 0)


def choose_module(modules: Sequence[Any], pattern: str | None = None) -> tuple[Any, str]:
    """The module whose σ's normalise the ρ's: ``pattern`` (exact name, then regex search), else
    the classification head when the adapter trains it, else the adapted module nearest the output."""
    import re

    if not modules:
        raise SpectraError("the adapter changes no module")
    if pattern:
        exact = [m for m in modules if m.name == pattern]
        if exact:
            return exact[0], f"--module {pattern}"
        try:
            rx = re.compile(pattern)
        except re.error as exc:
            raise SpectraError(f"--module {pattern!r}: not a valid regex ({exc})") from None
        hits = [m for m in modules if rx.search(m.name)]
        if not hits:
            sample = ", ".join(m.name for m in modules[:4]) + (", ..." if len(modules) > 4 else "")
            raise SpectraError(f"--module {pattern!r} matches no adapted module (adapted: {sample})")
        best = max(enumerate(hits), key=lambda im: (_output_rank(im[1]), im[0]))[1]
        return best, f"--module {pattern} (nearest the output of {len(hits)} match(es))"
    best = max(enumerate(modules), key=lambda im: (_output_rank(im[1]), im[0]))[1]  # ties: the later module
    if getattr(best, "module_group", "") == "head":
        return best, "the classification head, which the adapter trains"
    return best, "the adapted module nearest the output (the adapter does not train the head)"


def module_sigmas(module: Any, base_ckpt: Any) -> tuple[float, float]:
    """σ_max(W_pre) and σ_max(s·ΔW) of one adapted module (float32, certified/exact)."""
    from spectra.io import base_weight_for
    from spectra.io.adapter import LowRankUpdate
    from spectra.spectral import lowrank_svd, top_singular

    W = base_weight_for(module, base_ckpt, torch.float32)
    sigma_pre = float(top_singular(W, 1).S[..., 0])
    update = module.load_update(W)
    if isinstance(update, LowRankUpdate):
        sigma_delta = float(lowrank_svd(update.B, update.A, update.scale).S[..., 0])
    else:
        sigma_delta = float(top_singular(update.dense(), 1).S[..., 0])
    return sigma_pre, sigma_delta
