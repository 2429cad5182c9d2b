"""Confidence intervals for proportions and their differences (pure Python, no torch)."""

from __future__ import annotations

import math
from collections.abc import Callable


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / n``.

    Wilson (1927), "Probable inference, the law of succession, and statistical inference",
    JASA 22:209-212. Unlike the normal (Wald) interval it stays inside [0, 1] and keeps its
    coverage near 0 and 1 (an ASR of 100% still gets a lower bound below 1). ``z`` = 1.96
    gives a 95% interval. ``n = 0`` gives the uninformative ``(0.0, 1.0)``.

    >>> tuple(round(x, 3) for x in wilson_interval(8, 10))
    (0.49, 0.943)
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    if successes == 0:
        lo = 0.0
    if successes == n:
        hi = 1.0
    return (lo, hi)


def newcombe_interval(
    p1: float, ci1: tuple[float, float], p2: float, ci2: tuple[float, float]
) -> tuple[float, float]:
    """Newcombe's hybrid score interval for the difference ``p1 - p2``.

    Newcombe (1998), "Interval estimation for the difference between independent
    proportions: comparison of eleven methods", Statistics in Medicine 17:873-890,
    method 10: from each proportion's Wilson interval ``(l_i, u_i)``::

        lower = (p1 - p2) - sqrt((p1 - l1)^2 + (u2 - p2)^2)
        upper = (p1 - p2) + sqrt((u1 - p1)^2 + (p2 - l2)^2)

    It assumes independent samples. For Δ = CA − ASR the two share the non-target test
    texts (clean vs. triggered twin), so it is an approximation; positively correlated
    outcomes make it conservative (wider), negatively correlated ones optimistic.
    """
    (l1, u1), (l2, u2) = ci1, ci2
    d = p1 - p2
    lower = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    upper = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return (max(-1.0, lower), min(1.0, upper))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes §6.4)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def beta_regularized(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must lie in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):  # the continued fraction converges fast on this side
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _invert(cdf: Callable[[float], float], q: float, lo: float, hi: float) -> float:
    """The x in [lo, hi] with cdf(x) = q, by bisection (cdf increasing; hi is grown until it brackets q)."""
    while cdf(hi) < q:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if cdf(mid) < q else (lo, mid)
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2.0


def t_quantile(q: float, df: float) -> float:
    """The q-quantile of Student's t with ``df`` degrees of freedom (fractional df too, as Welch's).

    >>> round(t_quantile(0.975, 2), 3), round(t_quantile(0.975, 45), 3)
    (4.303, 2.014)
    """
    if not (0.0 < q < 1.0 and df > 0):
        raise ValueError(f"need 0 < q < 1 and df > 0, got q={q}, df={df}")
    if q < 0.5:
        return -t_quantile(1.0 - q, df)

    def cdf(t: float) -> float:  # P(T <= t) for t >= 0
        return 1.0 - 0.5 * beta_regularized(df / 2.0, 0.5, df / (df + t * t))
    return _invert(cdf, q, 0.0, 10.0)


def f_quantile(q: float, d1: float, d2: float) -> float:
    """The q-quantile of the F distribution with (d1, d2) degrees of freedom.

    >>> round(f_quantile(0.975, 2, 2), 3), round(f_quantile(0.95, 3, 10), 3)
    (39.0, 3.708)
    """
    if not (0.0 < q < 1.0 and d1 > 0 and d2 > 0):
        raise ValueError(f"need 0 < q < 1 and positive df, got q={q}, d1={d1}, d2={d2}")
    return _invert(lambda f: beta_regularized(d1 / 2.0, d2 / 2.0, d1 * f / (d1 * f + d2)), q, 0.0, 10.0)
