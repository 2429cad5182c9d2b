"""Figure 2's null: how far a LoRA update's leading singular vectors align with W_pre's top-k by chance."""

from __future__ import annotations

from typing import Any


def figure2_null(tables: list[list[dict[str, Any]]], dim: int = 384, k: int = 32, draws: int = 20000,
                 seed: int = 0) -> tuple[float, tuple[float, float], float] | None:
    """Figure 2 against a proper null: the max |cos| of a fixed direction with a random orthonormal
    k-frame in R^dim is, by symmetry, the largest |coordinate| among k of a random unit vector; its
    95th percentile from ``draws`` samples. Returns the share of the runs' module cosines (left and
    right) above it, a bootstrap 95 % interval over runs, and the percentile (None without data)."""
    import numpy as np

    runs = [[c for m in t for c in (m.get("cos_max_left"), m.get("cos_max_right")) if c is not None] for t in tables]
    runs = [r for r in runs if r]
    if not runs:
        return None
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((draws, dim))
    null = np.abs(g[:, :k]).max(axis=1) / np.linalg.norm(g, axis=1)
    q95 = float(np.quantile(null, 0.95))
    above = [np.mean(np.asarray(r) > q95) for r in runs]
    share = float(np.mean(np.concatenate([np.asarray(r) > q95 for r in runs])))
    boot = [float(np.mean([above[i] for i in rng.integers(0, len(runs), len(runs))])) for _ in range(2000)]
    return share, (float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))), q95
