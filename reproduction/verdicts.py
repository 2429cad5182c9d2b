"""One verdict per claim of the paper, computed from the measured numbers with a stated rule.

Every :class:`Verdict` carries the paper's statement, our numbers, the rule that turns them
into "reproduces" / "partly" / "does not reproduce", and "not measured yet" while the runs
it needs are missing — so the page's reading can never outlive the numbers under it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from reproduction import paper
from reproduction.effects import matched_lr_verdict
from reproduction.margins import close_calls, test_set_close_call
from spectra.data.stats import wilson_interval
from spectra.study.plan import SEEDS, VARIANT_NAMES, study_plan
from spectra.study.recipe import ATTACKS as RECIPE_ATTACKS
from spectra.study.tables import Results, below_asr_bar, rescale_effect, within

#: the study's attacks, in the page's order (one home: the recipe)
ATTACKS = tuple(RECIPE_ATTACKS)


@dataclass
class Verdict:
    claim: str
    paper: str
    ours: str
    verdict: str
    rule: str


def _pct(x: float) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}%"


def _per_attack(results: Results, row: str) -> dict[str, Any]:
    return {a: results.cell(row, a, seeds=SEEDS) for a in ATTACKS}


def _count(flags: list[bool]) -> str:
    if all(flags):
        return "reproduces"
    return "partly" if any(flags) else "does not reproduce"


def verdicts(results: Results) -> list[Verdict]:
    """Every claim's verdict (in the page's order)."""
    out: list[Verdict] = []
    #: per verdict, the (name, cell) pairs its numbers come from: what its marks are read from
    reads: list[tuple[tuple[str, dict[str, Any]], ...]] = []
    #: per verdict, the ASR edge its rule compares a mean with: (row, its cells, reference cells or None, offset)
    edges: list[tuple[str, dict[str, Any], dict[str, Any] | None, float] | None] = []
    lora, fft = _per_attack(results, "LoRA"), _per_attack(results, "FFT")
    rora, before = _per_attack(results, "+CI+Tr+Pt (RoRA)"), _per_attack(results, "+CI+Tr")
    pt, ci, tr = _per_attack(results, "Pt alone (LoRA + Pt)"), _per_attack(results, "+CI"), _per_attack(results, "Tr alone")

    def have(*cells: dict[str, Any]) -> bool:
        return all(c[a].n for c in cells for a in ATTACKS)

    def asr(c: dict[str, Any], a: str) -> float:
        return c[a].mean("asr")

    def ca(c: dict[str, Any], a: str) -> float:
        return c[a].mean("ca")

    def ours(c: dict[str, Any], name: str) -> str:
        """What is measured so far, attack by attack (a verdict waits for both; the numbers need not)."""
        if not any(c[a].n for a in ATTACKS):
            return ""
        return "; ".join(f"{a}: {name} CA {_pct(ca(c, a))}, ASR {_pct(asr(c, a))} (n={c[a].n}"
                         + (f", {c[a].collapsed} collapsed" if c[a].collapsed else "") + ")"
                         if c[a].n else f"{a}: not run yet" for a in ATTACKS)

    reads.append((("LoRA", lora),))
    edges.append(("LoRA", lora, None, 80))
    out.append(Verdict(
        "LoRA fine-tuning on clean data leaves the backdoor in place",
        "LoRA ASR on CR 84–100% (BERT, RoBERTa, LLaMA; Table 2)", ours(lora, "LoRA"),
        _count([asr(lora, a) >= 80 and not lora[a].collapsed for a in ATTACKS]) if have(lora) else "not measured yet",
        "reproduces when LoRA's mean ASR is ≥ 80% (and no run collapsed) on both attacks; partly on one"))
    reads.append((("FFT", fft), ("LoRA", lora)))
    edges.append(("FFT", fft, lora, -10))
    out.append(Verdict(
        "full fine-tuning forgets more of the backdoor than LoRA",
        "FFT ASR on CR 20–46% against LoRA's 84–100% (BERT, RoBERTa); LLaMA's FFT keeps it (90–100%)",
        ours(fft, "FFT"),
        _count([asr(fft, a) <= asr(lora, a) - 10 for a in ATTACKS]) if have(fft, lora) else "not measured yet",
        "reproduces when FFT's mean ASR is at least 10 points below LoRA's on both attacks"))
    audits = [d.get("audit", {}) for d in results.runs("finetune", method="lora", seeds=SEEDS)]
    ratios = [a["ratio_median"] for a in audits if a.get("ratio_median")]
    cos_l = [a["cos_left_median"] for a in audits if a.get("cos_left_median") is not None]
    cos_r = [a["cos_right_median"] for a in audits if a.get("cos_right_median") is not None]
    chance = _chance(results)
    reads.append((("LoRA", lora),))
    edges.append(None)
    out.append(Verdict(
        "LoRA's updates are spectrally weak: σ_max(s·ΔW) ≪ σ_max(W_pre) (Figure 1)",
        "ratios far above 1 in every layer of BERT and RoBERTa",
        f"median σ_pre/σ_Δ per LoRA run: {', '.join(f'{r:.1f}' for r in ratios)}" if ratios else "",
        ("reproduces" if min(ratios) >= 5 else "partly" if min(ratios) > 1 else "does not reproduce")
        if ratios and have(lora) else "not measured yet",
        "reproduces when every LoRA run's median ratio is ≥ 5; partly when > 1"))
    v, txt = "not measured yet", ""
    from reproduction.figure2 import figure2_null

    null = figure2_null([a.get("modules_table") or [] for a in audits])
    if cos_l and cos_r and chance and null is not None:
        m_l, m_r = statistics.median(cos_l), statistics.median(cos_r)
        share, (lo, hi), q95 = null
        txt = (f"median max|cos| left {m_l:.3f}, right {m_r:.3f} over {len(cos_l)} LoRA run(s) (a random direction's "
               f"median {chance:.3f}); {100 * share:.0f} % of the module cosines exceed the 95th percentile of random "
               f"orthonormal frames ({q95:.3f}), 95 % interval {100 * lo:.0f}–{100 * hi:.0f} % (bootstrap over runs) "
               "against the 5 % chance gives")
        if have(lora):
            v = ("reproduces (weakly: above chance, not far above it)" if lo > 0.05 and min(m_l, m_r) < 2 * chance
                 else "reproduces" if lo > 0.05 else "does not reproduce")
    reads.append((("LoRA", lora),))
    edges.append(None)
    out.append(Verdict(
        "LoRA's leading singular vectors keep a distinctly non-zero alignment with W_pre's top-32 (Figure 2)",
        "low but distinctly non-zero cosines", txt, v,
        "a random-frame null (Monte Carlo over random orthonormal frames of the same size, k = 32 in R^384; "
        "isotropic, not a permutation of the data): reproduces when the share of module cosines above the "
        "null's 95th percentile is above the 5 % chance gives, its 95 % interval clear of 5 %; 'weakly' when the "
        "median max|cos| is also under twice a random direction's"))
    if have(rora, lora):
        flags = [asr(rora, a) <= 20 and ca(rora, a) >= ca(lora, a) - 2 and not rora[a].collapsed for a in ATTACKS]
        partly = [asr(rora, a) <= asr(lora, a) - 30 and not rora[a].collapsed for a in ATTACKS]
        v = "reproduces" if all(flags) else "partly" if any(flags) or any(partly) else "does not reproduce"
    else:
        v = "not measured yet"
    reads.append((("RoRA", rora), ("LoRA", lora)))
    edges.append([("RoRA", rora, None, 20), ("RoRA", rora, lora, -30), ("RoRA", rora, lora, -2, "ca")])
    out.append(Verdict(
        "RoRA removes the backdoor at little cost in clean accuracy",
        "RoRA ASR on CR 1.5–10%, CA within ~1 point of LoRA (Table 2)", ours(rora, "RoRA"), v,
        "reproduces when RoRA's mean ASR is ≤ 20%, its CA ≥ LoRA's − 2 points and no run collapsed, on both attacks; "
        "partly when ASR falls ≥ 30 points below LoRA's on some attack without collapse"))
    reads.append((("+CI", ci), ("LoRA", lora)))
    edges.append(("+CI", ci, lora, -10))
    out.append(Verdict(
        "CI alone already reduces ASR (Table 5, SST-2)", "below 25% in several cases", ours(ci, "+CI"),
        _count([asr(ci, a) <= asr(lora, a) - 10 for a in ATTACKS]) if have(ci, lora) else "not measured yet",
        "reproduces when +CI's mean ASR is ≥ 10 points below LoRA's on both attacks"))
    reads.append((("Tr alone", tr), ("LoRA", lora)))
    edges.append(("Tr alone", tr, lora, -10))
    out.append(Verdict(
        "Tr alone is not sufficient (Table 5, SST-2)", "ASR stays at 93–98% under InSent",
        ours(tr, "Tr alone"),
        _count([asr(tr, a) >= asr(lora, a) - 10 for a in ATTACKS]) if have(tr, lora) else "not measured yet",
        "reproduces when Tr alone's mean ASR is no more than 10 points below LoRA's on both attacks (at or above "
        "LoRA's counts: Tr alone leaves the backdoor)"))
    if have(pt, lora):
        v = _count([asr(pt, a) <= asr(lora, a) - 50 and not pt[a].collapsed for a in ATTACKS])
    else:
        v = "not measured yet"
    reads.append((("LoRA + Pt", pt), ("LoRA", lora)))
    edges.append(("LoRA + Pt", pt, lora, -50))
    out.append(Verdict(
        "raising LoRA's spectral strength (Pt) suppresses the backdoor (§5.3, Figure 3)",
        "ASR falls as s grows; very large s also costs CA", ours(pt, "LoRA + Pt"), v,
        "reproduces when Pt alone brings LoRA's mean ASR down by ≥ 50 points without collapse, on both attacks"))
    if have(rora, before, ci, tr, pt):
        best = [min(("+CI", ci), ("Tr alone", tr), ("+CI+Tr", before), ("Pt alone", pt), ("RoRA", rora),
                    key=lambda nc: nc[1][a].mean("asr") - nc[1][a].mean("ca"))[0] for a in ATTACKS]
        v = _count([b == "RoRA" for b in best])
        txt = "; ".join(f"{a}: highest Δ = {b}" for a, b in zip(ATTACKS, best))
    else:
        v, txt = "not measured yet", ""
    reads.append((("RoRA", rora), ("+CI+Tr", before), ("+CI", ci), ("Tr alone", tr), ("LoRA + Pt", pt)))
    edges.append(None)
    out.append(Verdict(
        "all three components together give the highest Δ (Table 5)",
        "the text: CI + Tr + Pt has the highest Δ 'across all cases'; its own Table 5 does not show that everywhere "
        "(RoBERTa BadNet: a two-component row 85.82 against 81.91 for all three)", txt, v,
        "reproduces when full RoRA has the highest mean Δ = CA − ASR among +CI, Tr alone, +CI+Tr, Pt alone and "
        "RoRA on both attacks"))
    out = [Verdict(v.claim, v.paper, v.ours, _marked(v.verdict, cells, close_calls(results, edge)), v.rule)
           for v, cells, edge in zip(out, reads, edges, strict=True)]
    return [*out, Verdict(*matched_lr_verdict(results)), _variants_verdict(results), _threshold_verdict(results),
            _checkpoint_verdict(results), _llama_verdict(results)]


#: Table 4's LoRA variants: page row name → the paper's key
VARIANTS = {name: key for key, name in VARIANT_NAMES.items()}


def _variants_verdict(results: Results) -> Verdict:
    """Table 4: RoRA on top of PiSSA, DoRA and OLoRA (one seed per row, base 0)."""
    claim = "RoRA on top of PiSSA, DoRA and OLoRA lowers their ASR too (Table 4)"
    drops = {model: [cols[a][key][1] - cols[a][f"{key}+rora"][1] for a in cols for key in VARIANTS.values()]
             for model, cols in paper.TABLE4_CR.items()}
    paper_text = "; ".join(f"{model}: ASR {min(d):.0f}–{max(d):.0f} points lower with RoRA" for model, d in drops.items())
    rule = ("reproduces when every variant + RoRA has an ASR ≥ 30 points below the variant's, at CA ≥ the variant's "
            "− 2 points and without collapse, on both attacks; partly when some do")
    parts, flags, close, unconverged, missing = [], [], [], 0, False
    for a in ATTACKS:
        pairs = []
        for name in VARIANTS:
            alone, fixed = results.cell(name, a, seeds=(0,)), results.cell(f"{name} + RoRA", a, seeds=(0,))
            if not (alone.n and fixed.n):
                missing = True
                continue
            unconverged += alone.not_converged + fixed.not_converged
            pairs.append(f"{name} {_pct(alone.mean('asr'))} → {_pct(fixed.mean('asr'))}")
            close += test_set_close_call(f"{a} {name}", alone.values[0], fixed.values[0])
            flags.append(fixed.mean("asr") <= alone.mean("asr") - 30 and fixed.mean("ca") >= alone.mean("ca") - 2
                         and not fixed.collapsed)
        if pairs:
            parts.append(f"{a}: " + ", ".join(pairs))
    ours = "; ".join(parts) + (" (ASR, one seed per row)" if parts else "")
    if missing or not flags:
        return Verdict(claim, paper_text, ours, "not measured yet", rule)
    return Verdict(claim, paper_text, ours, _with_marks(_count(flags), None, unconverged, "; ".join(close) or None),
                   rule)


def _marked(verdict: str, cells: tuple[tuple[str, dict[str, Any]], ...], close: str | None = None) -> str:
    """A verdict is read from 3 seeds of converged runs; until then it says what it rests on:
    the thinnest of the cells it reads ("preliminary: 1 of 3 RoRA seeds") and how many of
    their runs had not converged — never stated as final. ``close`` names a mean that sits
    within one standard error of its rule's edge."""
    if verdict == "not measured yet":
        return verdict
    name, n = min(((name, c[a].n) for name, c in cells for a in ATTACKS), key=lambda x: x[1])
    unconverged = sum(c[a].not_converged for _, c in cells for a in ATTACKS)
    return _with_marks(verdict, f"preliminary: {n} of {len(SEEDS)} {name} seeds" if n < len(SEEDS) else None,
                       unconverged, close)


def _with_marks(verdict: str, preliminary: str | None, unconverged: int, close: str | None = None) -> str:
    """``verdict (preliminary: …; N of its runs not converged; close call: …)``, or the bare verdict."""
    marks = ([preliminary] if preliminary else []) + ([f"{unconverged} of its runs not converged"] if unconverged else [])
    marks += [f"close call: {close}"] if close else []
    return f"{verdict} ({'; '.join(marks)})" if marks else verdict


# hidden width of each study model: the dimension of W_pre's right singular vectors for q/v projections
MODEL_WIDTH = {"minilm": 384, "smollm2": 576}
# transformer blocks per study model: Pt's top 3 are half of one and a tenth of the other
MODEL_BLOCKS = {"minilm": 6, "smollm2": 30}


def _chance(results: Results, model: str = "minilm") -> float | None:
    """max|cos| a random direction scores against W_pre's top k (the recipe's Tr k, which the audit also uses) in
    ``model``'s width (None before any audit)."""
    for doc in results.runs("finetune", method="lora", model=model):
        table = (doc.get("audit") or {}).get("modules_table") or []
        if table:
            from spectra.spectral import cos_random
            from spectra.study.recipe import Recipe

            return float(cos_random(MODEL_WIDTH[model], Recipe().top_k))
    return None


def llama_spectra(results: Results) -> str:
    """Figures 1–2 on SmolLM2's LoRA adapter beside MiniLM's, and what Pt (and, in RoRA, Tr) did there ('' before
    SmolLM2's LoRA adapter is audited)."""
    lora = next((d for d in results.runs("finetune", method="lora", model="smollm2", seeds=(0,))
                 if (d.get("audit") or {}).get("ratio_median")), None)
    if lora is None:
        return ""
    audit = lora["audit"]
    mini = [a["ratio_median"] for a in (d.get("audit") or {} for d in results.runs("finetune", method="lora"))
            if a.get("ratio_median")]
    text = (f"Figure 1 on SmolLM2's LoRA adapter ({audit.get('modules', '?')} modules): median σ_pre/σ_Δ "
            f"{audit['ratio_median']:.1f} (smallest {audit.get('ratio_min', math.nan):.1f})")
    if mini:
        text += f"; MiniLM's LoRA runs: {min(mini):.1f}–{max(mini):.1f}"
    chance = _chance(results, "smollm2")
    if audit.get("cos_right_median") is not None and chance:
        # right singular vectors live in the input (hidden) space for q_proj and v_proj alike, so one chance level
        text += (f". Figure 2: median max|cos| of ΔW's leading right singular vector with W_pre's top 32 is "
                 f"{audit['cos_right_median']:.3f}, against {chance:.3f} for a random direction in "
                 f"R^{MODEL_WIDTH['smollm2']}")
    pt = lora.get("pt_alone") or {}
    mult = pt.get("rescale") or {}
    if mult.get("multipliers") and pt.get("eval") and lora.get("eval", {}).get("new"):
        text += (f". Pt multiplied the scale of its {len(mult['multipliers'])} modules ({_blocks(mult['modules'])} "
                 f"of {MODEL_BLOCKS['smollm2']}) "
                 f"by {mult['multiplier_min']:.0f}–{mult['multiplier_max']:.0f}×, and LoRA's ASR went from "
                 f"{_pct(100 * lora['eval']['new']['asr'])} to {_pct(100 * pt['eval']['asr'])}")
    return text + "." + _llama_rora(results) + "\n"


def _llama_rora(results: Results) -> str:
    """What Tr and Pt did in SmolLM2's RoRA run ('' before it lands)."""
    rora = next((d for d in results.runs("finetune", method="rora", model="smollm2", seeds=(0,))), None)
    if rora is None:
        return ""
    text = ""
    audit = rora.get("audit_before_pt") or rora.get("audit") or {}
    if audit.get("cos_right_median") is not None:
        text += f" With Tr, RoRA's median max|cos| is {audit['cos_right_median']:.1e}"
    if effect := rescale_effect(rora):
        mult, before, after = effect
        text += ((";" if text else " RoRA's") + f" Pt multiplied the same modules by {mult['multiplier_min']:.0f}–"
                 f"{mult['multiplier_max']:.0f}×, and its ASR went from {_pct(100 * before['asr'])} "
                 f"(+CI+Tr) to {_pct(100 * after['asr'])} at CA {_pct(100 * before['ca'])} → {_pct(100 * after['ca'])}")
    return text + "." if text else ""


def _blocks(modules: list[str]) -> str:
    """'blocks 27–29' from module names that carry a block index (``layers.27.`` / ``layer.27.``)."""
    import re

    found = sorted({int(m.group(1)) for name in modules if (m := re.search(r"\blayers?\.(\d+)\.", name))})
    return f"blocks {found[0]}–{found[-1]}" if found else "top blocks"


def crossing_rows(results: Results) -> list[dict[str, Any]]:
    """Predicted vs measured crossing for every sweep run."""
    rows = []
    for doc in results.runs("sweep"):
        run = doc["run"]
        rows.append({"id": doc["id"], "attack": run["attack"], "method": run["method"], "base_seed": run["base_seed"],
                     "seed": run["seed"], "measured": doc.get("measured_crossing_gamma"),
                     "grid": doc.get("measured_threshold_gamma"), "linear": doc.get("predicted_threshold_gamma"),
                     "search": doc.get("search_threshold_gamma"),
                     "passes_search": (doc.get("forward_passes") or {}).get("search"),
                     "passes_sweep": (doc.get("forward_passes") or {}).get("sweep")})
    for r in rows:
        r["linear_within_2x"] = within(r["linear"], r["measured"])
        r["search_within_2x"] = within(r["search"], r["measured"])
    return rows


def _threshold_verdict(results: Results) -> Verdict:
    rows = [r for r in crossing_rows(results) if r["method"] == "lora"]
    ok = [r for r in rows if r["linear_within_2x"] is not None]
    if not ok:
        return Verdict("Proposition 4.2's threshold locates where LoRA starts to forget", "s* from ρ_bd/ρ_eff·σ_pre/σ_Δ",
                       "", "not measured yet", "share of LoRA runs whose linear prediction is within 2× of the "
                       "measured crossing: ≥ 80% reproduces, ≥ 50% partly")
    hits = sum(1 for r in ok if r["linear_within_2x"])
    share = hits / len(ok)
    lo, hi = wilson_interval(hits, len(ok))  # the share over runs is a proportion: Wilson's interval
    # skill over the obvious baseline: the one constant γ that lands within 2× of the most measured
    # crossings (chosen on these very runs, so the constant gets every benefit of the doubt)
    const, const_share = best_constant_gamma([r["measured"] for r in ok])
    v = "reproduces" if share >= 0.8 else "partly" if share >= 0.5 else "does not reproduce"
    if share <= const_share:
        v = f"does not reproduce (no skill over the constant γ = {const:.3g}, within 2× on {const_share:.0%})"
    planned = sum(1 for r in study_plan() if r.kind == "sweep" and r.method == "lora")
    marks = [f"preliminary: {len(ok)} of {planned} LoRA sweeps"] if len(ok) < planned else []
    edges = [e for e in (0.8, 0.5, const_share) if lo < e < hi]
    if edges:  # an edge the share's interval straddles: more runs could move the verdict across it
        marks.append("close call: " + ", ".join(f"{e:.0%}" for e in edges) + f" inside the share's 95 % interval "
                     f"{lo:.0%}–{hi:.0%}")
    if marks:  # read from every planned LoRA sweep; until then marked, never final
        v = f"{v} ({'; '.join(marks)})"
    return Verdict("Proposition 4.2's threshold locates where LoRA starts to forget",
                   "a threshold effect in s; RoRA reaches it at smaller s (Figure 3)",
                   f"linear (γ = 0 → 1) prediction within 2× of the measured crossing on {share:.0%} of "
                   f"{len(ok)} LoRA runs (Wilson 95 % {lo:.0%}–{hi:.0%}); the best constant γ = {const:.3g} on "
                   f"{const_share:.0%}", v,
                   "share of LoRA runs whose linear prediction is within 2× of the measured crossing: ≥ 80% "
                   "reproduces, ≥ 50% partly — and only above the share of the best constant γ (skill over the "
                   "baseline)")


def best_constant_gamma(measured: list[float]) -> tuple[float, float]:
    """The constant γ within 2× of the most measured crossings, and that share (candidates: the
    crossings themselves and their doubles/halves, where a best interval starts or ends)."""
    finite = [m for m in measured if m is not None and math.isfinite(m) and m > 0]
    if not finite:
        return math.nan, 0.0
    candidates = sorted({c * f for c in finite for f in (0.5, 1.0, 2.0)})
    best = max(candidates, key=lambda c: (sum(within(c, m) is True for m in finite), -abs(math.log(c))))
    return best, sum(within(best, m) is True for m in measured) / len(measured)


def _checkpoint_verdict(results: Results) -> Verdict:
    """Does the poisoned checkpoint move LoRA's ASR more than the fine-tuning seed does? (The
    issue's question, after an independent reproduction; the paper has one base per setting.)"""
    from reproduction.checkpoint import CLAIM, PAPER, RULE, checkpoint_reading

    r = checkpoint_reading(results)
    verdict = r["verdict"] if r["verdict"] == "not measured yet" else _with_marks(r["verdict"], r["preliminary"],
                                                                                   r["unconverged"])
    return Verdict(CLAIM, PAPER, r["ours"], verdict, RULE)


def _llama_verdict(results: Results) -> Verdict:
    """Table 2's LLaMA column on the LLaMA-architecture stand-in (SmolLM2-135M, BadNet, seed 0)."""
    claim = "on a LLaMA-architecture model too, LoRA keeps the backdoor and RoRA removes it (Table 2, LLaMA)"
    llama = paper.TABLE2_CR["LLaMA"]["badnet"]
    paper_text = (f"LLaMA on CR (BadNet): LoRA CA {_pct(llama['lora'][0])}, ASR {_pct(llama['lora'][1])}; RoRA CA "
                  f"{_pct(llama['rora'][0])}, ASR {_pct(llama['rora'][1])}")
    rule = ("reproduces when SmolLM2's LoRA ASR is ≥ 80% and its RoRA ASR ≤ 20% at CA ≥ LoRA's − 2 points, "
            "neither collapsed; partly when one of the two holds")
    lora, rora = (results.cell(row, "badnet", model="smollm2", seeds=(0,)) for row in ("LoRA", "+CI+Tr+Pt (RoRA)"))
    parts = [f"{name} CA {_pct(c.mean('ca'))}, ASR {_pct(c.mean('asr'))}{_asr_ci(c)}" +
             (" (collapsed)" if c.collapsed else "") for name, c in (("LoRA", lora), ("RoRA", rora)) if c.n]
    ours = "SmolLM2-135M, seed 0: " + "; ".join(parts) if parts else ""
    if not (lora.n and rora.n):
        return Verdict(claim, paper_text, ours, "not measured yet", rule)
    keeps = lora.mean("asr") >= 80 and not lora.collapsed
    removes = rora.mean("asr") <= 20 and rora.mean("ca") >= lora.mean("ca") - 2 and not rora.collapsed
    verdict = "reproduces" if keeps and removes else "partly" if keeps or removes else "does not reproduce"
    # a base under the paper's bar (held-out proxy ASR > 95 %) weakens the claim: said beside the verdict
    weak = [f"its poisoned base's held-out ASR is {_pct(100 * d['proxy_heldout']['asr'])}, not above the paper's 95%"
            for d in results.runs("base", "badnet", model="smollm2") if below_asr_bar(d)]
    close = [f"{name} ASR's interval contains the rule's {edge}%" for name, c, edge in (("LoRA", lora, 80),
                                                                                       ("RoRA", rora, 20))
             if (ci := c.values[0].get("asr_ci")) and 100 * ci[0] < edge < 100 * ci[1]]
    return Verdict(claim, paper_text, ours,
                   _with_marks(verdict, weak[0] if weak else None, lora.not_converged + rora.not_converged,
                               "; ".join(close) or None), rule)


def _asr_ci(cell: Any) -> str:
    """' [lo–hi]': one run's ASR with its Wilson 95 % interval over the triggered test texts (seed spread not in it)."""
    ci = cell.values[0].get("asr_ci") if cell.n == 1 else None
    return f" [Wilson {100 * ci[0]:.1f}–{100 * ci[1]:.1f}]" if ci else ""
