"""RoRA's Pt: rescale the adapter in the blocks nearest the output after training.

Proposition 4.2 of Luong & Chen (2026): a LoRA update overrides a backdoor once its scale
exceeds ``s* ∝ σ_pre/σ_Δ``; trained LoRA updates sit far below (``σ_max(ΔW) ≪
σ_max(W_pre)``, Figure 1). Pt sets, for every adapted module of the top ``N`` transformer
blocks (default 3; ``all`` = every adapted module), a new scale ``s'`` with::

    σ_max(s' · B · A) = factor · σ_max(W_pre)        (factor = 1 by default)

``σ_max(B·A)`` comes from :func:`spectra.spectral.lowrank_svd` (QR of the factors + an r×r
SVD, never a dense ΔW) and ``σ_max(W_pre)`` from :func:`spectra.spectral.top_singular`.

**Storage: per-module ``alpha_pattern`` entries, not folded into B.** PEFT computes a
module's scale as ``alpha/r`` (``alpha/√r`` with rsLoRA), taking ``alpha`` from
``alpha_pattern`` when a key matches the module. Pt writes ``alpha' = s'·r`` (``s'·√r``)
under the module's full name, so plain ``PeftModel.from_pretrained`` applies ``s'`` with no
spectra code. Why not fold ``s'/s`` into B: the trained factors stay byte-identical (the
saved weights are still "what training produced"), the rescaling is visible and
reversible in ``adapter_config.json`` (delete the entries to undo it), and auditors read
the scale where PEFT reads it. PEFT matches a key with ``re.match(rf"(.*\\.)?({key})$",
module_name)`` — a regex — so keys are ``re.escape(full_name)`` (the form PEFT itself
writes when it converts adapters): dots are literal, and the key matches the module and
nothing else among the adapter's modules. That is *checked* after writing: every module's
scale is re-resolved with PEFT's own ``get_pattern_key`` and must equal ``s'`` for the
rescaled modules and be unchanged for the others.

For DoRA the rescaled quantity is the directional update ``s·B·A`` (the audit's
``sigma_delta``); DoRA's magnitude vector then renormalises the columns, so the effective
``W' − W`` has a different σ_max.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, get_args

import torch

from spectra.errors import SpectraError
from spectra.io.keys import SCALED_KINDS
from spectra.train.config import RescaleMode

RESCALABLE_KINDS = SCALED_KINDS
#: a Pt multiplier s'/s above this is warned about: the study's converged LoRA adapters needed
#: ×1.0–5.3 on MiniLM, a 30-step one ×23–83 (and collapsed); SmolLM2's converged ones ×27–52
PT_WARN_MULTIPLIER = 10.0


@dataclass
class RescaleRow:
    """One module's rescaling (``rescaled`` False: reported, left unchanged)."""

    module: str
    layer: int | None
    kind: str
    rank: int
    sigma_pre: float
    sigma_delta_before: float
    scale_before: float
    alpha_before: float
    rescaled: bool
    scale_after: float
    alpha_after: float
    sigma_delta_after: float
    pattern_key: str | None = None
    note: str = ""


@dataclass
class RescalePlan:
    """What Pt does to an adapter: one row per LoRA module plus the new config."""

    rows: list[RescaleRow]
    config: dict[str, Any]
    n_blocks: int
    blocks: list[int]
    factor: float
    layers: int | str
    notes: list[str] = field(default_factory=list)

    @property
    def rescaled(self) -> list[RescaleRow]:
        return [r for r in self.rows if r.rescaled]

    def table(self) -> Any:
        import pandas as pd

        return pd.DataFrame([asdict(r) for r in self.rows])

    def to_dict(self) -> dict[str, Any]:
        return {"layers": self.layers, "factor": self.factor, "n_blocks": self.n_blocks, "blocks": self.blocks,
                "notes": list(self.notes), "modules": [asdict(r) for r in self.rows]}


def pattern_key(module_name: str) -> str:
    """The ``alpha_pattern`` key that matches exactly ``module_name`` under PEFT's regex semantics."""
    return re.escape(module_name)


def count_blocks(base: Any) -> int:
    """Number of transformer blocks of a :class:`~spectra.io.BaseCheckpoint` (config, else keys)."""
    from spectra.io.keys import parse_layer

    cfg = base.config or {}
    for key in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        v = cfg.get(key)
        if isinstance(v, int) and v > 0:
            return v
    for sub in ("text_config", "language_config"):
        if isinstance(cfg.get(sub), dict) and isinstance(cfg[sub].get("num_hidden_layers"), int):
            return cfg[sub]["num_hidden_layers"]
    layers = [parse_layer(k) for k in base.keys()]
    found = [i for i in layers if i is not None]
    return max(found) + 1 if found else 0


#: Pt's modes: ``match`` is the paper's Eq. 12 (σ_max(s'·B·A) = factor·σ_max(W_pre), which also
#: *shrinks* an update already stronger than W_pre); ``amplify`` never goes below the trained scale
RESCALE_MODES: tuple[str, ...] = get_args(RescaleMode)


def select_blocks(layers: int | str, n_blocks: int) -> list[int] | None:
    """Block indices to rescale: the top ``layers`` of ``n_blocks`` (``half``: the top half, rounded
    up — 3 of MiniLM's 6, 15 of SmolLM2's 30); ``None`` means all modules."""
    if layers == "all":
        return None
    if layers == "none" or layers == 0:
        return []
    n = -(-n_blocks // 2) if layers == "half" else int(layers)
    return list(range(max(0, n_blocks - n), n_blocks))


def solve_scale(B: torch.Tensor, A: torch.Tensor, sigma_pre: float, factor: float = 1.0) -> tuple[float, float]:
    """``(σ_max(B·A), s')`` with ``σ_max(s'·B·A) = factor·σ_pre`` (``s' = nan`` when ``B·A = 0``)."""
    from spectra.spectral import lowrank_svd

    sigma_ba = float(lowrank_svd(B.to(torch.float64), A.to(torch.float64), 1.0).S[..., 0])
    if not sigma_ba > 0:
        return sigma_ba, float("nan")
    return sigma_ba, factor * sigma_pre / sigma_ba


def plan_rescale(base: Any, adapter: Any, layers: int | str = 3, factor: float = 1.0, mode: str = "match",
                 device: str = "cpu") -> RescalePlan:
    """Compute Pt for a saved PEFT adapter resolved against its base.

    Parameters:
        base: a :class:`~spectra.io.BaseCheckpoint` (``spectra.io.open_base``).
        adapter: a :class:`~spectra.io.Adapter` (``spectra.io.load_adapter``) — PEFT LoRA.
        layers: rescale the modules of the top ``layers`` blocks; ``"all"`` every LoRA
            module; ``"none"``/0 nothing (the plan then only reports σ's).
        factor: target ``σ_max(s'BA) = factor · σ_max(W_pre)``.
        mode: ``match`` (the paper: set every chosen module to the target, up or down) or
            ``amplify`` (only raise: a module already above the target keeps its trained scale).

    Returns:
        :class:`RescalePlan` (rows + the rewritten ``adapter_config.json`` dict).
    """
    from spectra.io import base_weight_for
    from spectra.spectral import top_singular

    if adapter.kind != "lora":
        raise SpectraError(f"{adapter.path}: Pt rescales PEFT LoRA adapters, not a full fine-tune")
    if not (math.isfinite(factor) and factor > 0):
        raise SpectraError(f"--rescale-factor {factor!r}: must be a positive number")
    if mode not in RESCALE_MODES:
        raise SpectraError(f"--rescale-mode {mode!r}: use one of {', '.join(RESCALE_MODES)}")
    config = json.loads(json.dumps(adapter.config))  # deep copy
    n_blocks = count_blocks(base)
    chosen = select_blocks(layers, n_blocks)
    notes: list[str] = []
    if isinstance(layers, int) and not isinstance(layers, bool) and layers > n_blocks > 0:
        notes.append(f"--rescale-layers {layers}: the base has {n_blocks} blocks, so all {n_blocks} are the ones "
                     "rescaled")
    rslora = bool(config.get("use_rslora"))
    mods = [m for m in adapter.modules if m.update_kind in RESCALABLE_KINDS]
    skipped = [m.name for m in adapter.modules if m.update_kind == "embedding"]
    if skipped:
        notes.append(f"embedding LoRA modules are not rescaled: {', '.join(skipped)}")
    if not mods:
        raise SpectraError(f"{adapter.path}: no LoRA linear module to rescale")

    # σ_max(W_pre), batched by shape
    sigma_pre: dict[str, float] = {}
    by_shape: dict[tuple[int, int], list[Any]] = defaultdict(list)
    for m in mods:
        by_shape[tuple(m.shape)].append(m)
    for group in by_shape.values():
        stack = torch.stack([base_weight_for(m, base, torch.float32).to(device) for m in group])
        top = top_singular(stack, 1)
        for m, s in zip(group, top.S[:, 0].tolist()):
            sigma_pre[m.name] = float(s)

    rows: list[RescaleRow] = []
    new_patterns: dict[str, float] = {}
    for m in mods:
        B = m.source.get(m.tensors["lora_B"]).to(torch.float64)
        A = m.source.get(m.tensors["lora_A"]).to(torch.float64)
        sigma_ba, s_new = solve_scale(B, A, sigma_pre[m.name], factor)
        alpha_before = m.scale * (math.sqrt(m.rank) if rslora else m.rank)
        want = chosen is None or (m.layer is not None and m.layer in chosen)
        row = RescaleRow(
            module=m.name, layer=m.layer, kind=m.update_kind, rank=m.rank, sigma_pre=sigma_pre[m.name],
            sigma_delta_before=abs(m.scale) * sigma_ba, scale_before=m.scale, alpha_before=alpha_before,
            rescaled=False, scale_after=m.scale, alpha_after=alpha_before,
            sigma_delta_after=abs(m.scale) * sigma_ba,
        )
        if want and math.isfinite(s_new) and mode == "amplify" and abs(s_new) < abs(m.scale):
            row.note = "amplify: already above the target, left at the trained scale"
            want = False  # already at least as strong as asked: amplify-only leaves it as trained
        if want and not math.isfinite(s_new):
            row.note = "B·A = 0 (untrained?): left unchanged"
        elif want:
            key = pattern_key(m.name)
            alpha_new = s_new * (math.sqrt(m.rank) if rslora else m.rank)
            row.rescaled, row.scale_after, row.alpha_after = True, s_new, alpha_new
            row.sigma_delta_after = s_new * sigma_ba
            row.pattern_key = key
            new_patterns[key] = alpha_new
        rows.append(row)
    if chosen is not None and chosen and not any(r.rescaled for r in rows):
        notes.append(f"no adapted module in blocks {chosen[0]}..{chosen[-1]}: nothing rescaled")
    # our keys first: PEFT takes the first matching key, so they win over older patterns
    old = {k: v for k, v in (config.get("alpha_pattern") or {}).items() if k not in new_patterns}
    config["alpha_pattern"] = {**new_patterns, **old}
    _check_scales(config, rows, rslora)
    return RescalePlan(rows=rows, config=config, n_blocks=n_blocks, blocks=list(chosen) if chosen is not None else [],
                       factor=factor, layers=layers, notes=notes)


def _check_scales(config: dict[str, Any], rows: list[RescaleRow], rslora: bool) -> None:
    """Re-resolve every module's scale with PEFT's own pattern matching and compare."""
    from spectra.io.peft_config import lora_scale

    for row in rows:
        _, scale = lora_scale(config, row.module)
        want = row.scale_after
        if not math.isclose(scale, want, rel_tol=1e-9, abs_tol=1e-12):
            raise SpectraError(
                f"Pt: alpha_pattern would give module {row.module} scale {scale:.6g} instead of {want:.6g} "
                f"(a pattern key matches more than one module)"
            )


def write_rescaled(adapter_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], plan: RescalePlan) -> Path:
    """Copy the adapter folder to ``out_dir`` with the plan's ``adapter_config.json``.

    Weights are copied byte for byte; only the config changes. ``out_dir`` must not exist
    (callers write into a fresh temporary folder).
    """
    src, dst = Path(adapter_dir), Path(out_dir)
    if dst.exists():
        raise SpectraError(f"{dst}: already exists")
    shutil.copytree(src, dst)
    (dst / "adapter_config.json").write_text(json.dumps(plan.config, indent=2, sort_keys=False, allow_nan=False) + "\n",
                                             encoding="utf-8")
    return dst


def rescale_adapter(base: str | os.PathLike[str], adapter_dir: str | os.PathLike[str],
                    out_dir: str | os.PathLike[str] | None, layers: int | str = 3, factor: float = 1.0,
                    allow_pickle: bool = False, mode: str = "match") -> RescalePlan:
    """Pt on a saved adapter: plan it and (unless ``out_dir`` is None) write the rescaled copy."""
    from spectra.io import load_adapter, open_base

    with open_base(base, allow_pickle=allow_pickle) as ckpt, load_adapter(adapter_dir, ckpt, allow_pickle) as ad:
        plan = plan_rescale(ckpt, ad, layers=layers, factor=factor, mode=mode)
    if out_dir is not None:
        write_rescaled(adapter_dir, out_dir, plan)
    return plan
