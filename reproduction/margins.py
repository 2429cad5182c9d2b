"""Close calls: where a verdict's rule compares a measured number with an edge, and that edge lies
inside the comparison's 95 % interval — the seeds' spread (or, for one-seed rows, the test set's)
could move the verdict across it, so the page says so beside it."""

from __future__ import annotations

import math
import statistics
from typing import Any

from spectra.study.recipe import ATTACKS as RECIPE_ATTACKS
from spectra.study.tables import Results, t975

#: the study's attacks, in the page's order (one home: the recipe)
ATTACKS = tuple(RECIPE_ATTACKS)


def _pair_key(results: Results, run_id: str) -> tuple[int, int] | None:
    """(poisoned base, fine-tuning seed) of a study run: what makes two runs a pair."""
    run = (results.docs.get(run_id) or {}).get("run") or {}
    return (run["base_seed"], run["seed"]) if "base_seed" in run and "seed" in run else None


def _edge_interval(results: Results, cells: Any, ref: Any, metric: str) -> tuple[float, float, float, str] | None:
    """(mean of row − ref — or of the row alone —, its standard error, degrees of freedom, how it was
    paired). Runs that share a base and seed are paired (the paired t); cells that do not pair run
    for run are compared with Welch's t. None without a spread to speak of."""
    x = {_pair_key(results, i): 100 * v[metric] for i, v in zip(cells.ids, cells.values, strict=True)}
    if ref is None:
        d = list(x.values())
        how = "t"
    else:
        y = {_pair_key(results, i): 100 * v[metric] for i, v in zip(ref.ids, ref.values, strict=True)}
        if None not in x and set(x) == set(y) and len(x) >= 2:
            d, how = [x[k] - y[k] for k in x], "paired t"
        else:
            (m1, s1), (m2, s2) = cells.stat(metric), ref.stat(metric)
            v1, v2 = s1 ** 2 / cells.n, s2 ** 2 / ref.n
            denom = (v1 ** 2 / (cells.n - 1) if cells.n > 1 else 0) + (v2 ** 2 / (ref.n - 1) if ref.n > 1 else 0)
            if denom <= 0:
                return None
            return m1 - m2, math.sqrt(v1 + v2), (v1 + v2) ** 2 / denom, "Welch t"
    if len(d) < 2:
        return None
    return statistics.mean(d), statistics.stdev(d) / math.sqrt(len(d)), len(d) - 1, how


def _close_call(results: Results, row: str, cells: dict[str, Any], ref: dict[str, Any] | None, offset: float,
                metric: str = "asr") -> str | None:
    """Where a rule compares ``row``'s mean ``metric`` (or its difference from ``ref``'s) with an edge
    (``offset``) and the edge lies inside that comparison's Student-t 95 % interval, say so: a verdict
    the seeds' spread could flip is read with that in mind, not hidden behind the fixed rule."""
    notes = []
    for a in ATTACKS:
        if not cells[a].n or (ref is not None and not ref[a].n):
            continue
        got = _edge_interval(results, cells[a], None if ref is None else ref[a], metric)
        if got is None:
            continue
        diff, se, df, how = got
        half = t975(df) * se
        if se > 0 and abs(diff - offset) < half:
            ref_mean = 0.0 if ref is None else ref[a].mean(metric)
            notes.append(f"{a} {row} {metric.upper()} {diff + ref_mean:.1f}% against the rule's edge "
                         f"{offset + ref_mean:.1f}%, inside its 95 % interval ± {half:.1f} ({how}, {_df(df)} df)")
    return "; ".join(notes) or None


def _df(df: float) -> str:
    """Degrees of freedom as printed: whole, or to one decimal where Welch's are fractional."""
    return f"{df:.0f}" if abs(df - round(df)) < 0.05 else f"{df:.1f}"


def close_calls(results: Results, edge: Any) -> str | None:
    """Close calls on every edge a verdict's rule has (one edge, or a list of them)."""
    if edge is None:
        return None
    notes = [_close_call(results, *e) for e in (edge if isinstance(edge, list) else [edge])]
    return "; ".join(n for n in notes if n) or None


def test_set_close_call(name: str, alone: dict[str, Any], fixed: dict[str, Any]) -> list[str]:
    """One seed per row: the drop's only interval is the test set's — Newcombe's for a difference of two
    Wilson-bounded proportions (seed spread not in it). Names each edge (ASR 30 points, CA −2) inside it."""
    from spectra.data.stats import newcombe_interval

    out = []
    for metric, edge in (("asr", 0.30), ("ca", -0.02)):
        ci_a, ci_f = alone.get(f"{metric}_ci"), fixed.get(f"{metric}_ci")
        if not (ci_a and ci_f):
            continue
        lo, hi = newcombe_interval(alone[metric], tuple(ci_a), fixed[metric], tuple(ci_f))
        gap = alone[metric] - fixed[metric] if metric == "asr" else fixed[metric] - alone[metric]
        lo, hi = (lo, hi) if metric == "asr" else (-hi, -lo)
        if lo < edge < hi:
            out.append(f"{name}'s {metric.upper()} {'drop' if metric == 'asr' else 'change'} {100 * gap:+.1f} "
                       f"has the rule's {100 * edge:+.0f} inside its test-set interval [{100 * lo:+.1f}, {100 * hi:+.1f}]")
    return out
