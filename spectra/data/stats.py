"""Confidence intervals for proportions and their differences (pure Python, no torch)."""

from __future__ import annotations

import math


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
