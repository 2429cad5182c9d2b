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
from spectra.settings import TOP_K

#: per-adapter summary columns (beside the forgetting verdict's fields and the error)
SUMMARY = ("modules", "ratio_min", "ratio_median", "cos_max", "overlap_median")


class BaseAuditor:
    """Audits adapters against one base (see the module docstring)."""

    def __init__(self, base: str, top_k: int = TOP_K, cache_dir: Any = None, device: str = "cpu",
                 memory_budget_mb: int | None = None, spectra: dict[str, Any] | None = None,
                 threads: int | None = None) -> None:
        import torch

        if threads:  # one Ray actor per CPU: its kernels must not fight the others for the cores
            torch.set_num_threads(threads)

        from spectra.audit import _resolve
        from spectra.forgetting import architecture_key
        from spectra.io import open_base
        from spectra.io.spectrum_cache import SpectrumCache, default_folder

        self.base = base
        self.top_k = top_k
        if memory_budget_mb is None:  # the audit's default: one home (spectra.audit.settings)
            from spectra.audit.settings import AuditSettings

            memory_budget_mb = AuditSettings().memory_budget_mb
        self.budget = memory_budget_mb << 20
        self.dev, self.dtype = _resolve(device, "float32")
        self.cache = None if cache_dir is False else SpectrumCache(cache_dir or default_folder())
        self.ckpt = open_base(base)
        self.architecture = architecture_key(self.ckpt.config)
        self.spectra: dict[str, Any] = dict(spectra or {})
        self.frames: dict[tuple[str, ...], Any] = {}  # stacked base vectors per module group
        self.seconds = {"base": 0.0, "adapters": 0.0}

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
        import torch

        # no autograd graph (not a process-wide switch: the scan may run inside a training process)
        with torch.no_grad():
            return self._rows_no_grad(item_id, adapter, revision)

    def _rows_no_grad(self, item_id: str, adapter: str, revision: str | None) -> list[dict[str, Any]]:
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
                batched = batched_rows(item_id, [m for m in mods if m.update_kind == "lora"], self.spectra,
                                       self.dev, self.dtype, self.frames)
                rows = {r["module"]: r for r in batched}
                for m in mods:  # DoRA, embedding LoRA, dense updates, and any batch that needs a closer look
                    if m.name not in rows:
                        rows[m.name] = module_row(item_id, m, self.ckpt, self.spectra[m.base_key], self.dev,
                                                  self.dtype)
                return [rows[m.name] for m in mods]


def batched_rows(label: str, mods: list[Any], spectra: dict[str, Any], dev: Any, dtype: Any,
                 frames: dict[tuple[str, ...], Any] | None = None) -> list[dict[str, Any]]:
    """The audit rows of plain LoRA modules, one batched computation per (shape, rank): the same
    numbers :func:`spectra.audit.module_row` gives module by module (``tests/test_fleet.py``
    compares them), at a fraction of the Python and kernel-launch cost — an all-linear adapter of
    a 30-layer model has 210 modules in 7 shapes — and from r × r algebra instead of ΔW's
    singular vectors (:func:`~spectra.spectral.projected_statistics`; the QR path for a group with
    a rank-deficient factor). A group whose factors are not all finite is
    left out, for :func:`module_row` to name the tensor. ``frames`` caches each group's stacked,
    unit-normalised base vectors across calls (a fleet's adapters touch the same modules)."""
    import torch

    from spectra.audit.compute import assemble_row
    from spectra.spectral import (
        alignment_and_overlap,
        frobenius_from_singular_values,
        lowrank_svd,
        projected_statistics,
    )

    groups: dict[tuple, list[tuple[Any, Any]]] = {}
    for m in mods:
        up = m.load_update(dtype=dtype)
        groups.setdefault((tuple(m.shape), m.rank), []).append((m, up))
    out = []
    for members in groups.values():
        B = torch.stack([u.B for _, u in members]).to(dev)
        A = torch.stack([u.A for _, u in members]).to(dev)
        if not (bool(torch.isfinite(B.sum())) and bool(torch.isfinite(A.sum()))):
            continue
        scale = torch.tensor([float(u.scale) for _, u in members], dtype=dtype, device=dev)
        tops = [spectra[m.base_key] for m, _ in members]
        key = tuple(m.base_key for m, _ in members)
        if frames is not None and key in frames:
            U_pre, Vh_pre = frames[key]
        else:
            U_pre = torch.stack([t[0] for t in tops]).to(dev, dtype)
            Vh_pre = torch.stack([t[2] for t in tops]).to(dev, dtype)
            U_pre = U_pre / torch.linalg.vector_norm(U_pre, dim=-2, keepdim=True)  # alignment()'s re-normalisation,
            Vh_pre = Vh_pre / torch.linalg.vector_norm(Vh_pre, dim=-1, keepdim=True)  # done once per group
            if frames is not None:
                frames[key] = (U_pre, Vh_pre)
        found, ok = projected_statistics(B, A, scale, U_pre, Vh_pre)  # r × r algebra, no singular vectors
        if not bool(ok.all()):  # a rank-deficient factor somewhere in the group: the QR path, exact for it
            svd = lowrank_svd(B, A, scale)
            found = {"S": svd.S, **alignment_and_overlap(U_pre, Vh_pre, svd.U, svd.S, svd.Vh)}
        S = found.pop("S")
        stats = {k: v.tolist() for k, v in found.items()}
        frob = frobenius_from_singular_values(S).tolist()
        sigma_delta = S[:, 0].tolist()
        for i, (m, _) in enumerate(members):  # Python floats from one .tolist() per statistic, not per entry
            out.append(assemble_row(label, m, tops[i], sigma_delta[i], {key: v[i] for key, v in stats.items()},
                                    frob[i]))
    return out


def error_row(item_id: str, adapter: str, base: str | None, reason: str) -> dict[str, Any]:
    """The fleet row of an adapter that could not be audited: its id, paths and the one-line reason (an
    'unaudited' finding)."""
    return {"id": item_id, "adapter": adapter, "base": base, "status": "error", "error": reason}


def summary_row(item_id: str, adapter: str, base: str, rows: list[dict[str, Any]], architecture: str) -> dict[str, Any]:
    """The adapter's fleet row: its headline numbers and its forgetting verdict (flattened)."""
    import math

    from spectra.audit.report import summary_rows
    from spectra.forgetting import adapter_verdict

    block = adapter_verdict(rows, architecture)
    head = summary_rows(rows)[0]  # the audit's own summary: undefined and infinite values left out alike
    out = {"id": item_id, "adapter": adapter, "base": base, "status": "ok", "error": None, "modules": len(rows),
           # no finite ratio (every update zero): ∞, as before
           "ratio_min": math.inf if math.isnan(head["ratio_min"]) else head["ratio_min"],
           "ratio_median": math.inf if math.isnan(head["ratio_median"]) else head["ratio_median"],
           "cos_max": head["cos_max"], "overlap_median": head["overlap_median"],
           "forgetting_evidence": block["evidence"], "forgetting_p_survives": block.get("p_survives"),
           "forgetting_estimate": block["estimate"], "forgetting_reason": block.get("reason")}
    for name, value in (block.get("features") or {}).items():
        out[f"feature_{name}"] = value
    return out

