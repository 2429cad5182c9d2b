"""PEFT's intruder-dimension count for the evidence table's baselines.

Shuttleworth et al. (2025) call a leading singular vector of ``W + ΔW`` whose cosine with every
leading singular vector of ``W`` is below ε an *intruder dimension*; PEFT's
``reduce_intruder_dimension`` finds them (top 10, ε = 0.5, its defaults) and logs the count per
module. Counted here for every evidence run whose adapter and poisoned base are still on disk
(the results keep audit numbers, not weights), with PEFT's own function, and written into the
run's result as ``intruders`` so that ``scripts/reproduce.py forgetting`` can set the count
beside the audit's features as a baseline.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

TOP_K, EPSILON = 10, 0.5  # PEFT's defaults
_LINE = re.compile(r": (?:Intruders: (?P<n>\d+)|No intruders)$")


def count_intruders(base: str, adapter: str) -> dict[str, Any]:
    """PEFT's intruder count of ``adapter`` on ``base``: dimensions over all modules, and modules with any."""
    from peft.tuners.lora.intruders import reduce_intruder_dimension

    from spectra.io.model import load_classifier

    model, _ = load_classifier(base, adapter, num_labels=2, device="cpu")
    lines: list[str] = []
    reduce_intruder_dimension(model, top_k=TOP_K, threshold_epsilon=EPSILON, logging_sink=lines.append)
    counts = [int(m["n"] or 0) for m in map(_LINE.search, lines) if m]
    return {"dims": sum(counts), "modules_with": sum(c > 0 for c in counts), "modules": len(counts),
            "top_k": TOP_K, "epsilon": EPSILON, "by": "peft.tuners.lora.intruders.reduce_intruder_dimension"}


def _base_of(doc: dict[str, Any], work: Path) -> Path:
    if doc.get("canary"):
        return Path(doc["canary"]["poisoned_copy"])
    run = doc["run"]
    return work / "bases" / f"{run['model']}__{run['attack']}__b{run['base_seed']}__base"


def annotate(results: Path, work: Path, log: Callable[[str], None] = print) -> int:
    """Add ``intruders`` to every finetune result whose adapter and base are on disk; returns how many."""
    from spectra.study.records import write_json

    done = 0
    for path in sorted(results.glob("*__finetune__*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("intruders") or not doc.get("folder"):
            continue
        adapter = Path(doc["folder"]) / ("fix" if doc.get("canary") else "") / "adapter"
        base = _base_of(doc, work)
        if not (adapter / "adapter_config.json").is_file() or not (base / "config.json").is_file():
            continue
        try:
            doc["intruders"] = count_intruders(str(base), str(adapter))
        except Exception as exc:  # noqa: BLE001 - DoRA and other shapes PEFT's function does not take
            log(f"intruders: {path.stem}: not counted ({type(exc).__name__}: {exc})")
            continue
        write_json(path, doc)
        done += 1
        log(f"intruders: {path.stem}: {doc['intruders']['dims']} in {doc['intruders']['modules_with']} of "
            f"{doc['intruders']['modules']} modules")
    return done
