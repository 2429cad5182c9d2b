"""``spectra.threshold``: how far an adapter's scale must grow before it overrides a backdoor.

The science is Proposition 4.2 of Luong & Chen (2026), "Why LoRA Fails to Forget": for a
linear classifier ``z = (W_pre + sΔW) x`` with ``‖x‖ = 1`` and margin direction
``c = e_y − e_ybd``, if

    ⟨c, W_pre x̃⟩ ≤ −ρ_bd ‖c‖ σ_pre,   ⟨c, ΔW x⟩ ≥ ρ_cl ‖c‖ σ_Δ,   |⟨c, ΔW (x̃ − x)⟩| ≤ ρ_tr ‖c‖ σ_Δ

and ``ρ_eff = ρ_cl − ρ_tr > 0``, every ``s > s* = (ρ_bd / ρ_eff) · (σ_pre / σ_Δ)`` makes the
triggered margin positive (the backdoor is forgotten on x̃).

This module measures those quantities per sample from margins. Let ``k`` multiply every
adapted module's scale (``k = 1``: the adapter as trained; ``k = 0``: the base) and
``M_k(x) = z_y(x) − z_ybd(x)``. For a non-target sample x and its triggered twin x̃:

- ``D(x) = M_1(x) − M_0(x)``, the adapter's margin gain (exactly ⟨c, ΔW x⟩ for a linear model);
- ``k*_bound = −M_0(x̃) / (D(x) − |D(x̃) − D(x)|)`` when the denominator is positive, else ∞
  (Proposition 4.2's sufficient scale, per sample);
- ``k*_flip = −M_0(x̃) / D(x̃)`` when ``D(x̃) > 0``, else ∞ (the exact crossing of a linear model);
- both are 0 when ``M_0(x̃) > 0`` (the base does not flip x̃ in the first place);
- ``ρ_bd = −M_0(x̃) / (‖c‖σ_pre)``, ``ρ_cl = D(x) / (‖c‖σ_Δ)``, ``ρ_tr = |D(x̃) − D(x)| / (‖c‖σ_Δ)``
  with ``‖c‖ = √2`` and σ_pre, σ_Δ of one chosen module; ``s* = k*·s`` with s that
  module's PEFT scale.

:func:`threshold_from_margins` is the pure tensor core; :func:`linear_threshold` builds
the margins of a linear classifier on fixed features (the exact case);
:func:`threshold` runs a transformer classifier with a PEFT adapter, measures CA(k) and
ASR(k) on a grid with :func:`spectra.io.model.scaled_adapter` and returns a
:class:`ThresholdReport` whose ``.write(out)`` produces ``threshold.json``,
``threshold_samples.csv``, ``fig_sweep.png`` and ``report.md``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from spectra.errors import SpectraError
from spectra.provenance import json_safe

C_NORM = math.sqrt(2.0)  # ‖e_y − e_ybd‖ for y ≠ ybd
DEFAULT_GRID = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
INF = float("inf")

#: One sentence per number, printed in every report.
DEFINITIONS = {
    "k": "multiplier of every LoRA module's scale s (the s of the paper's Figure 3): k = 1 is the adapter as "
         "trained, k = 0 removes every LoRA update. A trained classification head (modules_to_save) is used as "
         "trained, unless the report says it was extrapolated (head = scaled: W_base + k·(W_saved − W_base)).",
    "M_k(x)": "margin z_y(x) − z_ybd(x) of the model at multiplier k (y: the sample's true label, ybd: the target label); "
              "negative on a triggered sample means the backdoor wins against the true label.",
    "D(x)": "M_1(x) − M_0(x), the adapter's margin gain; exactly ⟨c, s·ΔW x⟩ for a linear model.",
    "k_star_bound": "−M_0(x̃) / (D(x) − |D(x̃) − D(x)|) when that denominator is positive, else ∞; 0 when M_0(x̃) > 0. "
                    "Proposition 4.2's sufficient multiplier for one sample (it becomes exact in the linear case only as a bound).",
    "k_star_flip": "−M_0(x̃) / D(x̃) when D(x̃) > 0, else ∞; 0 when M_0(x̃) > 0. The multiplier at which a linear model's "
                   "triggered margin M_0(x̃) + k·D(x̃) crosses zero.",
    "s_star": "k*·s with s the chosen module's PEFT scale (α/r or α/√r): the scale that module would need.",
    "rho_bd": "−M_0(x̃) / (‖c‖·σ_pre), ‖c‖ = √2: how strongly the base pushes x̃ to the target, in units of σ_pre.",
    "rho_cl": "D(x) / (‖c‖·σ_Δ): how strongly the adapter pushes the clean x towards its label, in units of σ_Δ.",
    "rho_tr": "|D(x̃) − D(x)| / (‖c‖·σ_Δ): how much the trigger changes the adapter's push.",
    "rho_eff": "ρ_cl − ρ_tr; Proposition 4.2 needs ρ_eff > 0, otherwise its sufficient condition is vacuous (k*_bound = ∞).",
    "sigma_pre": "σ_max(W_pre) of the chosen module.",
    "sigma_delta": "σ_max(s·ΔW) of the chosen module (low-rank SVD for LoRA, dense for a modules_to_save head).",
    "worst": "the largest per-sample value (Proposition 4.2 over the whole sample set); ∞ when any sample's value is ∞.",
    "uniform": "Proposition 4.2 stated with uniform constants: (max ρ_bd / (min ρ_cl − max ρ_tr))·σ_pre/σ_Δ; "
               "∞ when min ρ_cl ≤ max ρ_tr, 0 when max ρ_bd ≤ 0.",
    "predicted_asr(k)": "share of triggered non-target samples whose linearised margin M_0(x̃) + k·D(x̃) is negative: those "
                        "with k < k*_flip, plus the few the adapter drives into the target (M_0(x̃) > 0, D(x̃) < 0, "
                        "k > −M_0(x̃)/D(x̃)). Exact for a linear model.",
    "predicted_threshold_k": "smallest k ≥ 0 where predicted_asr(k) < 50%, computed exactly from the per-sample crossings.",
    "measured_threshold_k": "smallest k on the sweep grid where the measured ASR < 50%.",
    "measured_crossing_k": "where the measured ASR crosses 50%, interpolated log-linearly between the two grid points "
                           "around the first one below 50%.",
    "search_threshold_k": "the cheap estimate: an adaptive search (doubling k from 1, then regula falsi in log k) for "
                          "the k where the median target-versus-rest margin of a seeded subsample of triggered rows "
                          "turns positive, i.e. where ASR falls below 50%; `search.forward_passes` is its cost.",
    "measured_threshold_k_clean": "the same, counting only grid points where the model still works: not collapsed to one "
                                  "class, and clean accuracy above the majority-class share (a collapsed or worse-than-"
                                  "constant model has a low ASR whatever the trigger does).",
    "asr_floor": "share of non-target samples the model already assigns to the target label without the trigger.",
}


# --------------------------------------------------------------------------- core math


@dataclass
class ThresholdResult:
    """Per-sample margins and threshold estimates for the non-target samples (1-D tensors, float64)."""

    M0_clean: Tensor
    M0_trig: Tensor
    M1_clean: Tensor
    M1_trig: Tensor
    D_clean: Tensor
    D_trig: Tensor
    k_star_bound: Tensor
    k_star_flip: Tensor
    rho_bd: Tensor
    rho_cl: Tensor
    rho_tr: Tensor
    sigma_pre: float
    sigma_delta: float
    scale: float
    c_norm: float = C_NORM
    index: Tensor | None = None

    def __len__(self) -> int:
        return int(self.M0_trig.numel())

    @property
    def rho_eff(self) -> Tensor:
        return self.rho_cl - self.rho_tr

    @property
    def s_star_bound(self) -> Tensor:
        return self.k_star_bound * self.scale

    @property
    def s_star_flip(self) -> Tensor:
        return self.k_star_flip * self.scale

    @property
    def k_enter(self) -> Tensor:
        """Multiplier past which the adapter drives an unflipped x̃ *into* the target
        (M_0(x̃) > 0, D(x̃) < 0); ∞ for every other sample."""
        entering = (self.M0_trig > 0) & (self.D_trig < 0)
        k = torch.full_like(self.M0_trig, INF)
        k[entering] = -self.M0_trig[entering] / self.D_trig[entering]
        return k

    def flipped(self, k: float | Tensor) -> Tensor:
        """Bool ``(len(k), n)``: whether the linearised triggered margin is negative at each k."""
        k = torch.as_tensor(k, dtype=torch.float64).reshape(-1, 1)
        return (k < self.k_star_flip) | (k > self.k_enter)

    def predicted_asr(self, k: float | Sequence[float] | Tensor) -> Tensor:
        """Predicted ASR at each k (share of triggered non-target samples still flipped)."""
        if len(self) == 0:
            return torch.full((torch.as_tensor(k).numel(),), float("nan"), dtype=torch.float64)
        return self.flipped(k).double().mean(dim=1)

    def predicted_threshold(self, level: float = 0.5) -> float:
        """Smallest k ≥ 0 with ``predicted_asr(k) < level``, exactly (∞ if none).

        The curve is piecewise constant and changes only at the per-sample crossings; at a
        crossing a leaving sample (k*_flip) is already unflipped and an entering one not yet
        flipped, so the value *at* a crossing is the minimum of its two sides and the
        smallest k is always one of {0} ∪ crossings.
        """
        if len(self) == 0:
            return float("nan")
        cand = torch.cat([torch.zeros(1, dtype=torch.float64), self.k_star_flip, self.k_enter])
        cand = torch.unique(cand[torch.isfinite(cand) & (cand >= 0)])
        below = self.predicted_asr(cand) < level
        return float(cand[below][0]) if bool(below.any()) else INF

    def uniform_k(self) -> float:
        """Proposition 4.2 with uniform constants over all samples (see ``DEFINITIONS['uniform']``)."""
        if len(self) == 0:
            return float("nan")
        bd = float(self.rho_bd.max())
        eff = float(self.rho_cl.min() - self.rho_tr.max())
        if bd <= 0:
            return 0.0
        if eff <= 0 or self.sigma_delta <= 0:
            return INF
        return (bd / eff) * (self.sigma_pre / self.sigma_delta)

    def summary(self) -> dict[str, Any]:
        """JSON-ready aggregates (∞ written as ``None``)."""
        n = len(self)
        flipped = self.M0_trig < 0
        k_b, k_f = aggregate(self.k_star_bound), aggregate(self.k_star_flip)
        uni = self.uniform_k()
        k_b["uniform"] = uni
        return {
            "n_samples": n,
            "n_flipped_by_base": int((self.M0_trig < 0).sum()),
            "share_flipped_by_base": float((self.M0_trig < 0).double().mean()) if n else float("nan"),
            "n_entering": int(torch.isfinite(self.k_enter).sum()),
            "k_star_bound": k_b,
            "k_star_flip": k_f,
            "s_star": {"bound": _scaled(k_b, self.scale), "flip": _scaled(k_f, self.scale)},
            "share_rho_eff_nonpositive": float((self.rho_eff <= 0).double().mean()) if n else float("nan"),
            "share_rho_eff_nonpositive_flipped": (float((self.rho_eff[flipped] <= 0).double().mean())
                                                  if int(flipped.sum()) else float("nan")),
            "share_k_star_bound_inf": float(torch.isinf(self.k_star_bound).double().mean()) if n else float("nan"),
            "share_k_star_flip_inf": float(torch.isinf(self.k_star_flip).double().mean()) if n else float("nan"),
            "rho_bd": aggregate(self.rho_bd, extremes=True),
            "rho_cl": aggregate(self.rho_cl, extremes=True),
            "rho_tr": aggregate(self.rho_tr, extremes=True),
            "rho_eff": aggregate(self.rho_eff, extremes=True),
            "predicted_threshold_k": self.predicted_threshold(),
        }

    def rows(self) -> list[dict[str, Any]]:
        """One dict per sample, the columns of ``threshold_samples.csv``."""
        index = self.index if self.index is not None else torch.arange(len(self))
        cols = {"M0_clean": self.M0_clean, "M0_trig": self.M0_trig, "D_clean": self.D_clean, "D_trig": self.D_trig,
                "k_star_bound": self.k_star_bound, "k_star_flip": self.k_star_flip,
                "rho_bd": self.rho_bd, "rho_cl": self.rho_cl, "rho_tr": self.rho_tr}
        lists = {k: v.tolist() for k, v in cols.items()}
        idx = index.tolist()
        return [{"index": int(idx[i]), **{k: lists[k][i] for k in cols}} for i in range(len(self))]


def threshold_from_margins(
    M0_clean: Tensor,
    M0_trig: Tensor,
    M1_clean: Tensor,
    M1_trig: Tensor,
    *,
    sigma_pre: float = 1.0,
    sigma_delta: float = 1.0,
    scale: float = 1.0,
    c_norm: float = C_NORM,
    index: Tensor | None = None,
) -> ThresholdResult:
    """Per-sample threshold estimates from margins at k = 0 and k = 1.

    Pure tensor math (no model, no I/O). Computed in float64 whatever the input dtype.

    Args:
        M0_clean, M0_trig: margins ``z_y − z_ybd`` of the base (k = 0) on the clean
            non-target samples x and on their triggered twins x̃, shape ``(n,)``.
        M1_clean, M1_trig: the same with the adapter as trained (k = 1).
        sigma_pre: σ_max(W_pre) of the module the ρ's are normalised by.
        sigma_delta: σ_max(s·ΔW) of that module.
        scale: that module's PEFT scale s; ``s* = k*·s``.
        c_norm: ‖c‖, √2 for ``c = e_y − e_ybd``.
        index: optional sample identifiers carried into :meth:`ThresholdResult.rows`.

    Returns:
        :class:`ThresholdResult` with ``D``, ``k*_bound``, ``k*_flip`` and the ρ's
        (definitions in the module docstring and :data:`DEFINITIONS`).
    """
    t = [torch.as_tensor(m).detach().to("cpu", torch.float64).reshape(-1) for m in (M0_clean, M0_trig, M1_clean, M1_trig)]
    n = t[0].numel()
    if any(m.numel() != n for m in t):
        raise ValueError(f"margins must have one value per sample, got sizes {[m.numel() for m in t]}")
    if not all(bool(torch.isfinite(m).all()) for m in t):
        raise SpectraError("margins contain NaN or Inf (the model's logits are not finite)")
    m0c, m0t, m1c, m1t = t
    d_c = m1c - m0c
    d_t = m1t - m0t
    already = m0t > 0

    denom = d_c - (d_t - d_c).abs()
    k_bound = torch.full_like(m0t, INF)
    ok = denom > 0
    k_bound[ok] = -m0t[ok] / denom[ok]
    k_bound[already] = 0.0

    k_flip = torch.full_like(m0t, INF)
    ok = d_t > 0
    k_flip[ok] = -m0t[ok] / d_t[ok]
    k_flip[already] = 0.0

    sp = float(sigma_pre)
    sd = float(sigma_delta)
    rho_bd = -m0t / (c_norm * sp) if sp > 0 else torch.full_like(m0t, float("nan"))
    rho_cl = d_c / (c_norm * sd) if sd > 0 else torch.full_like(m0t, float("nan"))
    rho_tr = (d_t - d_c).abs() / (c_norm * sd) if sd > 0 else torch.full_like(m0t, float("nan"))
    return ThresholdResult(M0_clean=m0c, M0_trig=m0t, M1_clean=m1c, M1_trig=m1t, D_clean=d_c, D_trig=d_t,
                           k_star_bound=k_bound, k_star_flip=k_flip, rho_bd=rho_bd, rho_cl=rho_cl, rho_tr=rho_tr,
                           sigma_pre=sp, sigma_delta=sd, scale=float(scale), c_norm=float(c_norm),
                           index=None if index is None else torch.as_tensor(index).reshape(-1))


def margins(logits: Tensor, y: Tensor, y_bd: int) -> Tensor:
    """``z_y − z_ybd`` per row of ``logits (n, C)`` (float64)."""
    logits = logits.to(torch.float64)
    y = torch.as_tensor(y, dtype=torch.long, device=logits.device).reshape(-1, 1)
    return (logits.gather(1, y) - logits[:, y_bd : y_bd + 1]).reshape(-1)


def linear_threshold(
    W_pre: Tensor,
    dW: Tensor | tuple[Tensor, Tensor],
    X: Tensor,
    X_trig: Tensor,
    y: Tensor | Sequence[int],
    y_bd: int,
    scale: float = 1.0,
) -> ThresholdResult:
    """Exact threshold estimates of a linear classifier ``z = (W_pre + k·s·ΔW) x`` on fixed features.

    Args:
        W_pre: base weight ``(C, d)`` (``(out, in)`` orientation).
        dW: the unscaled update ``(C, d)``, or LoRA factors ``(B, A)`` with ``ΔW = B @ A``.
        X, X_trig: clean features ``(n, d)`` and their triggered twins. Proposition 4.2
            assumes unit-norm rows; the k*'s are invariant to a common rescaling of x and
            x̃, the ρ's are not, so pass normalised rows to read the ρ's as the theorem's.
        y: labels ``(n,)``; samples with ``y == y_bd`` are dropped (``index`` keeps the
            positions of the others).
        y_bd: the backdoor's target label.
        scale: the adapter's scale s (k = 1 uses ``W_pre + s·ΔW``).

    σ_pre comes from :func:`spectra.spectral.top_singular` and σ_Δ = σ_max(s·ΔW) from
    :func:`spectra.spectral.lowrank_svd` (factors) or ``top_singular`` (dense).
    """
    from spectra.spectral import lowrank_svd, top_singular

    W_pre = torch.as_tensor(W_pre, dtype=torch.float64)
    if isinstance(dW, tuple):
        B, A = (torch.as_tensor(m, dtype=torch.float64) for m in dW)
        dense = B @ A
        sigma_delta = float(lowrank_svd(B, A, scale).S[..., 0])
    else:
        dense = torch.as_tensor(dW, dtype=torch.float64)
        sigma_delta = float(top_singular(scale * dense, 1, exact=True).S[..., 0])
    if dense.shape != W_pre.shape:
        raise ValueError(f"ΔW has shape {tuple(dense.shape)} but W_pre has {tuple(W_pre.shape)}")
    sigma_pre = float(top_singular(W_pre, 1, exact=True).S[..., 0])
    X = torch.as_tensor(X, dtype=torch.float64)
    X_trig = torch.as_tensor(X_trig, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.long).reshape(-1)
    keep = torch.nonzero(y != y_bd).reshape(-1)
    X, X_trig, y = X[keep], X_trig[keep], y[keep]
    W1 = W_pre + scale * dense
    return threshold_from_margins(
        margins(X @ W_pre.T, y, y_bd), margins(X_trig @ W_pre.T, y, y_bd),
        margins(X @ W1.T, y, y_bd), margins(X_trig @ W1.T, y, y_bd),
        sigma_pre=sigma_pre, sigma_delta=sigma_delta, scale=scale, index=keep,
    )


def quantile(values: Tensor, q: float) -> float:
    """Linear-interpolation quantile that tolerates ±∞ (torch.quantile turns ∞ into NaN)."""
    v = torch.sort(values.to(torch.float64).reshape(-1)).values
    n = v.numel()
    if n == 0:
        return float("nan")
    pos = q * (n - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    a, b = float(v[lo]), float(v[hi])
    frac = pos - lo
    if lo == hi or frac == 0 or a == b:
        return a
    if math.isinf(b) or math.isinf(a):
        return b if math.isinf(b) else a
    return a + frac * (b - a)


def aggregate(values: Tensor, extremes: bool = False) -> dict[str, float]:
    """``worst`` (max), ``median``, ``p90`` (and ``min``, ``mean`` of finite values with ``extremes``)."""
    if values.numel() == 0:
        out = {"worst": float("nan"), "median": float("nan"), "p90": float("nan")}
    else:
        out = {"worst": float(values.max()), "median": quantile(values, 0.5), "p90": quantile(values, 0.9)}
    if extremes:
        finite = values[torch.isfinite(values)]
        out = {"min": float(values.min()) if values.numel() else float("nan"), "median": out["median"],
               "p90": out["p90"], "max": out["worst"],
               "mean": float(finite.mean()) if finite.numel() else float("nan")}
    return out


def _scaled(agg: dict[str, float], s: float) -> dict[str, float]:
    return {k: (v * s if not (math.isinf(v) and s == 0) else float("nan")) for k, v in agg.items()}


# --------------------------------------------------------------------------- transformer path


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


@dataclass
class ThresholdReport:
    """The result of :func:`threshold`; ``.write(out)`` writes the report folder."""

    result: ThresholdResult
    sweep: list[dict[str, Any]]
    module: ModuleChoice
    settings: dict[str, Any]
    inputs: dict[str, Any]
    versions: dict[str, str]
    checks: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    search: Any = None  # spectra.threshold_search.CrossingSearch
    margins_by_k: dict[float, list[float]] = field(default_factory=dict)  # target-vs-rest margins of x̃ per k

    @property
    def measured_crossing_k(self) -> float:
        """Where the measured ASR crosses 50%, interpolated log-linearly between grid points
        (∞ if it never does)."""
        return measured_crossing(self.sweep)

    @property
    def search_threshold_k(self) -> float:
        """The adaptive search's crossing (``nan`` when no search ran)."""
        return float(self.search.k) if self.search is not None else float("nan")

    @property
    def measured_threshold_k(self) -> float:
        """Smallest grid k with measured ASR < 50% (∞ if none)."""
        return measured_threshold(self.sweep)

    @property
    def measured_threshold_k_clean(self) -> float:
        """Smallest grid k with measured ASR < 50% on a model that still works (∞ if none):
        see :func:`measured_threshold_working`."""
        return measured_threshold_working(self.sweep)

    @property
    def predicted_threshold_k(self) -> float:
        return self.result.predicted_threshold()

    def predicted_curve(self, points: int = 400) -> tuple[list[float], list[float]]:
        """(k, predicted ASR) on a dense grid from 0 to the largest swept k, crossings included."""
        kmax = max([float(r["k"]) for r in self.sweep] + [1.0])
        dense = torch.cat([torch.linspace(0.0, 1.0, points // 4, dtype=torch.float64),
                           torch.logspace(0.0, math.log10(kmax), points, dtype=torch.float64) if kmax > 1 else
                           torch.zeros(0, dtype=torch.float64)])
        cross = torch.cat([self.result.k_star_flip, self.result.k_enter])
        cross = cross[torch.isfinite(cross) & (cross > 0) & (cross <= kmax)]
        eps = 1e-9 * max(kmax, 1.0)
        ks = torch.unique(torch.cat([dense, cross - eps, cross]).clamp(min=0.0))
        return ks.tolist(), self.result.predicted_asr(ks).tolist()

    def to_json(self) -> dict[str, Any]:
        s = self.result.summary()
        out: dict[str, Any] = {
            "k_star_bound": s["k_star_bound"],
            "k_star_flip": s["k_star_flip"],
            "s_star": s["s_star"],
            "rho_bd": s["rho_bd"], "rho_cl": s["rho_cl"], "rho_tr": s["rho_tr"], "rho_eff": s["rho_eff"],
            "share_rho_eff_nonpositive": s["share_rho_eff_nonpositive"],
            "share_rho_eff_nonpositive_flipped": s["share_rho_eff_nonpositive_flipped"],
            "share_k_star_bound_inf": s["share_k_star_bound_inf"],
            "share_k_star_flip_inf": s["share_k_star_flip_inf"],
            "n_samples": s["n_samples"],
            "n_flipped_by_base": s["n_flipped_by_base"],
            "share_flipped_by_base": s["share_flipped_by_base"],
            "n_entering": s["n_entering"],
            "predicted_threshold_k": self.predicted_threshold_k,
            "measured_threshold_k": self.measured_threshold_k,
            "measured_threshold_k_clean": self.measured_threshold_k_clean,
            "measured_crossing_k": self.measured_crossing_k,
            "search_threshold_k": self.search_threshold_k,
            "search": self.search.to_dict() if self.search is not None else None,
            "sweep": self.sweep,
            "module": self.module.name,
            "module_info": self.module.to_dict(),
            "sigma_pre": self.module.sigma_pre,
            "sigma_delta": self.module.sigma_delta,
            "scale": self.module.scale,
            "checks": self.checks,
            "notes": self.notes,
            "settings": self.settings,
            "inputs": self.inputs,
            "versions": self.versions,
            "timings_s": self.timings,
            "definitions": DEFINITIONS,
            "conventions": {"null": "∞ (no finite value: the estimate never crosses, or no grid k qualified)"},
        }
        return json_safe(out)

    def write(self, out: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write threshold.json, threshold_samples.csv, fig_sweep.png and report.md atomically."""
        import csv
        import json

        from spectra.io.output import atomic_output_dir
        from spectra.report.style import save_figure
        from spectra.report.threshold_figures import sweep_figure
        from spectra.report.threshold_markdown import render_threshold_markdown

        with atomic_output_dir(out, overwrite=overwrite) as tmp:
            (tmp / "threshold.json").write_text(json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n",
                                                encoding="utf-8")
            columns = ["index", "M0_clean", "M0_trig", "D_clean", "D_trig", "k_star_bound", "k_star_flip",
                       "rho_bd", "rho_cl", "rho_tr"]
            with open(tmp / "threshold_samples.csv", "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=columns)
                writer.writeheader()
                for row in self.result.rows():
                    writer.writerow({k: (repr(float(v)) if isinstance(v, float) else v) for k, v in row.items()})
            save_figure(sweep_figure(self), tmp / "fig_sweep.png")
            (tmp / "report.md").write_text(render_threshold_markdown(self), encoding="utf-8")
        return Path(out)


def measured_crossing(sweep: Sequence[dict[str, Any]], level: float = 0.5) -> float:
    """The first k where the measured ASR falls below ``level``, interpolated between the two
    grid points around it (log-linear in k; linear when the lower one is k = 0). 0 when the
    smallest k is already below; ∞ when no k is."""
    rows = sorted((float(r["k"]), float(r["asr"])) for r in sweep
                  if r.get("asr") is not None and not math.isnan(float(r["asr"])))
    for i, (k, asr) in enumerate(rows):
        if asr < level:
            if i == 0:
                return k
            k0, a0 = rows[i - 1]
            t = (a0 - level) / (a0 - asr)
            if k0 <= 0:
                return k0 + t * (k - k0)
            return math.exp(math.log(k0) + t * (math.log(k) - math.log(k0)))
    return INF


def measured_threshold(sweep: Sequence[dict[str, Any]], level: float = 0.5) -> float:
    for row in sorted(sweep, key=lambda r: float(r["k"])):
        asr = row.get("asr")
        if asr is not None and not math.isnan(float(asr)) and float(asr) < level:
            return float(row["k"])
    return INF


def measured_threshold_working(sweep: Sequence[dict[str, Any]], majority_share: float | None = None,
                               level: float = 0.5) -> float:
    """Smallest grid k with measured ASR < ``level`` where the model still works: not
    collapsed to one class, and clean accuracy above the majority-class share (what a
    constant guess scores). An ASR of 0 from a model that never predicts the target, or
    from one that has turned the target into its default answer, is not a removed backdoor.
    ``majority_share`` stands in for rows written before sweeps recorded their own."""
    def works(row: dict[str, Any]) -> bool:
        majority = row.get("majority_share", majority_share)
        return not row.get("collapsed") and (majority is None or float(row["ca"]) > float(majority))

    return measured_threshold([r for r in sweep if works(r)], level)


def parse_grid(spec: str | Sequence[float]) -> list[float]:
    """``"0,0.5,1,2"`` → sorted unique non-negative floats."""
    if isinstance(spec, str):
        try:
            values = [float(v) for v in spec.replace(" ", "").split(",") if v]
        except ValueError:
            raise SpectraError(f"--grid {spec!r}: expected comma-separated numbers, e.g. 0,0.5,1,2,4") from None
    else:
        values = [float(v) for v in spec]
    if not values:
        raise SpectraError("--grid is empty")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise SpectraError(f"--grid {spec!r}: multipliers must be finite and ≥ 0")
    return sorted(set(values))


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


def threshold(
    base: str | os.PathLike[str],
    adapter: str | os.PathLike[str],
    data: Any,
    trigger: Any,
    target_label: int = 0,
    *,
    grid: str | Sequence[float] = DEFAULT_GRID,
    module: str | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
    batch_size: int = 32,
    max_length: int = 128,
    seed: int = 0,
    max_samples: int | None = None,
    split_test: float | None = None,
    device: str = "auto",
    head: str = "trained",
    search_rows: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> ThresholdReport:
    """Estimate the scale at which ADAPTER overrides BASE's backdoor, and check it by a sweep.

    Args:
        base, adapter: a local HF model folder (or hub id) and a PEFT LoRA folder.
        data: labelled text (a spec for :func:`spectra.data.load_labelled` or a ``LabelledData``).
        trigger: a trigger spec (``badnet:mn``, ``insent:"…"``) or a parsed ``Trigger``.
        target_label: the backdoor's target label.
        grid: multipliers k to measure CA(k) and ASR(k) at; 0 and 1 are always measured.
        module: which adapted module's σ's normalise the ρ's (default: head, else nearest the output).
        max_samples: keep about this many non-target samples (a stratified subsample of all rows).
        split_test: evaluate on the test side of ``split(data, split_test, seed)`` only.
        head: ``trained`` (default, the paper's sweep: k multiplies the LoRA scale, a trained
            classification head is used as trained) or ``scaled`` (the head is extrapolated
            with k too, :func:`spectra.io.model.scaled_adapter`); recorded in the report.
        search_rows: rows of the cheap crossing search (:mod:`spectra.threshold_search`).

    Returns:
        :class:`ThresholdReport` (call ``.write(out)``).
    """
    import time
    import warnings

    from spectra.data import load_labelled, parse_trigger, predict_logits, split, trigger_rng
    from spectra.io import load_adapter, open_base
    from spectra.device import resolve_device
    from spectra.errors import SpectraWarning
    from spectra.eval.scaling import scaled_adapter
    from spectra.io.model import load_classifier
    from spectra.provenance import library_versions

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    ks = sorted(set(parse_grid(grid)) | {0.0, 1.0})
    trig = parse_trigger(trigger) if isinstance(trigger, str) else trigger
    labelled = data if hasattr(data, "labels") and hasattr(data, "texts") else load_labelled(data, text_col, label_col)
    full_source = labelled.to_dict() if hasattr(labelled, "to_dict") else {"source": str(data)}
    labelled.require_target(target_label)
    notes: list[str] = []
    if split_test is not None:
        _, labelled = split(labelled, split_test, seed)
        notes.append(f"evaluated on the test side of a stratified split (test size {split_test}, seed {seed}): "
                     f"{len(labelled):,} rows")
        labelled.require_target(target_label)
    if max_samples is not None:
        labelled, note = _subsample(labelled, target_label, max_samples, seed, split)
        if note:
            notes.append(note)
    texts, labels = list(labelled.texts), list(labelled.labels)
    nt_idx = [i for i, y in enumerate(labels) if y != target_label]
    nt_labels = torch.tensor([labels[i] for i in nt_idx], dtype=torch.long)
    # text i's twin comes from trigger_rng(seed, i), exactly as spectra.data.evaluate builds it
    trig_texts = [trig.insert(texts[i], trigger_rng(seed, i)) for i in nt_idx]

    # σ's of the chosen module, streamed from the checkpoints
    t0 = time.perf_counter()
    with open_base(base) as ckpt:
        with load_adapter(adapter, ckpt) as ad:
            chosen, why = choose_module(ad.modules, module)
            sigma_pre, sigma_delta = module_sigmas(chosen, ckpt)
            choice = ModuleChoice(name=chosen.name, module_type=chosen.module_type, layer=chosen.layer,
                                  update_kind=chosen.update_kind, shape=tuple(chosen.shape), rank=int(chosen.rank),
                                  scale=float(chosen.scale), sigma_pre=sigma_pre, sigma_delta=sigma_delta, why=why)
            adapter_kinds = sorted({m.update_kind for m in ad.modules})
            n_modules = len(ad.modules)
    timings["spectra"] = time.perf_counter() - t0
    if "dora" in adapter_kinds:
        notes.append("the adapter uses DoRA, whose magnitude renormalisation is not linear in the LoRA scale; "
                     "k multiplies the LoRA scaling only")

    dev = resolve_device(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SpectraWarning)
        model, tokenizer = load_classifier(base, adapter, num_labels=labelled.num_classes, device=dev)
    for w in caught:  # a fresh head, DoRA scaling: the report says so
        if issubclass(w.category, SpectraWarning):
            notes.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    def logits(batch_texts: list[str]) -> Tensor:
        return predict_logits(model, tokenizer, batch_texts, batch_size=batch_size, max_length=max_length,
                              progress=False).detach().to("cpu", torch.float64)

    t0 = time.perf_counter()
    total = len(ks)
    per_k: dict[float, tuple[Tensor, Tensor]] = {}
    for i, k in enumerate(ks):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SpectraWarning)  # DoRA's note is already in ``notes``
            with scaled_adapter(model, k, head=head):
                per_k[k] = (logits(texts), logits(trig_texts))
        if progress is not None:
            progress(i + 1, total)
    timings["sweep"] = time.perf_counter() - t0

    # the cheap estimate: an adaptive search on a subsample (spectra.threshold_search)
    from spectra.threshold_search import margins_function, search_crossing, subsample_rows, target_margins

    t0 = time.perf_counter()
    picked = subsample_rows(len(trig_texts), search_rows, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpectraWarning)
        search = search_crossing(margins_function(model, logits, [trig_texts[i] for i in picked], target_label,
                                                  head=head), len(picked))
    timings["search"] = time.perf_counter() - t0
    margins_by_k = {k: target_margins(per_k[k][1], target_label).tolist() for k in ks}

    y_all = torch.tensor(labels, dtype=torch.long)
    nt = torch.tensor(nt_idx, dtype=torch.long)
    clean0, trig0 = per_k[0.0]
    clean1, trig1 = per_k[1.0]
    result = threshold_from_margins(
        margins(clean0[nt], nt_labels, target_label), margins(trig0, nt_labels, target_label),
        margins(clean1[nt], nt_labels, target_label), margins(trig1, nt_labels, target_label),
        sigma_pre=sigma_pre, sigma_delta=sigma_delta, scale=choice.scale, index=nt,
    )
    checks = {"m0_equals_base": _check_base_margins(model, logits, texts, trig_texts, clean0, trig0, head)}
    if head == "scaled":
        notes.append("the classification head was extrapolated with k (head = scaled: W_base + k·(W_saved − W_base)); "
                     "the paper's sweep multiplies the LoRA scale only")
    longer = _count_longer(tokenizer, trig_texts, max_length)
    checks["triggered_longer_than_max_length"] = longer
    if longer:
        notes.append(f"{longer:,} of {len(trig_texts):,} triggered texts are longer than --max-length {max_length} "
                     "tokens: where the trigger landed past the cut the model never sees it (raise --max-length)")
    if checks["m0_equals_base"].get("ok") is False:
        notes.append(f"M_0 differs from the base model's margins by up to {checks['m0_equals_base']['max_abs_diff']:.3g}: "
                     "scaled_adapter(model, 0) did not reproduce the base; the estimates are suspect")

    sweep = []
    predicted = result.predicted_asr(ks).tolist()
    for k, pred in zip(ks, predicted):
        c, t = per_k[k]
        sweep.append(_sweep_row(k, c, t, y_all, nt, nt_labels, target_label, pred, result))
    versions = library_versions()
    settings = {"grid": ks, "target_label": target_label, "trigger": getattr(trig, "spec", str(trigger)),
                "module": module, "head": head, "search_rows": search_rows, "batch_size": batch_size, "max_length": max_length, "seed": seed,
                "max_samples": max_samples, "split_test": split_test, "device": str(dev),
                "text_col": text_col, "label_col": label_col}
    inputs = {"base": _describe(base), "adapter": {**_describe(adapter), "modules": n_modules,
                                                    "update_kinds": adapter_kinds},
              "data": full_source, "evaluated_rows": len(texts), "non_target_rows": len(nt_idx),
              "label_names": list(labelled.label_names)}
    timings["total"] = time.perf_counter() - t_start
    return ThresholdReport(result=result, sweep=sweep, module=choice, settings=settings, inputs=inputs,
                           versions=versions, checks=checks, notes=notes, timings=timings, search=search,
                           margins_by_k=margins_by_k)


def _count_longer(tokenizer: Any, texts: list[str], max_length: int) -> int | None:
    if not texts:
        return 0
    try:
        ids = tokenizer(list(texts), truncation=False, padding=False)["input_ids"]
    except Exception:  # noqa: BLE001 - a tokenizer that cannot tell is simply not checked
        return None
    return sum(1 for row in ids if len(row) > max_length)

def _subsample(data: Any, target_label: int, max_samples: int, seed: int, split: Callable[..., Any]) -> tuple[Any, str]:
    if max_samples < 1:
        raise SpectraError(f"--max-samples must be ≥ 1, got {max_samples}")
    n_nt = sum(1 for y in data.labels if y != target_label)
    if n_nt <= max_samples:
        return data, ""
    total = int(round(len(data) * max_samples / n_nt))
    if total >= len(data):
        return data, ""
    _, sub = split(data, max(total, 1), seed)
    kept = sum(1 for y in sub.labels if y != target_label)
    return sub, (f"subsampled to {len(sub):,} rows ({kept:,} non-target; --max-samples {max_samples}), "
                 f"stratified, seed {seed}")


def _wilson(k: int, n: int) -> list[float] | None:
    from spectra.data import wilson_interval

    return [float(v) for v in wilson_interval(k, n)] if n else None


def _sweep_row(k: float, clean: Tensor, trig: Tensor, y_all: Tensor, nt: Tensor, nt_labels: Tensor,
               target: int, predicted: float, result: ThresholdResult) -> dict[str, Any]:
    pred_clean = clean.argmax(dim=1)
    pred_trig = trig.argmax(dim=1)
    n, n_nt = int(y_all.numel()), int(nt.numel())
    correct = int((pred_clean == y_all).sum())
    hits = int((pred_trig == target).sum())
    floor_hits = int((pred_clean[nt] == target).sum())
    from spectra.data.evaluate import COLLAPSE_CA_MARGIN, COLLAPSE_TOP_SHARE

    majority = max(int((y_all == c).sum()) for c in torch.unique(y_all).tolist()) / max(n, 1)
    top_share = float(torch.bincount(pred_clean).max()) / max(n, 1)
    ca = correct / n if n else float("nan")
    m_trig = margins(trig, nt_labels, target)
    linear = result.M0_trig + k * result.D_trig
    return {
        "k": float(k),
        "ca": ca,
        "asr": hits / n_nt if n_nt else float("nan"),
        "asr_floor": floor_hits / n_nt if n_nt else float("nan"),
        "majority_share": majority,
        "predicted_asr": float(predicted),
        "ca_ci": _wilson(correct, n),
        "asr_ci": _wilson(hits, n_nt),
        "asr_floor_ci": _wilson(floor_hits, n_nt),
        "n": n, "n_non_target": n_nt,
        "collapsed": bool(abs(ca - majority) <= COLLAPSE_CA_MARGIN or top_share >= COLLAPSE_TOP_SHARE),
        "top_class_share": top_share,
        "median_margin_trig": quantile(m_trig, 0.5) if n_nt else float("nan"),
        "median_abs_nonlinearity": quantile((m_trig - linear).abs(), 0.5) if n_nt else float("nan"),
    }


def _check_base_margins(model: Any, logits: Callable[[list[str]], Tensor], texts: list[str], trig_texts: list[str],
                        clean0: Tensor, trig0: Tensor, head: str = "trained", limit: int = 64) -> dict[str, Any]:
    """Compare k = 0 logits, on a few rows, with PEFT switching the same parts off by its own
    flags: every LoRA layer disabled (head as trained), or the whole adapter
    (``disable_adapter``) when the head was scaled too."""
    sub_c, sub_t = texts[:limit], trig_texts[:limit]
    if head == "scaled":
        disable = getattr(model, "disable_adapter", None)
        if disable is None:
            return {"ok": None, "why": "the model has no disable_adapter(); not checked"}
        how = "logits under scaled_adapter(model, 0, head='scaled') vs the same model with PEFT's disable_adapter()"
        with disable():
            base_c, base_t = logits(sub_c), logits(sub_t)
    else:
        from peft.tuners.lora import LoraLayer

        layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
        how = "logits under scaled_adapter(model, 0) vs the same model with every PEFT LoRA layer disabled"
        saved = [(m, m.disable_adapters) for m in layers]
        try:
            for m, _ in saved:
                m.enable_adapters(False)
            base_c, base_t = logits(sub_c), logits(sub_t)
        finally:
            for m, was_disabled in saved:
                m.enable_adapters(not was_disabled)
    diff = max(float((base_c - clean0[: len(sub_c)]).abs().max()) if sub_c else 0.0,
               float((base_t - trig0[: len(sub_t)]).abs().max()) if sub_t else 0.0)
    scale = max(float(base_c.abs().max()) if sub_c else 1.0, 1.0)
    return {"ok": diff <= 1e-4 * scale, "max_abs_diff": diff, "rows_checked": len(sub_c) + len(sub_t), "how": how}


def _describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    from spectra.provenance import content_hash

    p = Path(path)
    if not p.is_dir():
        return {"path": str(path)}
    files = {f.name: content_hash(f) for f in sorted(p.iterdir())
             if f.is_file() and f.suffix in (".json", ".safetensors")}
    return {"path": str(p.resolve()), "files": files}
