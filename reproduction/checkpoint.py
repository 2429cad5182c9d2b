"""Does the poisoned checkpoint move LoRA's ASR more than the fine-tuning seed does?

A one-way random-effects ANOVA over LoRA runs grouped by poisoned base (base 0 with its three
seeds, bases 1 and 2 with one each): ASR_ij = μ + b_i + e_ij, Var(b) = σ²_base, Var(e) = σ²_seed.
The between-base and within-base mean squares are independent, E[MS_within] = σ²_seed and
E[MS_between] = σ²_seed + n₀·σ²_base, with n₀ = (N − Σn_i²/N)/(k − 1) (Searle, Casella &
McCulloch, *Variance Components*, §3.6). So F = MS_between / MS_within is (1 + n₀ρ)·F(k−1, N−k)
for ρ = σ²_base/σ²_seed — exactly when the groups are balanced, approximately here — which gives
ρ's interval. An earlier reading took the spread over bases (seed 0) against the spread over
seeds (base 0); base 0 seed 0 sat in both, so the two variances were not independent.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from spectra.data.stats import f_quantile
from spectra.study.plan import BASE_SEEDS, SEEDS
from spectra.study.tables import Results

CLAIM = "whether the backdoor survives LoRA depends on the poisoned checkpoint (not the paper's claim)"
PAPER = "one poisoned base per setting; an independent reproduction found the outcome depends on it"
RULE = ("a one-way random-effects ANOVA of LoRA's ASR over poisoned bases (base 0's three seeds, one seed on each "
        "other base): F = MS_between / MS_within is (1 + n₀·σ²_base/σ²_seed)·F(k − 1, N − k), which gives a 95 % "
        "interval for σ²_base/σ²_seed. Reproduces when it excludes 0 on both attacks; partly on one; inconclusive "
        "when it includes 0 everywhere")


def variance_components(groups: dict[Any, list[float]]) -> dict[str, float] | None:
    """σ²_base/σ²_seed with its 95 % interval from ASR values grouped by base (None when there is no
    within-base spread or fewer than two bases)."""
    values = [v for g in groups.values() for v in g]
    k, n = len(groups), len(values)
    if k < 2 or n - k < 1:
        return None
    grand = statistics.mean(values)
    ss_between = sum(len(g) * (statistics.mean(g) - grand) ** 2 for g in groups.values())
    ss_within = sum((v - statistics.mean(g)) ** 2 for g in groups.values() for v in g)
    df_b, df_w = k - 1, n - k
    if ss_within <= 0:
        return None
    f = (ss_between / df_b) / (ss_within / df_w)
    n0 = (n - sum(len(g) ** 2 for g in groups.values()) / n) / df_b
    hi_q, lo_q = f_quantile(0.975, df_b, df_w), f_quantile(0.025, df_b, df_w)
    return {"F": f, "n0": n0, "df_between": df_b, "df_within": df_w, "ratio": max(0.0, (f - 1) / n0),
            "lo": max(0.0, (f / hi_q - 1) / n0), "hi": max(0.0, (f / lo_q - 1) / n0), "f_needed": hi_q,
            "sd_within": math.sqrt(ss_within / df_w)}


def checkpoint_reading(results: Results) -> dict[str, Any]:
    """The verdict's parts: ``ours`` (numbers per attack), ``verdict`` (bare), ``preliminary`` (or None),
    ``unconverged`` (runs behind it that had not converged); ``verdict`` is "not measured yet" until
    both attacks have two bases and a within-base spread."""
    parts, found, unconverged = [], [], 0
    for a in ("badnet", "insent"):
        cell = results.cell("LoRA", a, base_seeds=BASE_SEEDS, seeds=SEEDS)
        groups: dict[int, list[float]] = {}
        for run_id, v in zip(cell.ids, cell.values, strict=True):
            groups.setdefault(results.docs[run_id]["run"]["base_seed"], []).append(100 * v["asr"])
        vc = variance_components(groups)
        if vc is None:
            parts.append(f"{a}: {len(groups)} base(s) so far")
            continue
        unconverged += cell.not_converged
        found.append((len(groups), vc["lo"] > 0))
        shown = "; ".join(f"base {b}: {', '.join(f'{x:.1f}' for x in g)}" for b, g in sorted(groups.items()))
        parts.append(f"{a}: LoRA ASR % ({shown}); F = {vc['F']:.1f} on ({vc['df_between']}, {vc['df_within']}) df, "
                     f"σ²_base/σ²_seed ≈ {vc['ratio']:.1f}, 95 % interval [{vc['lo']:.1f}, {vc['hi']:.1f}] "
                     f"(excluding 0 needs F > {vc['f_needed']:.1f})")
    if len(found) < 2:
        return {"ours": "; ".join(parts), "verdict": "not measured yet", "preliminary": None, "unconverged": 0}
    fewest = min(k for k, _ in found)
    flags = [flag for _, flag in found]
    verdict = (("reproduces" if all(flags) else "partly") if any(flags) else
               f"inconclusive at {fewest} bases (every interval includes 0)")
    return {"ours": "; ".join(parts), "verdict": verdict, "unconverged": unconverged,
            "preliminary": f"preliminary: {fewest} of {len(BASE_SEEDS)} bases" if fewest < len(BASE_SEEDS) else None}
