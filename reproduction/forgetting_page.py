"""``docs/forgetting.md``, ``docs/study/forgetting.csv``, the calibration figure and the fitted
weights-only model (``spectra/forgetting_model.json``), all generated from the committed results
by ``python scripts/reproduce.py forgetting``. Every sentence with a number is built from it."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spectra.forgetting import FEATURES
from reproduction.forgetting import evidence_rows, write_table
from reproduction.pt_grid import load_grid
from reproduction.forgetting_stats import (FALSE_PASS_TARGET, GROUPINGS, MIN_AUROC, POLICY_MAX_RATIO, auroc, spearman,
                                            calibration_table, cluster_bootstrap, fit_model, fmt, grouped_cv, matrix)
from reproduction.forgetting_text import page, readme_summary

def _ci(values: np.ndarray, y: np.ndarray, groups: list[str]) -> tuple[float, tuple[float, float]]:
    ok = ~np.isnan(values)
    v, yy, g = values[ok], y[ok], [gr for gr, keep in zip(groups, ok) if keep]
    point = auroc(v, yy)
    return point, cluster_bootstrap(lambda idx: auroc(v[idx], yy[idx]), g)


def _threshold_for(rows: Sequence[dict[str, Any]], feature: str, sign: float) -> float:
    """The gate threshold on ``feature`` that lets at most FALSE_PASS_TARGET of ``rows``' surviving
    backdoors pass (a finding when sign·feature is above it)."""
    pos = sorted(sign * float(r[feature]) for r in rows if r["survives"])
    if not pos:
        return math.inf
    return pos[int(math.floor(FALSE_PASS_TARGET * len(pos)))] - 1e-9


def analyse(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Every number the page and the model file state."""
    finite = [r for r in rows if r["model"] == "minilm" and all(math.isfinite(float(r[f])) for f in FEATURES)]
    # the scope: adapters with one LoRA scale (as trained); those Pt rescaled per module are read apart
    A = [r for r in finite if r["stage"] != "sweep" and r["scales"] == "one"]
    B = [r for r in finite if r["scales"] == "one"]
    R = [r for r in finite if r["stage"] != "sweep" and r["scales"] == "per-module"]
    y = np.array([bool(r["survives"]) for r in A])
    groups = [r["group"] for r in A]
    single = {}
    for f in FEATURES:
        point, ci = _ci(np.array([float(r[f]) for r in A]), y, groups)
        yb = np.array([bool(r["survives"]) for r in B])
        single[f] = {"auroc": point, "ci": ci,
                     "auroc_with_sweeps": auroc([float(r[f]) for r in B], yb)}
    cv = {}
    for key in GROUPINGS:
        res = grouped_cv(A, key, FEATURES)
        cv[key] = {"folds": res["folds"], "picks": Counter(res["single_picks"]),
                   "scores": {name: _ci(vals, y, groups) for name, vals in res["scores"].items()},
                   "oof_model": res["scores"]["model"]}
    model, sign = fit_model(A, FEATURES)
    feature = model.features[0]
    ranges = {feature: (min(float(r[feature]) for r in A), max(float(r[feature]) for r in A))}
    lobo = cv["base"]["scores"]["model"]
    checks = {key: cv[key]["scores"]["model"] for key in GROUPINGS}
    validated = lobo[0] >= MIN_AUROC and all(c[1][0] > 0.5 for c in checks.values())
    # what failed first: the reason an adapter's verdict prints must not read as a list of passes
    failed = ([f"leave-one-base-out AUROC {lobo[0]:.2f} is under its bar {MIN_AUROC:g}"] if lobo[0] < MIN_AUROC else [])
    failed += [f"the {GROUPINGS[k]} grouping's lower bound is "
               + (f"{c[1][0]:.2f}, not above 0.5" if math.isfinite(c[1][0]) else
                  "not computable (its training folds hold one label)")
               for k, c in checks.items() if not c[1][0] > 0.5]
    note = ("failed: " + "; ".join(failed) + ". Measured: " if failed else "") + (
            f"leave-one-base-out AUROC {fmt(*lobo)} (bar {MIN_AUROC:g}); lower 95 % bounds by grouping: "
            + ", ".join(f"{GROUPINGS[k]} {c[1][0]:.2f}" if math.isfinite(c[1][0]) else
                        f"{GROUPINGS[k]} not computable (its training folds hold one label)" for k, c in checks.items())
            + " (bar: above 0.5)")
    # a gate threshold, chosen on training folds, its false passes measured on the held-out base
    fp, fa = [], []
    for base in sorted({r["base"] for r in A}):
        train = [r for r in A if r["base"] != base]
        test = [r for r in A if r["base"] == base]
        t = _threshold_for(train, feature, sign)
        fp += [sign * float(r[feature]) <= t for r in test if r["survives"]]
        fa += [sign * float(r[feature]) > t for r in test if not r["survives"]]
    threshold = _threshold_for(A, feature, sign)
    # the default policy's forgetting rule (P(survives) > 0.5 is a finding), on held-out bases
    oof = cv["base"]["oof_model"]
    surv = np.array([bool(r["survives"]) for r in A])
    scored = ~np.isnan(oof)
    default_rule = {"false_pass": float(np.mean(oof[scored & surv] <= 0.5)) if (scored & surv).any() else math.nan,
                    "false_alarm": float(np.mean(oof[scored & ~surv] > 0.5)) if (scored & ~surv).any() else math.nan,
                    "n_pos": int((scored & surv).sum()), "n_neg": int((scored & ~surv).sum())}
    policy_pass = [float(r["log_ratio_max"]) <= math.log10(POLICY_MAX_RATIO) for r in A if r["survives"]]
    transfer = [{"row": r["row"], "feature": float(r[feature]), "p": float(model.predict(matrix([r], [feature]))[0]),
                 "asr": r["asr"], "survives": r["survives"],
                 "in_range": ranges[feature][0] <= float(r[feature]) <= ranges[feature][1]}
                for r in rows if r["model"] != "minilm" and r["stage"] != "sweep"]
    # the transfer figure: the MiniLM model's P(survives) ranks the other architecture's rows how well
    other = [r for r in rows if r["model"] != "minilm" and math.isfinite(float(r[feature]))]
    t_rows = [r for r in other if r["stage"] != "sweep"]
    t_p = model.predict(matrix(t_rows, [feature])) if t_rows else np.array([])
    transfer_auroc = {"n": len(t_rows), "n_pos": sum(bool(r["survives"]) for r in t_rows),
                      "models": sorted({r["model"] for r in t_rows}),
                      "auroc": _ci(np.asarray(t_p, dtype=float), np.array([bool(r["survives"]) for r in t_rows]),
                                   [r["group"] for r in t_rows]) if t_rows else (math.nan, (math.nan, math.nan)),
                      "auroc_with_sweeps": auroc(model.predict(matrix(other, [feature])) if other else [],
                                                 [bool(r["survives"]) for r in other]), "n_with_sweeps": len(other)}
    # PEFT's intruder count, where the adapter's weights were still on disk to count it
    with_count = [r for r in A if r["stage"] == "trained" and str(r.get("intruder_dims", "")) not in ("", "nan", "None")]
    intruders = {"n": len(with_count), "n_pos": sum(bool(r["survives"]) for r in with_count)}
    if with_count:
        yi = np.array([bool(r["survives"]) for r in with_count])
        gi = [r["group"] for r in with_count]
        intruders["count"] = _ci(np.array([float(r["intruder_dims"]) for r in with_count]), yi, gi)
        intruders["feature"] = _ci(np.array([float(r[feature]) for r in with_count]), yi, gi)
        intruders["with_any"] = sum(float(r["intruder_dims"]) > 0 for r in with_count)
        asr = [float(r["asr"]) for r in with_count]
        intruders["rho_count"] = spearman([float(r["intruder_dims"]) for r in with_count], asr)
        intruders["rho_feature"] = spearman([float(r[feature]) for r in with_count], asr)
    per_module = {"n": len(R), "n_pos": sum(bool(r["survives"]) for r in R), "n_adapters": len({r["group"] for r in R})}
    if R:  # the fitted model's P(survives) on the adapters outside its scope: why they are outside
        per_module["auroc"] = _ci(np.asarray(model.predict(matrix(R, [feature])), dtype=float),
                                  np.array([bool(r["survives"]) for r in R]), [r["group"] for r in R])
        per_module["false_pass"] = float(np.mean([model.predict(matrix([r], [feature]))[0] <= 0.5
                                                  for r in R if r["survives"]])) if per_module["n_pos"] else math.nan
    strata = {}
    for key in ("lr", "family", "stage"):
        for value in sorted({str(r[key]) for r in A}):
            sub = [r for r in A if str(r[key]) == value]
            strata[(key, value)] = (len(sub), sum(r["survives"] for r in sub),
                                    auroc([float(r[feature]) for r in sub], [r["survives"] for r in sub]))
    return {"A": A, "B": B, "single": single, "cv": cv, "model": model, "sign": sign, "feature": feature,
            "ranges": ranges, "validated": bool(validated), "note": note,
            "gate": {"threshold": threshold, "false_pass": float(np.mean(fp)) if fp else math.nan,
                     "false_alarm": float(np.mean(fa)) if fa else math.nan, "n_pos": len(fp), "n_neg": len(fa)},
            "policy_false_pass": float(np.mean(policy_pass)) if policy_pass else math.nan,
            "transfer": transfer, "transfer_auroc": transfer_auroc, "intruders": intruders, "strata": strata,
            "default_rule": default_rule, "per_module": per_module}


def _one_scale_evidence(pm: dict[str, Any]) -> dict[str, Any]:
    """What the scope's one-scale condition rests on: the model on the per-module rescaled adapters."""
    out = {k: pm[k] for k in ("n", "n_pos", "n_adapters")}
    if "auroc" in pm:
        a, (lo, hi) = pm["auroc"]
        finite = [x if math.isfinite(x) else None for x in (a, lo, hi, pm["false_pass"])]  # one label: no AUROC
        out.update(auroc=finite[:3], false_pass=finite[3])
    return out


def model_document(an: dict[str, Any], n_results: int) -> dict[str, Any]:
    """The fitted model as the audit reads it (``spectra/forgetting_model.json``)."""
    an["cv"]["base"]["scores"]["model"]
    return {**an["model"].to_dict(), "label": "ASR >= 50% and not collapsed (the backdoor survives)",
            "validated": an["validated"], "validation_note": an["note"],
            "validation": {GROUPINGS[k]: {"auroc": v["scores"]["model"][0], "ci95": list(v["scores"]["model"][1])}
                           for k, v in an["cv"].items()},
            "scope": {"architectures": ["bert-6L-384"], "ranges": {k: list(v) for k, v in an["ranges"].items()},
                      "one_scale": _one_scale_evidence(an["per_module"]),
                      "note": "all-MiniLM-L6-v2 (BERT, 6 layers) poisoned with BadNet/InSent on rt, fine-tuned on CR; "
                              "adapters with one LoRA scale across modules"},
            "default_rule": an["default_rule"],
            "gate_threshold": {"feature": an["feature"], "finding_above": an["gate"]["threshold"],
                               "false_pass_held_out": an["gate"]["false_pass"],
                               "false_alarm_held_out": an["gate"]["false_alarm"]},
            "features_auroc": {f: [s["auroc"], *s["ci"]] for f, s in an["single"].items()},
            "n_adapters": len({r["group"] for r in an["A"]}), "n_rows": len(an["A"]), "results": n_results,
            "source": "python scripts/reproduce.py forgetting (docs/forgetting.md)"}


def draw_calibration(an: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = calibration_table(an)
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="perfect calibration")
    ax.plot([t[2] for t in table], [t[3] for t in table], "o-", label="weights-only model (held-out base)")
    ys = [t[3] for t in table]
    for i, t in enumerate(table):  # below a point whose neighbours are higher, else above-left: off the line
        low = all(ys[j] > t[3] for j in (i - 1, i + 1) if 0 <= j < len(ys))
        ax.annotate(f"n={t[1]}", (t[2], t[3]), textcoords="offset points", fontsize=7,
                    xytext=(0, -12) if low else (-6, 4), ha="center" if low else "right")
    # a little room past 0 and 1: a bin at a predicted or observed share of 1 is drawn whole
    ax.set(xlabel="predicted P(backdoor survives)", ylabel="observed share that survived", xlim=(-0.03, 1.03),
           ylim=(-0.03, 1.05),
           title="Calibration, leave one poisoned base out")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def render(results_dir: str | Path, csv_path: str | Path, doc_path: str | Path, figure: str | Path,
           model_path: str | Path, log: Callable[[str], None] = print,
           readme: str | Path | None = None) -> dict[str, Any]:
    """Write the table, the page, its figure and the model file; returns the analysis."""
    from spectra.io.files import write_text_atomic
    from spectra.provenance import json_safe
    from spectra.study.tables import load_results

    results = load_results(results_dir)
    rows = evidence_rows(results, load_grid(Path(results_dir).parent / "pt_grid"))  # docs/study/pt_grid
    write_table(rows, csv_path)
    an = analyse(rows)
    draw_calibration(an, Path(figure))
    doc = model_document(an, len(results))
    # strict JSON: a grouping without a computable AUROC is null, not NaN
    write_text_atomic(model_path, json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n")
    write_text_atomic(doc_path, page(an, rows, doc, csv_path, figure, doc_path))
    if readme is not None:
        from spectra.report.readme_blocks import update_file_blocks

        update_file_blocks(readme, {"forgetting-summary": readme_summary(an)})
    log(f"{len(rows)} rows ({len(an['A'])} MiniLM adapters and stages) → {csv_path}, {doc_path}, {model_path}")
    return an

