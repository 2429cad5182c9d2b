"""Regenerate docs/reproduction.md and the figures in figures/ (a Table 2-style study).

For each attack (BadNet ``mn``, InSent "I watched this 3D movie") the real MiniLM is
poisoned once on MR (the demo's recipe, cached), then for each seed it is fine-tuned on
CR with: LoRA, LoRA + Pt (rescaling alone), +CI, +CI+Tr, +CI+Tr+Pt (RoRA), and full
fine-tuning; every model is evaluated on the same CR test split. Seed 0 also gets the
threshold sweep for LoRA and RoRA (predicted vs measured scale) and the audit figures.

    python scripts/reproduce.py                      # 3 seeds, both attacks, reduced budget
    python scripts/reproduce.py --seeds 0 --attacks badnet --max-train 500   # a smoke run

Results of every run are kept in --work (default runs/reproduction/) so an interrupted
study resumes where it stopped; the Markdown and figures are rebuilt from them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ATTACKS = {"badnet": "badnet:mn", "insent": 'insent:"I watched this 3D movie"'}
ROWS = ["poisoned base", "LoRA", "LoRA + Pt", "+CI", "+CI+Tr", "+CI+Tr+Pt (RoRA)", "full fine-tuning"]
# The paper's per-row numbers could not be copied: from this machine only its abstract is
# reachable. We compare against what it states, and say so on the page.
PAPER_CLAIM = """
## What the paper reports, and what we compare against

The paper (Luong & Chen, 2026, arXiv:2601.06305) reports its Table 2 on BERT/RoBERTa-size
models. Its per-row CA/ASR numbers are **not on this page**: the machine that produced
these runs had no access to the paper's tables, only its abstract, and we do not quote
numbers we could not check. What we test are its stated claims:

1. standard LoRA fine-tuning on clean data leaves the backdoor in place ("rarely reaches"
   the scale threshold that would suppress it), while full fine-tuning partly erases it;
2. LoRA updates are spectrally weak (σ_max(sΔW) ≪ σ_max(W_pre)) and overlap W_pre's top
   singular subspaces;
3. RoRA (CI + Tr + Pt) "substantially reduces attack success rates while maintaining
   clean accuracy", and each component contributes (the ablation rows).
"""
READING_MARKER = "<!-- hand-written reading below this line; scripts/reproduce.py keeps it when it regenerates the page -->"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_seed(base: Path, attack: str, seed: int, train: Any, test: Any, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """All rows for one (attack, seed); cached as JSON."""
    from spectra.data.evaluate import run_eval
    from spectra.train.config import RoRAConfig
    from spectra.train.fix import run_fix
    from spectra.train.poison import poison

    done = work / f"{attack}-seed{seed}.json"
    if done.is_file():
        return json.loads(done.read_text())
    trigger = ATTACKS[attack]
    folder = work / f"{attack}-seed{seed}"
    if folder.exists():
        shutil.rmtree(folder)
    common = dict(epochs=args.epochs, max_length=args.max_length, seed=seed)
    ev = dict(eval_data=test, trigger=trigger, target_label=0, device="cpu", log=log)
    rows: dict[str, Any] = {}

    def row(result_rows: list[dict[str, Any]], source: str) -> dict[str, Any]:
        r = next(x for x in result_rows if x["model"] == source)
        return {k: r[k] for k in ("ca", "asr", "delta", "asr_floor", "collapsed")}

    t0 = time.time()
    lora = run_fix(base, train, folder / "lora", config=RoRAConfig.baseline("lora", **common), **ev)
    rows["poisoned base"], rows["LoRA"] = row(lora.eval_rows, "base"), row(lora.eval_rows, "new")
    lora_pt = run_fix(base, None, folder / "lora_pt", adapter=lora.adapter, rescale_only=True,
                      config=RoRAConfig(**common), **ev)
    rows["LoRA + Pt"] = row(lora_pt.eval_rows, "new")
    ci = run_fix(base, train, folder / "ci", config=RoRAConfig(tr=False, pt=False, **common), **ev)
    rows["+CI"] = row(ci.eval_rows, "new")
    rora = run_fix(base, train, folder / "rora", config=RoRAConfig(**common), **ev)
    rows["+CI+Tr"] = row(rora.eval_rows, "new-before-rescale")
    rows["+CI+Tr+Pt (RoRA)"] = row(rora.eval_rows, "new")
    fft = poison(base, train, trigger, 0, n_poison=0, mode="clean-label", epochs=args.epochs, lr=2e-5,
                 max_length=args.max_length, seed=seed, test_size=0.05, device="cpu", log=log)
    fft.write(folder / "fft")
    res = run_eval(str(folder / "fft"), None, test, trigger, 0, seed=seed, max_length=args.max_length,
                   device="cpu", progress=False)
    rows["full fine-tuning"] = {k: res.to_dict()[k] for k in ("ca", "asr", "delta", "asr_floor", "collapsed")}
    result = {"attack": attack, "seed": seed, "rows": rows, "seconds": round(time.time() - t0, 1),
              "adapters": {"LoRA": str(lora.adapter), "RoRA": str(rora.adapter), "LoRA + Pt": str(lora_pt.adapter)}}
    done.write_text(json.dumps(result, indent=2))
    return result


def theory(base: Path, attack: str, adapters: dict[str, str], test: Any, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Predicted vs measured threshold for LoRA and RoRA (seed 0)."""
    from spectra.threshold import measured_threshold_working, threshold

    majority = max(test.counts()) / len(test)
    out: dict[str, Any] = {}
    for name in ("LoRA", "RoRA"):
        folder = work / f"{attack}-threshold-{name.lower()}"
        if not (folder / "threshold.json").is_file():
            report = threshold(base, adapters[name], test, ATTACKS[attack], 0, max_samples=args.threshold_samples,
                               max_length=args.max_length, device="cpu")
            report.write(folder, overwrite=True)
        t = json.loads((folder / "threshold.json").read_text())
        out[name] = {k: t[k] for k in ("predicted_threshold_k", "measured_threshold_k", "k_star_flip", "k_star_bound",
                                       "s_star", "share_rho_eff_nonpositive", "scale", "module", "sigma_pre", "sigma_delta")}
        # recomputed from the sweep, so runs written before the key existed read the same
        out[name]["measured_threshold_k_clean"] = measured_threshold_working(t["sweep"], majority)
        out[name]["folder"] = str(folder)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--attacks", nargs="+", choices=sorted(ATTACKS), default=["badnet", "insent"])
    p.add_argument("--max-train", type=int, default=600, help="CR training rows (stratified subsample)")
    p.add_argument("--max-test", type=int, default=400, help="CR test rows")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--max-length", type=int, default=48)
    p.add_argument("--threshold-samples", type=int, default=120)
    p.add_argument("--poison", choices=["full", "quick"], default="quick",
                   help="the demo's poisoning recipe: quick (dirty-label, 100 of 1,000 MR rows) fits a study of "
                        "12 fine-tunes per attack on 2 cores; full tries the paper's clean-label 1,500 first")
    p.add_argument("--work", type=Path, default=Path("runs/reproduction"))
    p.add_argument("--doc", type=Path, default=Path("docs/reproduction.md"))
    p.add_argument("--figures", type=Path, default=Path("figures"))
    args = p.parse_args(argv)

    from spectra.data import load_labelled, split
    from spectra.demo import DemoSettings, _subsample, poisoned_base
    from spectra.spectral import default_cache_dir

    args.work.mkdir(parents=True, exist_ok=True)
    mr, cr = load_labelled("mr"), load_labelled("cr")
    cr_train, cr_test = split(cr, 0.2, 0)
    train, test = _subsample(cr_train, args.max_train, 0), _subsample(cr_test, args.max_test, 0)
    results, theories, poisons, bases = [], {}, {}, {}
    audit_summary: list[dict[str, Any]] = []
    for attack in args.attacks:
        bases[attack], info = poisoned_base(DemoSettings.for_mode(args.poison == "quick"), mr, log,
                                            default_cache_dir() / "demo", trigger=ATTACKS[attack])
        poisons[attack] = {k: info.get(k) for k in ("mode", "fallback_from", "ca", "asr", "asr_floor")}
    # seed-major, and the page is rebuilt after every run: a study cut short still documents
    # every run it finished
    for seed in args.seeds:
        for attack in args.attacks:
            log(f"{attack} seed {seed}")
            results.append(run_seed(bases[attack], attack, seed, train, test, args, args.work))
            if seed == args.seeds[0]:
                theories[attack] = theory(bases[attack], attack, results[-1]["adapters"], test, args, args.work)
                if attack == args.attacks[0]:
                    audit_summary = _audit_figures(bases[attack], results[-1]["adapters"], args)
            _write(args, poisons, results, theories, train, test, audit_summary)
    log(f"wrote {args.doc} and figures in {args.figures}")
    return 0


def _write(args: argparse.Namespace, poisons: dict[str, Any], results: list[dict[str, Any]],
           theories: dict[str, Any], train: Any, test: Any, audit_summary: list[dict[str, Any]]) -> None:
    summary = {"args": {k: str(v) for k, v in vars(args).items()}, "poisoning": poisons, "runs": results,
               "theory": theories, "audit": audit_summary, "data": {"train": train.summary(), "test": test.summary()}}
    (args.work / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    args.figures.mkdir(parents=True, exist_ok=True)
    _table_figure(results, args.figures / "reproduction_ca_asr.png")
    for attack, th in theories.items():
        for name, t in th.items():
            shutil.copy(Path(t["folder"]) / "fig_sweep.png", args.figures / f"sweep_{attack}_{name.lower()}.png")
    args.doc.write_text(_keep_reading(args.doc, _markdown(summary)), encoding="utf-8")


def _audit_figures(base: Path, adapters: dict[str, str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Audit LoRA, LoRA + Pt and RoRA side by side; copy Figures 1-2; return the per-adapter summary."""
    from spectra.audit import audit

    report = audit(base, list(adapters.values()), names=list(adapters), device="cpu")
    out = args.work / "audit"
    report.write(out, overwrite=True)
    args.figures.mkdir(parents=True, exist_ok=True)
    for name in ("fig_ratio", "fig_alignment"):
        shutil.copy(out / f"{name}.png", args.figures / f"audit_{name}.png")
    return json.loads(report.summary().to_json(orient="records"))


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _table_figure(results: list[dict[str, Any]], path: Path) -> None:
    from spectra.report.style import pyplot, save_figure

    plt = pyplot()
    attacks = list(dict.fromkeys(r["attack"] for r in results))
    fig, axes = plt.subplots(1, len(attacks), figsize=(6.5 * len(attacks), 4), squeeze=False, sharey=True)
    for ax, attack in zip(axes[0], attacks):
        runs = [r for r in results if r["attack"] == attack]
        for offset, metric, color in ((-0.2, "ca", "tab:blue"), (0.2, "asr", "tab:red")):
            means, stds = zip(*(_stats([100 * r["rows"][row][metric] for r in runs]) for row in ROWS))
            ax.bar([i + offset for i in range(len(ROWS))], means, 0.4, yerr=stds, color=color, capsize=3,
                   label=metric.upper())
        floors = [_stats([100 * r["rows"][row]["asr_floor"] for r in runs])[0] for row in ROWS]
        ax.scatter([i + 0.2 for i in range(len(ROWS))], floors, marker="_", s=400, color="black", zorder=3,
                   label="ASR floor (no trigger)")
        for i, row in enumerate(ROWS):  # a collapsed model's ASR says nothing about the trigger
            n_collapsed = sum(bool(r["rows"][row]["collapsed"]) for r in runs)
            if n_collapsed:
                ax.text(i, 92, f"collapsed\n{n_collapsed}/{len(runs)}", ha="center", va="top", fontsize=8,
                        color="darkred")
        ax.set_xticks(range(len(ROWS)), ROWS, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{attack} (MR → CR), n = {len(runs)} seeds", fontsize=10)
        ax.set_ylim(0, 100)
    axes[0, 0].set_ylabel("% (mean ± std over seeds)")
    axes[0, -1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _markdown(summary: dict[str, Any]) -> str:
    from spectra.report.tables import fmt_multiplier as _k
    from spectra.report.tables import markdown_table

    lines = ["# Reproduction on a real small model\n",
             "Regenerate everything on this page: `python scripts/reproduce.py` (numbers, `figures/`).\n",
             f"Settings: `{json.dumps(summary['args'])}`  \nCR train: {summary['data']['train']}  \nCR test: {summary['data']['test']}\n"]
    for attack, info in summary["poisoning"].items():
        lines.append(f"- poisoned base, {attack}: {info['mode']} poisoning, held-out MR CA {100 * info['ca']:.1f}%, "
                     f"ASR {100 * info['asr']:.1f}% (floor {100 * info['asr_floor']:.1f}%)"
                     + (f" — {info['fallback_from']} fell short of 95% ASR" if info.get("fallback_from") else ""))
    lines.append(PAPER_CLAIM)
    lines.append("\n## Table 2, our numbers (CR test, mean ± std over seeds, %)\n")
    table = []
    for attack in dict.fromkeys(r["attack"] for r in summary["runs"]):
        runs = [r for r in summary["runs"] if r["attack"] == attack]
        for row in ROWS:
            entry = {"attack": attack, "model": row, "seeds": len(runs)}
            for metric in ("ca", "asr", "delta", "asr_floor"):
                m, s = _stats([100 * r["rows"][row][metric] for r in runs])
                entry[metric.upper()] = f"{m:.1f} ± {s:.1f}"
            entry["collapsed runs"] = sum(bool(r["rows"][row]["collapsed"]) for r in runs)
            table.append(entry)
    lines.append(markdown_table(table))
    lines.append("![CA and ASR per method](../figures/reproduction_ca_asr.png)\n")
    lines.append("## The theory on real runs: predicted vs measured threshold (seed 0)\n")
    th_rows = []
    for attack, th in summary["theory"].items():
        for name, t in th.items():
            th_rows.append({"attack": attack, "adapter": name, "module": t["module"],
                            "σ_pre/σ_Δ": t["sigma_pre"] / t["sigma_delta"] if t["sigma_delta"] else None,
                            "k* flip median": _k(t["k_star_flip"]["median"]), "k* bound median": _k(t["k_star_bound"]["median"]),
                            "share ρ_eff ≤ 0": t["share_rho_eff_nonpositive"],
                            "predicted k (ASR<50%)": _k(t["predicted_threshold_k"]), "measured k (ASR<50%)": _k(t["measured_threshold_k"]),
                            "measured k, model still working": _k(t.get("measured_threshold_k_clean")),
                            "s* flip median": (t["s_star"]["flip"] or {}).get("median")})
    lines.append(markdown_table(th_rows))
    lines.append("k multiplies every adapted module's scale (1 = the adapter as trained). ∞: the estimate never "
                 "crosses, or no grid k brought ASR under 50%. 'Model still working': not collapsed to one class "
                 "and clean accuracy above the majority-class share.\n")
    for attack, th in summary["theory"].items():
        for name in th:
            lines.append(f"![{attack} {name}](../figures/sweep_{attack}_{name.lower()}.png)\n")
    lines.append("## Audit of seed 0 (first attack)\n")
    if summary.get("audit"):
        lines.append(markdown_table(summary["audit"]))
    lines.append("![ratio](../figures/audit_fig_ratio.png)\n\n![alignment](../figures/audit_fig_alignment.png)\n")
    lines.append(f"## Reading\n\n{READING_MARKER}\n")
    return "\n".join(lines)


def _keep_reading(doc: Path, generated: str) -> str:
    """The generated page plus the hand-written reading already below the marker, so a
    re-run refreshes the numbers without erasing their interpretation."""
    old = doc.read_text(encoding="utf-8") if doc.is_file() else ""
    if READING_MARKER not in old:
        return generated + "\n_(no reading written yet)_\n"
    return generated + old.split(READING_MARKER, 1)[1].lstrip("\n").join(["\n", ""])


if __name__ == "__main__":
    sys.exit(main())
