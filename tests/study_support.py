"""Result documents for the study's page tests: the shape ``spectra.study.execute`` writes."""

from __future__ import annotations

from typing import Any


def doc(kind: str, attack: str, method: str = "", seed: int = 0, base_seed: int = 0, **body: Any) -> dict[str, Any]:
    """A result of ``kind`` (MiniLM, tier 1) with ``body``'s keys."""
    run = {"kind": kind, "attack": attack, "base_seed": base_seed, "method": method, "seed": seed, "lr": None,
           "model": "minilm", "tier": 1}
    return {"id": f"{attack}-{kind}-{method}-b{base_seed}-s{seed}", "run": run, "wall_s": 60.0, **body}


def ev(ca: float, asr: float, floor: float = 0.1, collapsed: bool = False) -> dict[str, Any]:
    """An evaluation row as ``compact_eval`` stores it (fractions)."""
    return {"ca": ca, "asr": asr, "delta": ca - asr, "asr_floor": floor, "collapsed": collapsed}
