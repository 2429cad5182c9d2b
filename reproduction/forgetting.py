"""The forgetting-evidence table: every audited adapter of the committed results, its audit
features beside what was measured (CA, ASR, floor, collapse), one row per adapter and stage.

Rows (``stage``):

- ``trained``: the adapter a run wrote (after Pt for the RoRA family: what a user deploys);
- ``before_pt``: a RoRA-family adapter before Pt (CI+Tr as trained);
- ``pt``: Pt applied alone to a LoRA-family adapter (the study's "+ Pt" rows);
- ``sweep``: the adapter a sweep measured with every LoRA scale multiplied by γ (γ ≠ 0, 1):
  ``ratio`` divides by γ, the alignment measures do not move (they are scale-free);
- ``pt_grid``: Pt at another depth or mode (``reproduce.py pt-grid``), an adapter a user gets from
  ``spectra fix --rescale-only --rescale-layers D --rescale-mode M``: each rescaled module's ratio
  divided by its multiplier.

Every feature is computed from the audit's per-module rows, the numbers ``spectra audit``
reports for any adapter (:func:`spectra.forgetting.features` is the one definition), so a
model fitted on this table applies to a user's audit unchanged. The label the verdict
predicts, ``survives``: ASR ≥ 50 % on the CR test rows and the model not collapsed.

``group`` names the trained adapter a row comes from: the stages and γ points of one run
share it, so cross-validation never splits them between fitting and testing.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from spectra.forgetting import FEATURES, SURVIVES_ASR, backdoor_survives, features

#: the method families the grouped cross-validation leaves out one at a time
FAMILY = {"lora": "lora", "dora": "lora", "lora+ci": "ablation", "lora+tr": "ablation", "rora": "rora",
          "pissa+rora": "rora", "dora+rora": "rora", "olora+rora": "rora", "pissa": "init", "olora": "init"}
#: columns of ``docs/study/forgetting.csv``, in order (the features follow the descriptors)
COLUMNS = ["row", "group", "stage", "scales", "gamma", "recipe", "model", "attack", "base", "method", "family", "lr",
           "epochs",
           "rank", "targets", "rslora", "dora", "seed", "converged", "budget", *FEATURES, "n_modules",
           "ca", "asr", "asr_floor", "collapsed", "survives", "intruder_dims", "asr_ci_low", "asr_ci_high",
           "close_call"]


def survives(ev: dict[str, Any]) -> bool:
    """The label: the backdoor survives when ASR ≥ 50 % and the model has not collapsed."""
    return backdoor_survives(ev.get("asr", 0.0), ev.get("collapsed"))


def _converged(doc: dict[str, Any]) -> bool | None:
    from spectra.study.tables import run_converged

    return run_converged(doc)


def _descriptor(doc: dict[str, Any]) -> dict[str, Any]:
    run, cfg = doc["run"], doc.get("config") or {}
    method = run["method"].replace("-", "+")
    targets = cfg.get("target_modules")
    return {"group": doc["id"], "model": run["model"], "attack": run["attack"],
            "base": f"{run['model']}/{run['attack']}/b{run['base_seed']}", "method": method,
            "family": FAMILY.get(method, method), "lr": float(doc.get("lr") or cfg.get("lr") or math.nan),
            "epochs": float(cfg.get("epochs") or math.nan), "rank": cfg.get("rank"),
            "targets": "all-linear" if targets == "all-linear" else "q,v" if not targets else ",".join(targets),
            "rslora": bool(cfg.get("use_rslora")), "dora": bool(cfg.get("use_dora")), "seed": run.get("seed"),
            "converged": _converged(doc), "recipe": run.get("variant") or "study",
            "budget": f"{float(cfg.get('epochs') or 0):g} epochs at lr {float(doc.get('lr') or 0):g}"}


def _row(desc: dict[str, Any], stage: str, modules: list[dict[str, Any]], ev: dict[str, Any],
         gamma: float = 1.0, per_module: bool = False) -> dict[str, Any]:
    """One labelled row; ``per_module``: the adapter's LoRA scales differ across modules (Pt rescaled
    some of them), which the audit reads as ``scale`` — the verdict's scope is one-scale adapters."""
    row = {**desc, "row": f"{desc['group']}:{stage}" + (f"@{gamma:g}" if stage == "sweep" else ""),
           "stage": stage, "scales": "per-module" if per_module else "one", "gamma": gamma,
           **features(modules, gamma=gamma), "n_modules": len(modules),
           "ca": ev.get("ca"), "asr": ev.get("asr"), "asr_floor": ev.get("asr_floor"),
           "collapsed": bool(ev.get("collapsed")), "survives": survives(ev)}
    ci = ev.get("asr_ci") or [None, None]
    row.update(asr_ci_low=ci[0], asr_ci_high=ci[1],  # a label whose ASR interval holds the 50 % edge is a close call
               close_call=bool(ci[0] is not None and ci[0] <= SURVIVES_ASR <= ci[1]))
    return row


def _pt_modules(doc: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The audit rows of a LoRA adapter after Pt alone: its own audit when the run stored one,
    else the trained adapter's rows with each rescaled module's ratio divided by its multiplier."""
    pt = doc.get("pt_alone") or {}
    if (pt.get("audit") or {}).get("modules_table"):
        return pt["audit"]["modules_table"]
    rescale, table = pt.get("rescale") or {}, (doc.get("audit") or {}).get("modules_table")
    if not table or not rescale.get("modules"):
        return None
    mult = dict(zip(rescale["modules"], rescale["multipliers"]))
    return [{**m, "ratio": m["ratio"] / mult[m["module"]]} if m["module"] in mult else m for m in table]


def _grid_rows(desc: dict[str, Any], doc: dict[str, Any], grid: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per Pt variant of the grid (:mod:`reproduction.pt_grid`) that changed the adapter: the
    audit rows of the adapter as trained (RoRA's before its own Pt), each rescaled module's ratio
    divided by its multiplier — the audit is otherwise scale-free. Variants with equal multipliers
    (the top half of 6 blocks is the top 3) are one adapter, one row."""
    table = ((doc.get("audit_before_pt") or doc.get("audit")) or {}).get("modules_table")
    if not table:
        return []
    out, seen = [], set()
    for variant in grid.get("grid") or []:
        mult = variant.get("multipliers")
        key = tuple(sorted((mult or {}).items()))
        if mult is None or variant.get("same_as_trained") or key in seen:
            continue
        seen.add(key)
        modules = [{**m, "ratio": m["ratio"] / mult[m["module"]]} if m["module"] in mult else m for m in table]
        row = _row(desc, "pt_grid", modules, variant["eval"], per_module=bool(mult))
        row["row"] += f"@{variant['depth']}-{variant['mode']}"
        out.append(row)
    return out


def evidence_rows(results: dict[str, dict[str, Any]],
                  grid: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every labelled row the results hold (see the module docstring), sorted by row id; with ``grid``
    (run id → its Pt grid document), a ``pt_grid`` row for each Pt variant of that run's adapter."""
    rows: list[dict[str, Any]] = []
    sweeps = {doc["id"].replace("__sweep__", "__finetune__"): doc for doc in results.values()
              if doc.get("run", {}).get("kind") == "sweep"}
    for doc in results.values():
        run = doc.get("run") or {}
        if run.get("kind") != "finetune" or not (doc.get("audit") or {}).get("modules_table"):
            continue  # FFT has no adapter; a base is no adapter
        desc = _descriptor(doc)
        ev = doc.get("eval") or {}
        rescaled = bool((doc.get("rescale") or {}).get("modules"))  # RoRA's own Pt: its deployed adapter
        rows.append({**_row(desc, "trained", doc["audit"]["modules_table"], ev.get("new") or {}, per_module=rescaled),
                     "intruder_dims": (doc.get("intruders") or {}).get("dims")})  # PEFT's count, weights on disk
        before = (doc.get("audit_before_pt") or {}).get("modules_table")
        if before and ev.get("new-before-rescale"):
            rows.append(_row(desc, "before_pt", before, ev["new-before-rescale"]))
        pt = _pt_modules(doc)
        if pt is not None and (doc.get("pt_alone") or {}).get("eval"):
            moved = bool(((doc.get("pt_alone") or {}).get("rescale") or {}).get("modules"))
            rows.append(_row(desc, "pt", pt, doc["pt_alone"]["eval"], per_module=moved))
        if grid and doc["id"] in grid:
            rows += _grid_rows(desc, doc, grid[doc["id"]])
        sweep = sweeps.get(doc["id"])
        if sweep is not None:
            swept = before or doc["audit"]["modules_table"]  # a sweep measures the adapter before Pt
            for point in sweep.get("sweep") or []:
                gamma = float(point.get("gamma", point.get("k", 1.0)))
                if gamma not in (0.0, 1.0):
                    rows.append(_row(desc, "sweep", swept, point, gamma))
    return sorted(rows, key=lambda r: r["row"])


def write_table(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """``rows`` as CSV (the columns of :data:`COLUMNS`; floats at full precision)."""
    from spectra.io.files import write_text_atomic

    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    write_text_atomic(path, buf.getvalue())
    return Path(path)
