"""Which audit numbers predict that a backdoor survives, validated on groups they were not fitted on.

Plain numpy, so the page regenerates anywhere the study's results are: AUROC (Mann–Whitney,
ties averaged), cluster-bootstrap intervals over trained adapters (the rows of one run — its
Pt stage, its γ points — are resampled together, never split), an L2-regularised logistic
regression fitted by Newton's method on standardised features, and leave-one-group-out
cross-validation where every score a test fold receives — the model's, the best single
feature's (chosen, with its direction, on the training folds), each fixed baseline's — comes
from rows the choice never saw.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: the few features the logistic model uses (strength, and the paper's two alignment readings)
MODEL_FEATURES = ("log_ratio_min", "log_ratio_median", "cos_median", "overlap_median")
#: how many bootstrap resamples an interval takes
BOOTSTRAP = 1000
#: the example policy's threshold: a module weaker than this (σ_pre/σ_Δ above it) is a finding
POLICY_MAX_RATIO = 100.0


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counting
    half; NaN when either class is absent."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    r = _ranks(np.concatenate([pos, neg]))
    return float((r[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank (vectorised: the bootstrap calls it thousands of times)."""
    order = np.argsort(x, kind="mergesort")
    _, tie_group, counts = np.unique(x[order], return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    ranks = np.empty(len(x))
    ranks[order] = ((last - counts + 1 + last) / 2)[tie_group]
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson on average ranks); NaN when either side is constant."""
    rx, ry = _ranks(np.asarray(x, dtype=float)), _ranks(np.asarray(y, dtype=float))
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def cluster_bootstrap(stat: Callable[[np.ndarray], float], groups: Sequence[str], n: int = BOOTSTRAP,
                      seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of ``stat(rows)`` over resamples of whole groups (``rows``: indices)."""
    names = sorted(set(groups))
    members = {g: np.flatnonzero(np.asarray(groups) == g) for g in names}
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        pick = rng.choice(len(names), size=len(names), replace=True)
        rows = np.concatenate([members[names[i]] for i in pick])
        v = stat(rows)
        if math.isfinite(v):
            values.append(v)
    if not values:
        return math.nan, math.nan
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


@dataclass
class Logistic:
    """A fitted logistic regression on standardised features."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def predict(self, X: np.ndarray) -> np.ndarray:
        z = self.intercept + ((X - self.mean) / self.scale) @ self.coef
        return 1 / (1 + np.exp(-np.clip(z, -60, 60)))

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "coef": self.coef.tolist(), "intercept": float(self.intercept)}


def fit_logistic(X: np.ndarray, y: np.ndarray, features: Sequence[str], l2: float = 1.0) -> Logistic:
    """Newton's method on the L2-penalised log-likelihood (the intercept is not penalised)."""
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    Z = np.column_stack([np.ones(len(X)), (X - mean) / scale])
    w = np.zeros(Z.shape[1])
    penalty = np.full(Z.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(100):
        p = 1 / (1 + np.exp(-np.clip(Z @ w, -60, 60)))
        grad = Z.T @ (p - y) + penalty * w
        H = Z.T @ (Z * (p * (1 - p))[:, None]) + np.diag(penalty + 1e-9)
        step = np.linalg.solve(H, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return Logistic(tuple(features), mean, scale, w[1:], float(w[0]))


def matrix(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> np.ndarray:
    return np.array([[float(r[n]) for n in names] for r in rows], dtype=float)


def best_single(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> tuple[str, float]:
    """The feature (and direction, +1 or −1) with the highest AUROC on ``rows``."""
    y = [bool(r["survives"]) for r in rows]
    best = ("", 1.0, -1.0)
    for n in names:
        a = auroc([float(r[n]) for r in rows], y)
        if math.isfinite(a) and max(a, 1 - a) > best[2]:
            best = (n, 1.0 if a >= 0.5 else -1.0, max(a, 1 - a))
    return best[0], best[1]


#: fixed scores, each a reading a user could apply without fitting anything
BASELINES: dict[str, Callable[[dict[str, Any]], float]] = {
    "constant (base rate)": lambda r: 0.0,
    f"example policy (a module with σ_pre/σ_Δ > {POLICY_MAX_RATIO:g})":
        lambda r: float(r["log_ratio_max"] > math.log10(POLICY_MAX_RATIO)),
    "σ_pre/σ_Δ, smallest (Figure 1)": lambda r: float(r["log_ratio_min"]),
    "σ_pre/σ_Δ, median (Figure 1)": lambda r: float(r["log_ratio_median"]),
    "max|cos| median (Figure 2)": lambda r: float(r["cos_median"]),
    "top-k overlap median (Tr's target)": lambda r: float(r["overlap_median"]),
}


def fit_model(rows: Sequence[dict[str, Any]], candidates: Sequence[str]) -> tuple[Logistic, float]:
    """The weights-only model: the single feature with the highest AUROC on ``rows``, turned into a
    probability by a one-feature logistic regression (it ranks adapters exactly as that feature
    does; the fit adds calibration). Returns the model and the feature's direction."""
    name, sign = best_single(rows, candidates)
    y = np.array([float(bool(r["survives"])) for r in rows])
    return fit_logistic(matrix(rows, [name]), y, [name]), sign


def grouped_cv(rows: Sequence[dict[str, Any]], key: str, candidates: Sequence[str],
               multi_features: Sequence[str] = MODEL_FEATURES) -> dict[str, Any]:
    """Leave one value of ``key`` out at a time. Out-of-fold scores for: the weights-only model
    (:func:`fit_model`: feature and fit chosen on the other folds), a logistic regression on
    ``multi_features`` (does a combination add anything?), the best single feature as a raw
    score (chosen with its direction on the other folds), and the fixed :data:`BASELINES`."""
    folds = sorted({str(r[key]) for r in rows})
    out = {name: np.full(len(rows), math.nan) for name in ("model", "multi", "single")}
    picks: list[str] = []
    for f in folds:
        test = [i for i, r in enumerate(rows) if str(r[key]) == f]
        train = [rows[i] for i, r in enumerate(rows) if str(r[key]) != f]
        ytr = np.array([float(bool(r["survives"])) for r in train])
        if len(set(ytr.tolist())) < 2:
            continue  # nothing to learn from one class: the fold is left unscored
        tests = [rows[i] for i in test]
        model, _ = fit_model(train, candidates)
        out["model"][test] = model.predict(matrix(tests, model.features))
        multi = fit_logistic(matrix(train, multi_features), ytr, multi_features)
        out["multi"][test] = multi.predict(matrix(tests, multi_features))
        name, sign = best_single(train, candidates)
        picks.append(name)
        out["single"][test] = [sign * float(r[name]) for r in tests]
    for name, fn in BASELINES.items():
        out[name] = np.array([fn(r) for r in rows])
    return {"key": key, "folds": folds, "scores": out, "single_picks": picks}


#: the groupings a predictor must hold on, each left out one value at a time
GROUPINGS = {"base": "poisoned base", "attack": "attack", "family": "method family", "lr": "learning rate"}
#: the claim bars: every grouping's interval above chance, and leave-one-base-out at least this
MIN_AUROC = 0.8
TARGET_AUROC = 0.9  # the target, reported beside the result
#: the share of surviving backdoors a proposed gate threshold may let pass (chosen on training folds)
FALSE_PASS_TARGET = 0.10
#: calibration bins of the out-of-fold probabilities
BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def fmt(point: float, ci: tuple[float, float]) -> str:
    if not math.isfinite(point):
        return "—"
    return f"{point:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def calibration_table(an: dict[str, Any]) -> list[tuple[str, int, float, float]]:
    """(bin, rows, mean predicted, observed share) of the leave-one-base-out probabilities."""
    p = an["cv"]["base"]["oof_model"]
    y = np.array([bool(r["survives"]) for r in an["A"]])
    out = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        sel = ~np.isnan(p) & (p >= lo) & ((p < hi) if hi < 1 else (p <= hi))
        if sel.any():
            out.append((f"{lo:.1f}–{hi:.1f}", int(sel.sum()), float(p[sel].mean()), float(y[sel].mean())))
    return out
