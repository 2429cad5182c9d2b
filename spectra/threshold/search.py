"""Where does ASR cross 50% as the LoRA scale grows? A search that costs a few hundred forward passes.

Proposition 4.2 (Luong & Chen 2026) linearises the triggered margin in the scale
multiplier γ from two points, γ = 0 and γ = 1: ``M_γ(x̃) ≈ M_0(x̃) + γ·D(x̃)``. A transformer
is not linear in the scale of its adapters — every adapted block feeds the next, so the
adapter's effect on the logits compounds with γ — and on a real poisoned MiniLM the
two-point line predicts k ≈ 150 where the measured crossing lies between 4 and 8.

:func:`search_crossing` measures instead of extrapolating, on a small seeded subsample of
the triggered non-target rows. Let ``g(k)`` be the median over those rows of the
*target-versus-rest* margin ``max_{c ≠ t} z_c − z_t`` at multiplier γ: a row counts
towards ASR exactly when its margin is negative, so ASR < 50% exactly when ``g(k) > 0``
(for an odd number of rows; the median of an even count averages the middle two). The
search brackets the root of ``g`` by doubling γ from 1 (or halving it when γ = 1 is already
past the crossing), then narrows the bracket by regula falsi in log k (Illinois variant),
and returns the log-linear interpolant inside the last bracket. Each step is one forward
pass over the subsample — typically 6–9 steps of 64 rows, against the full sweep's
(grid points × all rows).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

#: rows the search looks at (a seeded subsample of the triggered non-target rows)
SEARCH_ROWS = 64


@dataclass
class CrossingSearch:
    """The result of :func:`search_crossing`.

    Attributes:
        gamma: the estimated crossing (∞ when ``g`` stays ≤ 0 up to ``k_max``; 0 when ASR is
            already below the level at ``k_min``).
        bracket: the last ``(lo, hi)`` with ``g(lo) ≤ 0 < g(hi)`` (``None`` when none was found).
        evaluations: ``[(γ, g(γ), asr(γ))]`` in the order they were measured.
        rows: rows per evaluation; ``forward_passes`` = rows × evaluations.
    """

    gamma: float
    bracket: tuple[float, float] | None
    evaluations: list[tuple[float, float, float]] = field(default_factory=list)
    rows: int = 0

    @property
    def forward_passes(self) -> int:
        return self.rows * len(self.evaluations)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["forward_passes"] = self.forward_passes
        return d


def target_margins(logits: Any, target: int) -> Any:
    """``max_{c ≠ target} z_c − z_target`` per row (negative: the row is predicted as the target)."""
    import torch

    z = logits.to(torch.float64)
    others = z.clone()
    others[:, target] = -math.inf
    return others.max(dim=1).values - z[:, target]


def _median(values: Any) -> float:
    import torch

    v = torch.sort(values.reshape(-1)).values
    n = v.numel()
    return float(v[n // 2]) if n % 2 else float((v[n // 2 - 1] + v[n // 2]) / 2)


def search_crossing(margins_at: Callable[[float], Any], rows: int, *, gamma_start: float = 1.0,
                    gamma_min: float = 1 / 64, gamma_max: float = 1024.0, tolerance: float = 1.25,
                    max_evaluations: int = 14) -> CrossingSearch:
    """Find k where the median target-versus-rest margin ``g(k)`` turns positive (ASR < 50%).

    Args:
        margins_at: ``γ -> tensor of target-versus-rest margins`` of the subsample at multiplier γ
            (one forward pass; see :func:`margins_function`).
        rows: the subsample's size (recorded to count forward passes).
        gamma_start: the first multiplier tried (1 = the adapter as trained).
        gamma_min, gamma_max: the search gives up below / above these (returns 0 / ∞).
        tolerance: stop once the bracket's ``hi / lo`` is below this.
        max_evaluations: stop after this many forward passes over the subsample.
    """
    result = CrossingSearch(gamma=math.inf, bracket=None, rows=rows)

    def g(k: float) -> float:
        m = margins_at(k)
        value = _median(m)
        result.evaluations.append((float(k), value, float((m < 0).double().mean())))
        return value

    k = float(gamma_start)
    gk = g(k)
    if gk > 0:  # already past the crossing at gamma_start: halve until it is not
        hi, g_hi = k, gk
        while True:
            k /= 2
            if k < gamma_min:
                result.gamma = 0.0
                return result
            gk = g(k)
            if gk <= 0:
                lo, g_lo = k, gk
                break
            hi, g_hi = k, gk
    else:
        lo, g_lo = k, gk
        while True:
            k *= 2
            if k > gamma_max:
                return result  # no crossing up to gamma_max
            gk = g(k)
            if gk > 0:
                hi, g_hi = k, gk
                break
            lo, g_lo = k, gk
    # regula falsi in log γ, Illinois variant (halve the weight of an endpoint kept twice)
    side = 0
    while hi / lo > tolerance and len(result.evaluations) < max_evaluations:
        a, b = math.log(lo), math.log(hi)
        x = b - g_hi * (b - a) / (g_hi - g_lo) if g_hi != g_lo else (a + b) / 2
        x = min(max(x, a + 0.02 * (b - a)), b - 0.02 * (b - a))
        k = math.exp(x)
        gk = g(k)
        if gk > 0:
            hi, g_hi = k, gk
            if side == 1:
                g_lo /= 2
            side = 1
        else:
            lo, g_lo = k, gk
            if side == -1:
                g_hi /= 2
            side = -1
    result.bracket = (lo, hi)
    a, b = math.log(lo), math.log(hi)
    # the root of the straight line through the *measured* endpoints (the Illinois weights
    # only steer the search)
    g_a = next(v for kk, v, _ in reversed(result.evaluations) if kk == lo)
    g_b = next(v for kk, v, _ in reversed(result.evaluations) if kk == hi)
    result.gamma = math.exp(b - g_b * (b - a) / (g_b - g_a)) if g_b != g_a else math.sqrt(lo * hi)
    return result


def subsample_rows(n: int, rows: int = SEARCH_ROWS, seed: int = 0) -> list[int]:
    """A seeded choice of ``min(rows, n)`` positions out of ``n``, in increasing order."""
    if n <= rows:
        return list(range(n))
    return sorted(random.Random(f"spectra-search:{seed}").sample(range(n), rows))


def margins_function(model: Any, predict: Callable[[list[str]], Any], texts: Sequence[str], target: int,
                     head: str = "trained") -> Callable[[float], Any]:
    """``γ -> target-versus-rest margins`` of ``texts`` with every LoRA scale multiplied by γ."""
    from spectra.eval.scaling import scaled_adapter

    batch = list(texts)

    def at(k: float) -> Any:
        with scaled_adapter(model, k, head=head):
            return target_margins(predict(batch), target)

    return at
