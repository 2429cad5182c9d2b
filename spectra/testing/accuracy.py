"""Accuracy checks of the spectral core against exact references, shared by tests and benchmarks.

- :func:`compare_rows`: the largest disagreement between two audit tables, row by row
  (σ relative, |cos| absolute, overlap absolute);
- :func:`forced_randomized_check`: the randomized top-k forced on every base weight an
  adapter touches (``min_dim_randomized=0``) against ``torch.linalg.svd``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from spectra.settings import TOP_K

#: the numbers the audit's accuracy targets are about
SIGMA_COLS = ("sigma_pre", "sigma_delta")
COS_COLS = ("cos_max_left", "cos_max_right")


def compare_rows(test: list[dict[str, Any]], ref: list[dict[str, Any]]) -> dict[str, Any]:
    """Largest disagreement of ``test`` against ``ref`` (lists of audit rows), matched by module.

    ``sigma_rel``: max over rows and over sigma_pre/sigma_delta of ``|a − b| / |b|``;
    ``cos_abs``: max over rows and over cos_max_left/right of ``|a − b|``; also per column
    and the module where each maximum occurs. Rows present in only one table raise.
    """
    ref_by = {r["module"]: r for r in ref}
    missing = [r["module"] for r in test if r["module"] not in ref_by]
    if missing or len(test) != len(ref):
        raise ValueError(f"tables do not match row by row ({len(test)} vs {len(ref)} rows; "
                         f"e.g. {missing[:3]} missing from the reference)")
    out: dict[str, Any] = {"rows": len(test)}
    for col in (*SIGMA_COLS, *COS_COLS, "overlap"):
        worst, where = 0.0, None
        for r in test:
            a, b = float(r[col]), float(ref_by[r["module"]][col])
            err = abs(a - b) / abs(b) if col in SIGMA_COLS and b != 0 else abs(a - b)
            if err > worst or where is None:
                worst, where = err, r["module"]
        out[col] = worst
        out[f"{col}_at"] = where
    out["sigma_rel"] = max(out[c] for c in SIGMA_COLS)
    out["cos_abs"] = max(out[c] for c in COS_COLS)
    return out


def forced_randomized_check(base: Path, adapter: Path, k: int = TOP_K, float64_ref: bool = False) -> dict[str, Any]:
    """Top-k of every base weight the adapter touches: randomized forced on every shape
    (``min_dim_randomized=0``) vs ``torch.linalg.svd`` (``exact=True``), per shape group.

    Returns ``{"groups": [...], "sigma1_rel", "sigma_rel", "one_minus_cos", "fallbacks", ...}``:
    max ``|σ_1 − σ_1*| / σ_1*``, max over the top k of ``|σ_i − σ_i*| / σ_i*``, and max over
    the top k of ``1 − |⟨u_i, u_i*⟩|`` and ``1 − |⟨v_i, v_i*⟩|``.
    """
    from collections import defaultdict

    import torch

    from spectra.io import base_weight_for, load_adapter, open_base
    from spectra.spectral import top_singular

    groups: dict[tuple[int, int], list[Any]] = defaultdict(list)
    with open_base(base) as ckpt:
        with load_adapter(adapter, ckpt) as ad:
            mods = {m.base_key: m for m in ad.modules if m.update_kind == "lora"}
            for key, m in mods.items():
                groups[tuple(m.shape)].append(base_weight_for(m, ckpt))
    out: dict[str, Any] = {"groups": [], "sigma1_rel": 0.0, "sigma_rel": 0.0, "one_minus_cos": 0.0,
                           "matrices": 0, "fallbacks": 0, "t_randomized_s": 0.0, "t_exact_s": 0.0}
    for shape, ws in sorted(groups.items()):
        W = torch.stack(ws)
        kk = min(k, *shape)
        t0 = time.perf_counter()
        r = top_singular(W, kk, min_dim_randomized=0)
        t_r = time.perf_counter() - t0
        t0 = time.perf_counter()
        e = top_singular(W.double() if float64_ref else W, kk, exact=True)
        t_e = time.perf_counter() - t0
        eS = e.S.to(r.S.dtype)
        s1 = float(((r.S[:, 0] - eS[:, 0]).abs() / eS[:, 0]).max())
        si = float(((r.S - eS).abs() / eS.clamp_min(torch.finfo(eS.dtype).tiny)).max())
        cu = 1 - (r.U * e.U.to(r.U.dtype)).sum(-2).abs()
        cv = 1 - (r.Vh * e.Vh.to(r.Vh.dtype)).sum(-1).abs()
        cos = float(torch.maximum(cu, cv).max())
        fallbacks = int((~r.certified).sum()) if r.method != "exact" else len(ws)
        g = {"shape": f"{shape[0]}x{shape[1]}", "count": len(ws), "method": r.method, "randomized_s": t_r,
             "exact_s": t_e, "sigma1_rel": s1, "sigma_rel": si, "one_minus_cos": cos, "fallbacks": fallbacks}
        out["groups"].append(g)
        out["sigma1_rel"] = max(out["sigma1_rel"], s1)
        out["sigma_rel"] = max(out["sigma_rel"], si)
        out["one_minus_cos"] = max(out["one_minus_cos"], cos)
        out["matrices"] += len(ws)
        out["fallbacks"] += fallbacks
        out["t_randomized_s"] += t_r
        out["t_exact_s"] += t_e
    return out
