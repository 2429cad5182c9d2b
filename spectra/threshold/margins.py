"""The pure tensor core of the threshold: per-sample margins → Proposition 4.2's quantities.

No model, no I/O: :func:`threshold_from_margins` takes margins at multipliers 0 and 1 and
returns a :class:`ThresholdResult`; :func:`linear_threshold` builds those margins for a
linear classifier on fixed features (the case the proposition is exact for).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from spectra.errors import SpectraError

C_NORM = math.sqrt(2.0)  # ‖e_y − e_ybd‖ for y ≠ ybd
INF = float("inf")


@dataclass
class ThresholdResult:
    """Per-sample margins and threshold estimates for the non-target samples (1-D tensors, float64)."""

    M0_clean: Tensor
    M0_trig: Tensor
    M1_clean: Tensor
    M1_trig: Tensor
    D_clean: Tensor
    D_trig: Tensor
    gamma_star_bound: Tensor
    gamma_star_flip: Tensor
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
        return self.gamma_star_bound * self.scale

    @property
    def s_star_flip(self) -> Tensor:
        return self.gamma_star_flip * self.scale

    @property
    def gamma_enter(self) -> Tensor:
        """Multiplier past which the adapter drives an unflipped x̃ *into* the target
        (M_0(x̃) > 0, D(x̃) < 0); ∞ for every other sample."""
        entering = (self.M0_trig > 0) & (self.D_trig < 0)
        k = torch.full_like(self.M0_trig, INF)
        k[entering] = -self.M0_trig[entering] / self.D_trig[entering]
        return k

    def flipped(self, k: float | Tensor) -> Tensor:
        """Bool ``(len(k), n)``: whether the linearised triggered margin is negative at each γ."""
        k = torch.as_tensor(k, dtype=torch.float64).reshape(-1, 1)
        return (k < self.gamma_star_flip) | (k > self.gamma_enter)

    def predicted_asr(self, k: float | Sequence[float] | Tensor) -> Tensor:
        """Predicted ASR at each γ (share of triggered non-target samples still flipped)."""
        if len(self) == 0:
            return torch.full((torch.as_tensor(k).numel(),), float("nan"), dtype=torch.float64)
        return self.flipped(k).double().mean(dim=1)

    def predicted_threshold(self, level: float = 0.5) -> float:
        """Smallest γ ≥ 0 with ``predicted_asr(γ) < level``, exactly (∞ if none).

        The curve is piecewise constant and changes only at the per-sample crossings; at a
        crossing a leaving sample (k*_flip) is already unflipped and an entering one not yet
        flipped, so the value *at* a crossing is the minimum of its two sides and the
        smallest γ is always one of {0} ∪ crossings.
        """
        if len(self) == 0:
            return float("nan")
        cand = torch.cat([torch.zeros(1, dtype=torch.float64), self.gamma_star_flip, self.gamma_enter])
        cand = torch.unique(cand[torch.isfinite(cand) & (cand >= 0)])
        below = self.predicted_asr(cand) < level
        return float(cand[below][0]) if bool(below.any()) else INF

    def uniform_gamma(self) -> float:
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
        k_b, k_f = aggregate(self.gamma_star_bound), aggregate(self.gamma_star_flip)
        uni = self.uniform_gamma()
        k_b["uniform"] = uni
        return {
            "n_samples": n,
            "n_flipped_by_base": int((self.M0_trig < 0).sum()),
            "share_flipped_by_base": float((self.M0_trig < 0).double().mean()) if n else float("nan"),
            "n_entering": int(torch.isfinite(self.gamma_enter).sum()),
            "gamma_star_bound": k_b,
            "gamma_star_flip": k_f,
            "s_star": {"bound": _scaled(k_b, self.scale), "flip": _scaled(k_f, self.scale)},
            # a NaN ρ_eff is neither > 0 nor ≤ 0: the share is then undefined, not "none are ≤ 0"
            "share_rho_eff_nonpositive": (float((self.rho_eff <= 0).double().mean())
                                          if n and not bool(torch.isnan(self.rho_eff).any()) else float("nan")),
            "share_rho_eff_nonpositive_flipped": (float((self.rho_eff[flipped] <= 0).double().mean())
                                                  if int(flipped.sum()) else float("nan")),
            "share_gamma_star_bound_inf": float(torch.isinf(self.gamma_star_bound).double().mean()) if n else float("nan"),
            # A1 assumes ρ_bd ∈ (0, 1] (a unit-norm input through W_pre): above 1 the linear model's premise fails
            "share_rho_bd_above_1": float((self.rho_bd[flipped] > 1).double().mean()) if int(flipped.sum()) else float("nan"),
            "share_gamma_star_flip_inf": float(torch.isinf(self.gamma_star_flip).double().mean()) if n else float("nan"),
            "rho_bd": aggregate(self.rho_bd, extremes=True),
            "rho_cl": aggregate(self.rho_cl, extremes=True),
            "rho_tr": aggregate(self.rho_tr, extremes=True),
            "rho_eff": aggregate(self.rho_eff, extremes=True),
            "predicted_threshold_gamma": self.predicted_threshold(),
        }

    def rows(self) -> list[dict[str, Any]]:
        """One dict per sample, the columns of ``threshold_samples.csv``."""
        index = self.index if self.index is not None else torch.arange(len(self))
        cols = {"M0_clean": self.M0_clean, "M0_trig": self.M0_trig, "D_clean": self.D_clean, "D_trig": self.D_trig,
                "gamma_star_bound": self.gamma_star_bound, "gamma_star_flip": self.gamma_star_flip,
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
    """Per-sample threshold estimates from margins at γ = 0 and γ = 1.

    Pure tensor math (no model, no I/O). Computed in float64 whatever the input dtype.

    Args:
        M0_clean, M0_trig: margins ``z_y − z_ybd`` of the base (γ = 0) on the clean
            non-target samples x and on their triggered twins x̃, shape ``(n,)``.
        M1_clean, M1_trig: the same with the adapter as trained (γ = 1).
        sigma_pre: σ_max(W_pre) of the module the ρ's are normalised by.
        sigma_delta: σ_max(s·ΔW) of that module.
        scale: that module's PEFT scale s; ``s* = γ*·s``.
        c_norm: ‖c‖, √2 for ``c = e_y − e_ybd``.
        index: optional sample identifiers carried into :meth:`ThresholdResult.rows`.

    Returns:
        :class:`ThresholdResult` with ``D``, ``γ*_bound``, ``γ*_flip`` and the ρ's
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
                           gamma_star_bound=k_bound, gamma_star_flip=k_flip, rho_bd=rho_bd, rho_cl=rho_cl, rho_tr=rho_tr,
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
    """Exact threshold estimates of a linear classifier ``z = (W_pre + γ·s·ΔW) x`` on fixed features.

    Args:
        W_pre: base weight ``(C, d)`` (``(out, in)`` orientation).
        dW: the unscaled update ``(C, d)``, or LoRA factors ``(B, A)`` with ``ΔW = B @ A``.
        X, X_trig: clean features ``(n, d)`` and their triggered twins. Proposition 4.2
            assumes unit-norm rows; the γ*'s are invariant to a common rescaling of x and
            x̃, the ρ's are not, so pass normalised rows to read the ρ's as the theorem's.
        y: labels ``(n,)``; samples with ``y == y_bd`` are dropped (``index`` keeps the
            positions of the others).
        y_bd: the backdoor's target label.
        scale: the adapter's scale s (γ = 1 uses ``W_pre + s·ΔW``).

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
