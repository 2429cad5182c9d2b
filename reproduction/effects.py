"""What each part of RoRA does: paired differences (same attack, poisoned base and seed), with intervals.

A component's effect is the difference it makes to one run: +CI against LoRA trained with the
same seed on the same base, Pt against the very adapter it rescaled. Each effect is a mean of
such paired differences in ASR and in CA (points), with a Student-t 95 % interval and a
bootstrap one over the pairs, and says whether the two sides were trained at the same learning
rate — a difference across rates measures the rate too. The matched-lr ablation
(``reproduce.py run --plan ablation``) fills the cells this table marks as missing.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from spectra.study.tables import Results, t975

#: effect → (treated, control, matched lr?); a side is (method, learning rate, where its evaluation is)
EFFECTS: tuple[tuple[str, tuple[str, float, str], tuple[str, float, str]], ...] = (
    ("CI, at 2e-4", ("lora+ci", 2e-4, "new"), ("lora", 2e-4, "new")),
    ("Tr, at 2e-4", ("lora+tr", 2e-4, "new"), ("lora", 2e-4, "new")),
    ("CI + Tr, at 2e-4", ("rora", 2e-4, "new-before-rescale"), ("lora", 2e-4, "new")),
    ("CI, at 2e-3", ("lora+ci", 2e-3, "new"), ("lora", 2e-3, "new")),
    ("Tr, at 2e-3", ("lora+tr", 2e-3, "new"), ("lora", 2e-3, "new")),
    ("CI + Tr, at 2e-3", ("rora", 2e-3, "new-before-rescale"), ("lora", 2e-3, "new")),
    ("Pt (top 3 blocks, match) on LoRA, 2e-4", ("lora", 2e-4, "pt"), ("lora", 2e-4, "new")),
    ("Pt (top 3 blocks, match) inside RoRA, 2e-3", ("rora", 2e-3, "new"), ("rora", 2e-3, "new-before-rescale")),
    ("lr 2e-3 against 2e-4, LoRA", ("lora", 2e-3, "new"), ("lora", 2e-4, "new")),
    ("RoRA at its 2e-3 against LoRA at its 2e-4 (the study's headline, rates differ)",
     ("rora", 2e-3, "new"), ("lora", 2e-4, "new")),
)
BOOTSTRAP = 2000
#: fewer pairs than this get the Student-t interval alone: a percentile bootstrap of a handful of
#: values under-covers, and more so where several differences are exactly 0 (Pt left the adapter as it was)
MIN_BOOTSTRAP = 10


def _evaluation(doc: dict[str, Any], where: str) -> dict[str, Any] | None:
    if where == "pt":
        return (doc.get("pt_alone") or {}).get("eval")
    return (doc.get("eval") or {}).get(where)


def _index(results: Results) -> dict[tuple[str, float, str, int, int], dict[str, Any]]:
    """MiniLM fine-tuning runs of the study's own recipe by (method, lr, attack, base, seed)."""
    out = {}
    for doc in results.docs.values():
        run = doc.get("run") or {}
        if run.get("kind") != "finetune" or run.get("model", "minilm") != "minilm" or run.get("variant"):
            continue
        if doc.get("lr") is None:
            continue
        key = (run["method"].replace("-", "+"), round(float(doc["lr"]), 10), run["attack"], run["base_seed"],
               run["seed"])
        out.setdefault(key, doc)
    return out


def _interval(diffs: list[float], seed: int = 0) -> tuple[float, tuple[float, float], tuple[float, float]]:
    """Mean, Student-t 95 % interval, bootstrap 95 % interval (percentile) of paired differences."""
    import random

    m = statistics.mean(diffs)
    if len(diffs) < 2:
        return m, (m, m), (m, m)
    half = t975(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    rng = random.Random(seed)
    boots = sorted(statistics.mean(rng.choices(diffs, k=len(diffs))) for _ in range(BOOTSTRAP))
    return m, (m - half, m + half), (boots[int(0.025 * BOOTSTRAP)], boots[int(0.975 * BOOTSTRAP) - 1])


def effects(results: Results) -> list[dict[str, Any]]:
    """One row per effect: the pairs found, and the mean paired ASR and CA differences with intervals."""
    index = _index(results)
    rows = []
    for name, (tm, tlr, tw), (cm, clr, cw) in EFFECTS:
        pairs = []
        for (method, lr, attack, base, seed), doc in index.items():
            if method != tm or lr != round(tlr, 10):
                continue
            control = index.get((cm, round(clr, 10), attack, base, seed))
            treated, ref = _evaluation(doc, tw), _evaluation(control, cw) if control else None
            if treated and ref:
                pairs.append((attack, base, seed, 100 * (treated["asr"] - ref["asr"]), 100 * (treated["ca"] - ref["ca"]),
                              _committed_base(doc) and _committed_base(control)))
        row: dict[str, Any] = {"effect": name, "matched lr": tlr == clr, "pairs": len(pairs),
                               "attacks": sorted({p[0] for p in pairs}),
                               "by attack": {a: (statistics.mean(p[3] for p in pairs if p[0] == a),
                                                 sum(1 for p in pairs if p[0] == a)) for a in sorted({p[0] for p in pairs})},
                               "unchecked base": sum(1 for p in pairs if not p[5])}
        if pairs:
            row["asr"] = _interval([p[3] for p in pairs])
            row["ca"] = _interval([p[4] for p in pairs])
        rows.append(row)
    return rows


def _committed_base(doc: dict[str, Any]) -> bool:
    """Whether a run trained on the committed poisoned base: the study's own tiers did; an ablation run
    (tier 6, a later session) did when the base it rebuilt evaluated identically (``base_rebuilt``)."""
    if (doc.get("run") or {}).get("tier") != 6:
        return True
    return bool((doc.get("base_rebuilt") or {}).get("identical"))


def _by_attack(row: dict[str, Any]) -> str:
    return ", ".join(f"{a} {m:+.1f} ({n})" for a, (m, n) in row.get("by attack", {}).items()) or "—"


def _fmt(stat: tuple[float, tuple[float, float], tuple[float, float]] | None, n: int) -> str:
    if stat is None:
        return "—"
    m, t, b = stat
    if n < 2:
        return f"{m:+.1f} (one pair)"
    if n < MIN_BOOTSTRAP:  # a percentile bootstrap of 2–4 values has a handful of distinct means: not an interval
        return f"{m:+.1f} [t {t[0]:+.1f}, {t[1]:+.1f}]"
    return f"{m:+.1f} [t {t[0]:+.1f}, {t[1]:+.1f}; bootstrap {b[0]:+.1f}, {b[1]:+.1f}]"


def effects_section(results: Results, pt_grid: list[dict[str, Any]] | None = None) -> str:
    """The page's section "What each part of RoRA does", generated from the paired runs and the Pt grid
    (:mod:`reproduction.pt_grid`)."""
    from reproduction.pt_grid import ABLATION_GROUP, grid_effects, pt_grid_section

    rows = effects(results)
    # Pt at every depth and mode, on the ablation's adapters whose weights were on disk, rate by rate: the
    # same adapter before and after, so the rate is matched by construction (users' recipes: the grid below)
    for g in grid_effects(pt_grid or []):
        if g["group"].startswith(ABLATION_GROUP):
            rows.append({"effect": f"Pt ({g['depth']}, {g['mode']}) on {g['group']}", "matched lr": True,
                         "pairs": g["adapters"], "attacks": [], "asr": g["asr"], "ca": g["ca"],
                         "by attack": g["by attack"]})
    lines = ["## What each part of RoRA does (paired differences)\n",
             "Each row compares runs that differ in one thing — the same attack, poisoned base and fine-tuning seed "
             "— or, for Pt, the same adapter before and after it. Differences in points (treated − control), the "
             "mean with a Student-t 95 % interval and, from 5 pairs on, a bootstrap one over the pairs. An effect "
             "measured across two learning rates also measures the rate; the matched-lr ablation (`python scripts/reproduce.py run "
             "--plan ablation`) fills the rows still missing. Pairs are pooled over the two attacks (and the three "
             "bases): the interval treats them as one more source of spread, and the 'by attack' column splits the "
             "mean ΔASR (pairs). The Pt rows by depth and mode come from the Pt grid (below), over the ablation's "
             "adapters whose weights were on disk.\n",
             "| effect | same lr | pairs | ΔASR (points) | ΔASR by attack | ΔCA (points) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['effect']} | {'yes' if r['matched lr'] else '**no**'} | {r['pairs']} | "
                     f"{_fmt(r.get('asr'), r['pairs'])} | {_by_attack(r)} | {_fmt(r.get('ca'), r['pairs'])} |")
    clear = [r for r in rows if r["pairs"] >= 2 and r["matched lr"] and (r["asr"][1][1] < 0 or r["asr"][1][0] > 0)]
    lines += ["", "Effects on ASR whose Student-t interval excludes 0 at a matched rate: "
              + (", ".join(f"{r['effect']} ({r['asr'][0]:+.1f})" for r in clear) or "none yet") + ".\n",
              rebuilt_bases_note(results), pt_grid_section(pt_grid or [])]
    return "\n".join(lines)


def rebuilt_bases_note(results: Results) -> str:
    """Whether the ablation's runs (tier 6) and the study's older ones it pairs them with share a base:
    the poisoned weights are not committed, so a later session rebuilds a base from its recipe and
    compares the rebuilt base's held-out evaluation with the committed one (``base_rebuilt``)."""
    runs = [d for d in results.docs.values() if (d.get("run") or {}).get("tier") == 6
            and (d.get("run") or {}).get("kind") == "finetune"]
    checked = [d for d in runs if "base_rebuilt" in d]
    if not runs:
        return ""
    differ = sorted(d["id"] for d in checked if not d["base_rebuilt"].get("identical"))
    compared = sorted({k for d in checked for k in d["base_rebuilt"].get("compared", [])})
    text = (f"Same base across sessions: the poisoned weights are not committed, so the ablation's runs trained on "
            f"bases rebuilt from their recipe and seed. {len(checked)} of its {len(runs)} runs record the check; ")
    if not checked:
        return text + "none can say it is the committed base.\n"
    text += (f"the rebuilt base's held-out evaluation equals the committed one in every compared number "
             f"({', '.join(compared)}) on {len(checked) - len(differ)} of {len(checked)}")
    if differ:
        text += f"; it **differs** for {', '.join(differ)}, whose pairs with older runs are not same-base pairs"
    return text + ".\n"


#: pairs per attack and rate in the ablation's design (3 seeds on base 0, one on bases 1 and 2)
DESIGN_PAIRS = 5


def matched_lr_verdict(results: Results) -> tuple[str, str, str, str, str]:
    """(claim, paper, ours, verdict, rule) for what CI + Tr add at a learning rate LoRA shares — the
    study's own RoRA-vs-LoRA comparison trains them at different rates (2e-3 against 2e-4)."""
    rows = {r["effect"]: r for r in effects(results)}
    claim = "CI + Tr lower ASR against LoRA trained at the same learning rate (matched-lr ablation)"
    paper_text = ("Table 5 credits CI, Tr and Pt with RoRA's drop; its rows are trained at their own picked rates, "
                  "so the rate is not held fixed")
    rule = ("paired differences (same attack, base, seed) of CI + Tr before Pt against LoRA, at 2e-4 and at 2e-3: "
            "reproduces when the Student-t 95 % interval of ΔASR lies below 0 at both rates, partly at one, does not "
            "at neither; needs ≥ 2 pairs at each rate; a close call when an interval's upper bound — the one the "
            "rule reads — lies within 1 point of 0")
    parts, flags, close, thin, unchecked = [], [], [], [], 0
    for rate in ("2e-4", "2e-3"):
        r = rows[f"CI + Tr, at {rate}"]
        if r["pairs"] < 2:
            parts.append(f"at {rate}: {r['pairs']} pair(s)")
            continue
        mean, (lo, hi), _ = r["asr"]
        parts.append(f"at {rate}: ΔASR {mean:+.1f} points [t {lo:+.1f}, {hi:+.1f}] over {r['pairs']} pairs "
                     f"({', '.join(r['attacks'])})")
        flags.append(hi < 0)
        unchecked += r["unchecked base"]
        if abs(hi) < 1.0:
            close.append(f"at {rate} the interval's upper bound is {hi:+.1f}")
        if r["pairs"] < 2 * DESIGN_PAIRS:
            thin.append(f"{r['pairs']} of {2 * DESIGN_PAIRS} pairs at {rate}")
    ours = "; ".join(parts)
    if len(flags) < 2:
        return claim, paper_text, ours, "not measured yet", rule
    verdict = "reproduces" if all(flags) else "partly" if any(flags) else "does not reproduce"
    marks = ([f"preliminary: {', '.join(thin)}"] if thin else []) + ([f"close call: {'; '.join(close)}"] if close
                                                                      else [])
    if unchecked:  # an ablation run paired with an older one on a base not shown to be the committed one
        marks.append(f"{unchecked} pair(s) on a rebuilt base not checked against the committed one")
    return claim, paper_text, ours, verdict + (f" ({'; '.join(marks)})" if marks else ""), rule
