"""Audit many adapters against one base: the base opened once, each weight's top-k computed once.

:class:`BaseAuditor` holds an open base checkpoint and the top-k of every base weight it has
needed so far (read from the content-keyed spectrum cache, or computed and written there). Each
adapter then costs what its own update costs: loading its factors and the exact low-rank SVD of
each module. Whatever goes wrong with one adapter — corrupt, hostile, made for another base —
becomes an error row with its one-line reason; the auditor goes on. A Ray actor wraps one of
these per base and worker (:mod:`spectra.fleet.scan`).
"""

from __future__ import annotations

import time
from typing import Any

from spectra.errors import SpectraError, one_line

#: per-adapter summary columns (beside the forgetting verdict's fields and the error)
SUMMARY = ("modules", "ratio_min", "ratio_median", "cos_max", "overlap_median")


class BaseAuditor:
    """Audits adapters against one base (see the module docstring)."""

    def __init__(self, base: str, top_k: int = 32, cache_dir: Any = None, device: str = "cpu",
                 memory_budget_mb: int = 256, spectra: dict[str, Any] | None = None) -> None:
        import torch

        from spectra.audit import _resolve
        from spectra.forgetting import architecture_key
        from spectra.io import open_base
        from spectra.io.spectrum_cache import SpectrumCache, default_folder

        self.base = base
        self.top_k = top_k
        self.budget = memory_budget_mb << 20
        self.dev, self.dtype = _resolve(device, "float32")
        self.cache = None if cache_dir is False else SpectrumCache(cache_dir or default_folder())
        self.ckpt = open_base(base)
        self.architecture = architecture_key(self.ckpt.config)
        self.spectra: dict[str, Any] = dict(spectra or {})
        self.seconds = {"base": 0.0, "adapters": 0.0}
        torch.set_grad_enabled(False)

    def close(self) -> None:
        self.ckpt.close()

    def timings(self) -> dict[str, float]:
        """Seconds spent on base spectra and on adapters so far (a Ray actor's, fetched by the driver)."""
        return dict(self.seconds)

    def _ensure(self, modules: list[Any]) -> None:
        """Compute (or read from the cache) the top-k of base weights not seen yet, in batches."""
        from spectra.audit import _base_spectra

        missing = {m.base_key: m for m in modules if m.base_key not in self.spectra}
        if missing:
            t0 = time.perf_counter()
            self.spectra.update(_base_spectra(self.ckpt, missing, self.top_k, False, self.dev, self.dtype,
                                              self.cache, self.budget, lambda n: None))
            self.seconds["base"] += time.perf_counter() - t0

    def audit(self, item_id: str, adapter: str, revision: str | None = None) -> tuple[dict[str, Any], list[dict]]:
        """``(adapter row, module rows)``; a failure is an adapter row with ``error`` and no module rows."""
        t0 = time.perf_counter()
        try:
            rows = self._rows(item_id, adapter, revision)
        except (SpectraError, OSError, ValueError, RuntimeError) as exc:
            return error_row(item_id, adapter, self.base, one_line(exc) or type(exc).__name__), []
        except Exception as exc:  # noqa: BLE001 - one adapter must never end the fleet
            return error_row(item_id, adapter, self.base, f"internal error ({type(exc).__name__}: {one_line(exc)})"), []
        finally:
            self.seconds["adapters"] += time.perf_counter() - t0
        return summary_row(item_id, adapter, self.base, rows, self.architecture), rows

    def _rows(self, item_id: str, adapter: str, revision: str | None) -> list[dict[str, Any]]:
        import warnings

        from spectra.audit import module_row
        from spectra.errors import NothingToAudit
        from spectra.io import load_adapter

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a fleet's notes belong in its rows, not on the console
            with load_adapter(adapter, self.ckpt, revision=revision) as loaded:
                mods = list(loaded.modules)
                if not mods:
                    raise NothingToAudit(f"{adapter}: no module of a supported kind to audit")
                self._ensure(mods)
                return [module_row(item_id, m, self.ckpt, self.spectra[m.base_key], self.dev, self.dtype)
                        for m in mods]


def error_row(item_id: str, adapter: str, base: str | None, reason: str) -> dict[str, Any]:
    return {"id": item_id, "adapter": adapter, "base": base, "status": "error", "error": reason}


def summary_row(item_id: str, adapter: str, base: str, rows: list[dict[str, Any]], architecture: str) -> dict[str, Any]:
    """The adapter's fleet row: its headline numbers and its forgetting verdict (flattened)."""
    import math
    import statistics

    from spectra.forgetting import adapter_verdict

    finite = [r["ratio"] for r in rows if math.isfinite(r["ratio"])]
    block = adapter_verdict(rows, architecture)
    out = {"id": item_id, "adapter": adapter, "base": base, "status": "ok", "error": None, "modules": len(rows),
           "ratio_min": min(finite) if finite else math.inf,
           "ratio_median": statistics.median(finite) if finite else math.inf,
           "cos_max": max(max(r["cos_max_left"], r["cos_max_right"]) for r in rows),
           "overlap_median": statistics.median(r["overlap"] for r in rows),
           "forgetting_evidence": block["evidence"], "forgetting_p_survives": block.get("p_survives"),
           "forgetting_estimate": block["estimate"], "forgetting_reason": block.get("reason")}
    for name, value in (block.get("features") or {}).items():
        out[f"feature_{name}"] = value
    return out
