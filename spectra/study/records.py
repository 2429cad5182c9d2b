"""What a study run keeps: the compact evaluation numbers, audit and Pt summaries, and the
atomic JSON write every result goes through."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: the numbers kept from an EvalResult (the rest is provenance the run folder keeps)
EVAL_KEYS = ("ca", "asr", "delta", "asr_floor", "collapsed", "majority_share", "ca_ci", "asr_ci", "asr_floor_ci",
             "n_clean", "n_triggered", "predicted_share")


def compact_eval(row: dict[str, Any]) -> dict[str, Any]:
    """The evaluation numbers a study row needs, from an ``EvalResult.to_dict()``."""
    return {k: row.get(k) for k in EVAL_KEYS}


def rebuild_check(committed: dict[str, Any], rebuilt: dict[str, Any]) -> dict[str, Any]:
    """Whether a poisoned base rebuilt from its recipe evaluates exactly as the committed one did.

    Runs paired with the study's older runs (same seed, same base) are only paired if the base is
    the same checkpoint; the weights are not committed, so its held-out evaluation — every
    number in :data:`EVAL_KEYS` that both sides hold — is the fingerprint compared.
    """
    keys = [k for k in EVAL_KEYS if k in committed and k in rebuilt]
    differences = {k: [committed[k], rebuilt[k]] for k in keys if committed[k] != rebuilt[k]}
    return {"identical": bool(keys) and not differences, "compared": keys, "differences": differences}


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` to ``path`` atomically (a temporary sibling, then a rename)."""
    from spectra.io.files import write_text_atomic
    from spectra.provenance import json_safe

    write_text_atomic(path, json.dumps(json_safe(doc), indent=1, sort_keys=False, allow_nan=False) + "\n")


def audit_summary(base: str, adapter: Path, top_k: int) -> dict[str, Any]:
    """Medians of the audit's headline numbers over the adapter's LoRA modules."""
    from spectra.audit import AuditSettings, audit
    from spectra.train.fix import _lora_patterns

    settings = AuditSettings(top_k=top_k, device="cpu", modules=_lora_patterns(base, [adapter]))
    report = audit(base, [str(adapter)], settings, names=["adapter"])
    summary = json.loads(report.summary().to_json(orient="records"))[0]
    table = report.table
    summary["modules_table"] = [{k: row[k] for k in ("module", "layer", "module_type", "ratio", "cos_max_left",
                                                     "cos_max_right", "overlap", "sigma_pre", "sigma_delta")}
                                for row in json.loads(table.to_json(orient="records"))]
    return summary


def rescale_summary(path: Path) -> dict[str, Any]:
    """Pt's per-module multipliers s'/s (where Pt lands on the sweep's axis)."""
    import pandas as pd

    table = pd.read_csv(path)
    done = table[table["rescaled"]]
    mult = (done["scale_after"] / done["scale_before"]).tolist()
    return {"modules": done["module"].tolist(), "multipliers": mult,
            "multiplier_median": float(pd.Series(mult).median()) if mult else None,
            "multiplier_min": min(mult) if mult else None, "multiplier_max": max(mult) if mult else None}


def epoch_records(path: Path) -> list[dict[str, Any]]:
    """The per-epoch training log (``train_log.csv``) as records with the study's columns."""
    import pandas as pd

    table = pd.read_csv(path)
    keep = [c for c in ("epoch", "step", "loss", "task_loss", "penalty", "val_ca", "val_loss", "val_asr_monitor",
                        "overlap", "ratio_median", "ratio_min", "learning_rate") if c in table.columns]
    return [{k: (None if pd.isna(v) else float(v)) for k, v in row.items()} for row in table[keep].to_dict("records")]
