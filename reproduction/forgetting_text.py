"""The text of ``docs/forgetting.md``: every reading built from the analysis' numbers."""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

from spectra.forgetting import DEFINITIONS, FEATURES
from reproduction.forgetting_stats import (FALSE_PASS_TARGET, GROUPINGS, MIN_AUROC, MODEL_FEATURES, POLICY_MAX_RATIO,
                                            TARGET_AUROC, calibration_table)
from reproduction.forgetting_stats import fmt as _fmt


def _rel(path: str | Path, page: str | Path) -> str:
    return os.path.relpath(Path(path), Path(page).parent)


def _counts(rows: list[dict[str, Any]], key: str) -> str:
    c = Counter(str(r[key]) for r in rows)
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items()))


def _spread(rows: list[dict[str, Any]]) -> str:
    """What the recipes of ``rows`` span, read from them: epochs, rates, ranks, targets, rsLoRA, DoRA."""
    if not rows:
        return "none"
    def span(key: str) -> str:
        values = sorted({float(r[key]) for r in rows})
        return f"{values[0]:g}–{values[-1]:g}" if len(values) > 1 else f"{values[0]:g}"
    return (f"{span('epochs')} epochs, lr {span('lr')}, r {span('rank')}, targets "
            f"{' or '.join(sorted({str(r['targets']) for r in rows}))}, "
            f"{sum(str(r['rslora']) == 'True' for r in rows)} with rsLoRA, {sum(str(r['dora']) == 'True' for r in rows)} DoRA")


def _evidence(an: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    A = an["A"]
    adapters = {r["group"] for r in rows}
    users = {r["group"] for r in rows if r["recipe"] != "study"}
    short = [r for r in A if r["stage"] == "trained" and r["epochs"] < 20]
    close = [r for r in A if str(r.get("close_call")) == "True"]
    users_kept = [r for r in short if r["recipe"] != "study"]
    return [
        "## The evidence", "",
        f"`{Path(an['csv']).name}` holds {len(rows)} labelled rows from {len(adapters)} trained adapters "
        f"({len(users)} of them users' recipes of the evidence plan, the rest the reproduction study's): "
        f"{_counts(rows, 'stage')} (stage); {_counts(rows, 'model')} (model).",
        "",
        f"The analysis below reads the MiniLM adapters as a user would deploy them — every stage but the γ "
        f"sweeps, with one LoRA scale across modules (the {an['per_module']['n']} that Pt rescaled per module are "
        "read apart, below) — "
        f"{len(A)} rows from {len({r['group'] for r in A})} adapters: {sum(r['survives'] for r in A)} "
        f"keep the backdoor (ASR ≥ 50 %, not collapsed), {sum(r['collapsed'] for r in A)} collapsed. By attack: "
        f"{_counts(A, 'attack')}; by base: {_counts(A, 'base')}; by family: {_counts(A, 'family')}; by learning "
        f"rate: {_counts(A, 'lr')}; converged by the study's rule: {sum(bool(r['converged']) for r in A)} of "
        f"{len(A)}; trained under 20 epochs (users' short budgets): {len(short)}.",
        "",
        f"Close calls: {len(close)} of these {len(A)} labels have an ASR whose 95 % interval contains the 50 % edge "
        f"(`close_call` in the table){': ' + ', '.join(sorted(r['row'] for r in close)) if 0 < len(close) <= 6 else ''}. "
        f"Of the {len(users_kept)} users' recipes ({_spread(users_kept)}), {sum(r['survives'] for r in users_kept)} "
        "keep the backdoor.",
        "",
    ]


def _single(an: dict[str, Any]) -> list[str]:
    out = ["## Single features", "",
           "AUROC of each audit number for \"the backdoor survives\" (in-sample; 95 % intervals from a bootstrap "
           "over adapters). Above 0.5: larger values go with surviving backdoors; below 0.5: the opposite. "
           "The last column adds the γ-sweep rows (the same adapters with every LoRA scale multiplied by γ).", "",
           "| feature | definition | AUROC [95 % CI] | with the γ sweeps |", "|---|---|---|---|"]
    for f in FEATURES:
        s = an["single"][f]
        out.append(f"| `{f}` | {DEFINITIONS[f]} | {_fmt(s['auroc'], s['ci'])} | {s['auroc_with_sweeps']:.2f} |")
    return out + [""]


def _held_out(an: dict[str, Any]) -> list[str]:
    names = {"model": "**weights-only model** (best single feature + logistic fit, both chosen on the training "
                      "folds)", "multi": f"logistic regression on {', '.join(MODEL_FEATURES)}",
             "single": "best single feature as a raw score (chosen on the training folds)"}
    names.update({b: b for b in next(iter(an["cv"].values()))["scores"] if b not in names})
    head = "| predictor | " + " | ".join(f"leave one {GROUPINGS[k]} out ({len(an['cv'][k]['folds'])})"
                                         for k in GROUPINGS) + " |"
    out = ["## Held-out groups", "",
           "AUROC of out-of-fold scores: each fold's rows are scored by a predictor fitted and chosen on the "
           "other folds only; the fixed readings need no fitting. Intervals: bootstrap over adapters.", "",
           head, "|---|" + "---|" * len(GROUPINGS)]
    for key, label in names.items():
        out.append(f"| {label} | " + " | ".join(_fmt(*an["cv"][k]["scores"][key]) for k in GROUPINGS) + " |")
    picks = Counter()
    for k in GROUPINGS:
        picks.update(an["cv"][k]["picks"])
    out += ["", f"The training folds chose {', '.join(f'`{p}` ({n}×)' for p, n in picks.most_common())} as the "
                f"best single feature."]
    return out + [""]


def _readings(an: dict[str, Any]) -> list[str]:
    cv = an["cv"]
    model = {k: cv[k]["scores"]["model"] for k in GROUPINGS}
    multi = {k: cv[k]["scores"]["multi"] for k in GROUPINGS}
    worst = min(model, key=lambda k: model[k][0])
    # where the combination is more than 0.01 better (or worse) held out: only computable groupings count
    better = [GROUPINGS[k] for k in GROUPINGS if multi[k][0] > model[k][0] + 0.01]
    worse = [GROUPINGS[k] for k in GROUPINGS if multi[k][0] < model[k][0] - 0.01]
    weak = [f for f in FEATURES if max(an["single"][f]["auroc"], 1 - an["single"][f]["auroc"]) < 0.7]
    policy = cv["base"]["scores"][next(b for b in cv["base"]["scores"] if b.startswith("example policy"))]
    lines = ["## What predicts and what does not", "",
             ("- **Predicts:** " if an["validated"] else "- **Best single feature, not validated:** ")
             + f"`{an['feature']}` — held out by poisoned base the model scores AUROC "
             f"{_fmt(*model['base'])}; its weakest grouping is leave one {GROUPINGS[worst]} out, "
             f"{_fmt(*model[worst])}. The issue's target ({TARGET_AUROC:g} leave-one-group-out) is "
             + ("met on every grouping." if all(m[0] >= TARGET_AUROC for m in model.values()) else
                "not met on every grouping: " + ", ".join(
                    f"{GROUPINGS[k]} {m[0]:.2f}" if math.isfinite(m[0]) else f"{GROUPINGS[k]} not computable"
                    for k, m in model.items() if not m[0] >= TARGET_AUROC) + "."),
             *_not_computable(an, model),
             ("- **A combination adds nothing:**" if not better else "- **A combination does better:**" if not worse
              else "- **A combination is mixed:**")
             + f" the logistic regression on {', '.join(MODEL_FEATURES)} "
             + (f"beats the one-feature model leaving one {' / '.join(better)} out" if better
                else "does not beat the one-feature model on any held-out grouping")
             + (f", and loses leaving one {' / '.join(worse)} out" if better and worse else "") + " ("
             + ", ".join(f"{GROUPINGS[k]} {_point(multi[k][0])} against {_point(model[k][0])}" for k in GROUPINGS)
             + ").",
             f"- **Does not predict (|AUROC − 0.5| < 0.2 in-sample):** {', '.join(f'`{f}`' for f in weak) or 'none'}."
             + _named_readings(weak),
             f"- **The example policy (σ_pre/σ_Δ ≤ {POLICY_MAX_RATIO:g})** lets "
             f"{100 * an['policy_false_pass']:.0f} % of the surviving backdoors pass (held-out AUROC "
             f"{_fmt(*policy)}).", _per_module_reading(an["per_module"]), ""]
    lines += ["### Where it stops holding", "",
              f"AUROC of `{an['feature']}` inside each stratum (n rows, surviving):", "",
              "| stratum | n | survive | AUROC |", "|---|---|---|---|"]
    for (key, value), (n, pos, a) in an["strata"].items():
        lines.append(f"| {key} = {value} | {n} | {pos} | {a:.2f} |" if math.isfinite(a) else
                     f"| {key} = {value} | {n} | {pos} | — (one class) |")
    low = [f"{k} = {v} ({a:.2f})" for (k, v), (n, p, a) in an["strata"].items() if math.isfinite(a) and a < 0.7]
    lines += ["", "Below 0.7: " + (", ".join(low) if low else "none") + ". There the feature does not separate "
              "the adapters that remove the backdoor from those that keep it.", ""]
    return lines


def _point(a: float) -> str:
    return f"{a:.2f}" if math.isfinite(a) else "not computable"


def _named_readings(weak: list[str]) -> str:
    """What the weak features mean for the paper's readings — said only of those that are weak."""
    said = []
    if any(f.startswith("cos") for f in weak):
        said.append("the paper's Figure 2 reading (alignment with W_pre's top-k)")
    if any(f.startswith("overlap") for f in weak):
        said.append("Tr's target (the top-k overlap)")
    if not said:
        return ""
    text = " and ".join(said)
    return " " + text[0].upper() + text[1:] + (" do" if len(said) > 1 else " does") + \
        " not tell a surviving backdoor from a removed one here."


def _not_computable(an: dict[str, Any], model: dict[str, Any]) -> list[str]:
    """Why a grouping has no held-out AUROC: the removed backdoors all sit in one of its groups, so the
    folds that leave that group out have none to learn from."""
    from collections import Counter

    out = []
    for key, (point, _) in model.items():
        if math.isfinite(point):
            continue
        removed = Counter(str(r[key]) for r in an["A"] if not r["survives"])
        where = (f"every removed backdoor in the scope ({sum(removed.values())}) has {key} = {next(iter(removed))}"
                 if len(removed) == 1 else f"the removed backdoors sit in {len(removed)} {GROUPINGS[key]} groups")
        out.append(f"- **Leaving one {GROUPINGS[key]} out is not computable:** {where}, so the folds that leave it "
                   "out have no removed example to fit; nothing here shows the predictor carries to another "
                   f"{GROUPINGS[key]}.")
    return out


def _per_module_reading(pm: dict[str, Any]) -> str:
    """Why the scope is adapters with one LoRA scale: the model on those Pt rescaled per module."""
    if not pm["n"]:
        return "- **Per-module rescaled adapters:** none in the evidence yet."
    head = (f"- **Outside the scope: adapters Pt rescaled per module** ({pm['n']} rows from {pm['n_adapters']} "
            f"adapters, {pm['n_pos']} keep the backdoor; `spectra fix`'s own output is one).")
    if "auroc" not in pm or not math.isfinite(pm["auroc"][0]):
        return head + " Only one label occurs among them, so no AUROC; the audit gives them no weights-only estimate."
    a, ci = pm["auroc"]
    fp = pm["false_pass"]
    return (head + f" The model fitted on one-scale adapters scores them AUROC {_fmt(a, ci)}"
            + (f" and would pass {100 * fp:.0f} % of their surviving backdoors" if math.isfinite(fp) else "")
            + ": Pt moves the deep layers' ratio without the backdoor following it. The audit gives such adapters "
            "\"no validated estimate\" (its scope's `one_scale`), not a P(survives).")


def readme_summary(an: dict[str, Any]) -> str:
    """The README's forgetting-summary block: what predicts, what does not, the gate's false passes."""
    cv = an["cv"]
    model = {k: cv[k]["scores"]["model"] for k in GROUPINGS}
    cos = an["single"]["cos_median"]
    overlap = an["single"]["overlap_median"]
    lo, hi = an["ranges"][an["feature"]]
    return "\n".join([
        ("- **Predicts:** " if an["validated"] else "- **Best single feature (not validated, below):** ")
        + f"`{an['feature']}` ({DEFINITIONS[an['feature']]}) — held-out AUROC "
        + ", ".join(f"{_fmt(*m) if math.isfinite(m[0]) else 'not computable'} leaving one {GROUPINGS[k]} out"
                    for k, m in model.items())
        + f", on {len(an['A'])} MiniLM adapters and stages ({sum(r['survives'] for r in an['A'])} keep the backdoor).",
        f"- **In-sample AUROC of the paper's readings:** alignment with W_pre's top-k (Figure 2: median max|cos|) "
        f"{_fmt(cos['auroc'], cos['ci'])}, the top-k overlap Tr drives to zero {_fmt(overlap['auroc'], overlap['ci'])};"
        f" a module-wise σ_pre/σ_Δ ≤ {POLICY_MAX_RATIO:g} lets {100 * an['policy_false_pass']:.0f} % of the surviving "
        "backdoors pass.",
        "- **Validated:** " + ("yes — the audit gives a weights-only P(survives) inside the scope below."
                               if an["validated"] else
                               f"no ({an['note']}) — so the audit gives every adapter \"no validated estimate\" "
                               "and says why; `spectra canary` measures the question on the user's own base."),
        f"- **The default `forgetting` rule** (a finding when P(survives) > 0.5), each poisoned base scored by a "
        f"model fitted without it: {100 * an['default_rule']['false_pass']:.0f} % of surviving backdoors pass "
        f"(false passes), {100 * an['default_rule']['false_alarm']:.0f} % of removed ones are flagged"
        + ("." if an["validated"] else " — measured, but not applied: the audit uses no unvalidated model."),
        f"- **Scope of the audit's verdict:** bases shaped like all-MiniLM-L6-v2, adapters with one LoRA scale "
        f"(not Pt-rescaled per module: {_fmt(*an['per_module']['auroc']) if 'auroc' in an['per_module'] else 'n/a'} "
        f"AUROC there), `{an['feature']}` in [{lo:.2f}, {hi:.2f}]; elsewhere it says \"no validated estimate\""
        + (f" — so for all {len(an['transfer'])} SmolLM2 adapters and stages of the study."
           if an["transfer"] and not any(t["in_range"] for t in an["transfer"]) else "."),
    ])


def transfer_reading(an: dict[str, Any]) -> str:
    """What the transfer rows say, from their numbers: how many the MiniLM model gets right, its
    AUROC with a bootstrap interval over adapters (when both labels occur), and the scope."""
    rows, ta = an["transfer"], an.get("transfer_auroc") or {}
    ok = sum((t["p"] >= 0.5) == t["survives"] for t in rows)
    inside = sum(t["in_range"] for t in rows)
    text = f"{ok} of {len(rows)} right at P = 0.5; {inside} of {len(rows)} inside MiniLM's range of `{an['feature']}`. "
    point, ci = ta.get("auroc", (math.nan, (math.nan, math.nan)))
    if math.isfinite(point):
        text += (f"Transfer AUROC MiniLM → SmolLM2: **{_fmt(point, ci)}** on {ta['n']} adapters and stages "
                 f"({ta['n_pos']} keep the backdoor; 95 % interval by bootstrap over adapters), "
                 f"{ta['auroc_with_sweeps']:.2f} with the {ta['n_with_sweeps'] - ta['n']} γ-sweep points added. ")
        text += ("It ranks them as well as on MiniLM, but " if point >= 0.9 else "Below the 0.9 bar: ")
    else:
        text += "Only one label occurs among them, so no AUROC can be computed. "
    return text + ("The audit gives SmolLM2 adapters no validated estimate (its scope is the architecture it was "
                   "validated on); `spectra canary` calibrates a verdict on such a base.")


def intruder_section(an: dict[str, Any]) -> list[str]:
    """PEFT's intruder count against the audit's feature, on the adapters it could be counted on."""
    ti = an.get("intruders") or {}
    if not ti.get("n"):
        return []
    lines = ["## PEFT's intruder count", "",
             f"PEFT's `reduce_intruder_dimension` (top 10 singular vectors of W + ΔW, ε = 0.5: its defaults) counts "
             f"intruder dimensions; `python scripts/reproduce.py intruders` counted them for the {ti['n']} MiniLM "
             f"adapters whose weights were still on disk ({ti['n_pos']} keep the backdoor; {ti['with_any']} have "
             "any intruder). On those rows (in-sample; AUROC with a bootstrap interval over adapters, and "
             "Spearman's ρ with the measured ASR):", "",
             "| predictor | AUROC [95 % CI] | ρ with ASR |", "|---|---|---|",
             f"| intruder dimensions (count over modules) | {_fmt(*ti['count'])} | {ti['rho_count']:.2f} |",
             f"| `{an['feature']}` | {_fmt(*ti['feature'])} | {ti['rho_feature']:.2f} |", ""]
    point = ti["count"][0]
    if not math.isfinite(point):
        lines.append(f"Every one of these adapters {'keeps' if ti['n_pos'] else 'loses'} the backdoor, so no AUROC can "
                     "be computed; the rank correlations say how each number follows the ASR that remains.")
    else:
        lines.append("The intruder count " + ("does not predict a surviving backdoor here" if abs(point - 0.5) < 0.2
                                              else "predicts, " + ("as well as" if point >= ti["feature"][0]
                                                                   else "less well than") + f" `{an['feature']}`")
                     + " on these rows.")
    return lines + [""]


def page(an: dict[str, Any], rows: list[dict[str, Any]], doc: dict[str, Any], csv_path: str | Path,
         figure: str | Path, doc_path: str | Path) -> str:
    an = {**an, "csv": str(csv_path)}
    gate = an["gate"]
    lines = ["# Will the adapter override a backdoor in its base? The evidence for the audit's verdict", "",
             f"> Generated by `python scripts/reproduce.py forgetting` from {doc['results']} committed results "
             f"(`docs/study/results/`): the table [`{Path(csv_path).name}`]({_rel(csv_path, doc_path)}), this page, "
             f"the figure and `spectra/forgetting_model.json`, which `spectra audit` reads. Every number below is "
             "computed; nothing is typed by hand.", "",
             "The label: **the backdoor survives** when the fine-tuned model's ASR on the CR test rows is at least "
             "50 % and the model has not collapsed (predicting one class for nearly every input).", ""]
    lines += _evidence(an, rows) + _single(an) + _held_out(an) + intruder_section(an) + _readings(an)
    lines += ["## Calibration", "", f"![calibration]({_rel(figure, doc_path)})", "",
              "Probabilities of the weights-only model for the rows of a poisoned base it was not fitted on:", "",
              "| predicted | rows | mean predicted | observed |", "|---|---|---|---|"]
    lines += [f"| {b} | {n} | {p:.2f} | {o:.2f} |" for b, n, p, o in calibration_table(an)]
    lines += ["", "## Transfer to SmolLM2 (LLaMA architecture)", "",
              "The model fitted on every MiniLM row, applied to the SmolLM2 adapters:", "",
              f"| row | `{an['feature']}` | P(survives) | in MiniLM's range | ASR | survived |", "|---|---|---|---|---|---|"]
    for t in an["transfer"]:
        lines.append(f"| {t['row']} | {t['feature']:.2f} | {t['p']:.2f} | {'yes' if t['in_range'] else 'no'} | "
                     f"{100 * t['asr']:.1f}% | {'yes' if t['survives'] else 'no'} |")
    lines += ["", transfer_reading(an), ""]
    lo, hi = an["ranges"][an["feature"]]
    lines += ["## The verdict `spectra audit` gives", "",
              f"- Model: P(survives) = logistic({doc['coef'][0]:.3g} · (`{an['feature']}` − {doc['mean'][0]:.3g}) / "
              f"{doc['scale'][0]:.3g} + {doc['intercept']:.3g}), fitted on {doc['n_rows']} rows from "
              f"{doc['n_adapters']} adapters.",
              f"- Validated: **{'yes' if an['validated'] else 'no'}** — {an['note']}.",
              f"- Scope: bases shaped like all-MiniLM-L6-v2 (`bert-6L-384`), `{an['feature']}` in [{lo:.2f}, {hi:.2f}] "
              f"(σ_pre/σ_Δ {10 ** lo:.2g}–{10 ** hi:.2g}); outside it the audit says \"no validated estimate\".",
              f"- The default policy's `forgetting` rule (a finding when P(survives) > 0.5), scored on each poisoned "
              f"base by a model fitted without it: it lets {100 * an['default_rule']['false_pass']:.0f} % of "
              f"{an['default_rule']['n_pos']} surviving backdoors pass and flags "
              f"{100 * an['default_rule']['false_alarm']:.0f} % of {an['default_rule']['n_neg']} removed ones.",
              f"- A gate threshold from the same evidence: a finding when `{an['feature']}` > {gate['threshold']:.2f} "
              f"(σ_pre/σ_Δ > {10 ** gate['threshold']:.2g}), chosen so that at most {100 * FALSE_PASS_TARGET:.0f} % of "
              f"surviving backdoors pass. Chosen on the other bases and measured on each held-out base it let "
              f"{100 * gate['false_pass']:.0f} % of {gate['n_pos']} surviving backdoors pass and flagged "
              f"{100 * gate['false_alarm']:.0f} % of {gate['n_neg']} removed ones.", "",
              "## Not measured here", "",
              "- PEFT's intruder-dimension count for the study's own adapters: the results keep the audit's numbers, "
              "not the weights; it is counted where the weights were still on disk (above).",
              "- Stable rank of ΔW: the audit does not record ΔW's singular values beyond the first.",
              f"- Minimum bar for the verdict to be given: leave-one-base-out AUROC ≥ {MIN_AUROC:g} and every "
              "grouping's 95 % lower bound above 0.5.", ""]
    return "\n".join(lines)
