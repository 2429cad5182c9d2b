"""``spectra.audit.compute``: the per-module spectral audit of one or more adapters against a base.

For every adapted module it reports how strong the update is relative to the base layer
(σ_max(W_pre) / σ_max(s·ΔW), paper Figure 1) and how much the update points into the base
layer's dominant subspaces (paper Figure 2). The math lives in :mod:`spectra.spectral`,
file access in :mod:`spectra.io`, drawing in :mod:`spectra.report`; this module only
orchestrates: stream base weights in same-shape batches, reuse cached base spectra, and
collect one row per (adapter, module).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from spectra.audit.report import COLUMNS, DEFINITIONS, AuditReport  # noqa: F401 (public here since 0.1)
from spectra.audit.settings import AuditSettings
from spectra.errors import SpectraError
from spectra.settings import with_legacy

if TYPE_CHECKING:  # pragma: no cover
    from spectra.io import BaseCheckpoint

# --------------------------------------------------------------------------------------
# computation


def _resolve(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    from spectra.device import resolve_device

    if dtype not in ("float32", "float64"):
        raise SpectraError(f"--dtype {dtype}: choose float32 or float64")
    return resolve_device(device), getattr(torch, dtype)


def _select(modules: Sequence[Any], patterns: Sequence[str] | None) -> list[Any]:
    """Keep modules whose name or type matches any pattern (regex search)."""
    if not patterns:
        return list(modules)
    import re

    try:
        regexes = [re.compile(p) for p in patterns]
    except re.error as exc:
        raise SpectraError(f"--modules: bad pattern ({exc})") from None
    return [m for m in modules if any(r.search(m.name) or r.fullmatch(m.module_type) for r in regexes)]


def _check_finite(tensor: torch.Tensor, what: str) -> None:
    from spectra.spectral.lowrank import all_finite

    if not all_finite(tensor):
        raise SpectraError(f"{what}: weights contain NaN or Inf")


def _batches(keys: list[str], shape: tuple[int, int], budget_bytes: int) -> list[list[str]]:
    """Split same-shape keys into batches whose float32 stack fits the memory budget."""
    per = max(1, budget_bytes // (shape[0] * shape[1] * 4))
    return [keys[i:i + per] for i in range(0, len(keys), per)]


def _read_batch(base: Any, batch: list[str]) -> tuple[list[Any], int]:
    """The stored tensors of ``batch`` mapped from the checkpoint (``MappedTensor``s of
    :mod:`spectra.io._tensors`, the kernel already reading them ahead), and their bytes.

    Runs on the read-ahead thread, so it only maps and advises: no copy and no torch
    kernel. A kernel there (the dtype conversion) would start a second OpenMP team beside
    the compute's, four threads spinning on two cores (measured 25 % slower than no
    read-ahead at all); even a plain ``readinto`` there cost the compute 4–5 % of its speed.
    """
    from spectra.io._tensors import check_auditable

    maps: list[Any] = []
    try:
        for key in batch:
            check_auditable(base.dtype(key), f"{base.file_of(key)}: tensor {key}")
            maps.append(base.mapped(key))
    except BaseException:
        for mt in maps:  # a bad tensor further on: unmap the ones already mapped
            mt.close()
        raise
    return maps, sum(mt.nbytes for mt in maps)


def _zero_copy(maps: list[Any], modules: dict[str, Any], batch: list[str], dev: torch.device,
               dtype: torch.dtype) -> bool:
    """Whether ``batch`` is one CPU weight already in ``dtype`` and orientation, usable as mapped."""
    if len(batch) != 1 or dev.type != "cpu" or modules[batch[0]].base_transposed:
        return False
    t = maps[0].tensor
    return t is not None and t.dtype == dtype and t.is_contiguous()


def _stack_batch(maps: list[Any], modules: dict[str, Any], batch: list[str], shape: tuple[int, int],
                 dev: torch.device, dtype: torch.dtype, buffer: list[torch.Tensor]) -> torch.Tensor:
    """The mapped tensors stacked as ``(len(batch), m, n)`` in ``dtype`` on ``dev``: each one
    converted straight from the file's bytes into its slot (no per-tensor copy, no
    ``stack``), then unmapped.

    The stack lives in ``buffer[0]``, reused from batch to batch (grown when too small): a
    fresh 46 MB tensor is a fresh ``mmap``, and faulting in its pages cost more than the
    conversion itself (measured: bench/README.md, "Reading the base").
    """
    need = len(batch) * shape[0] * shape[1]
    if not buffer or buffer[0].numel() < need or buffer[0].dtype != dtype or buffer[0].device != dev:
        buffer[:] = [torch.empty(need, dtype=dtype, device=dev)]
    out = buffer[0][:need].view(len(batch), *shape)
    try:
        for i, (key, mt) in enumerate(zip(batch, maps)):
            out[i].copy_(mt.tensor.T if modules[key].base_transposed else mt.tensor)
    finally:  # unmapped whether or not every conversion succeeded
        for mt in maps:
            mt.close()
    return out


def _name_non_finite(stack: torch.Tensor, batch: list[str], base: Any) -> None:
    """Raise naming the first tensor of ``batch`` with a NaN/Inf, if any (the element-wise
    test runs only after :func:`top_singular`'s one-sum screen of the batch has failed)."""
    for key, w in zip(batch, stack):
        _check_finite(w, f"{base.path}: {key}")


def _base_spectra(base: Any, modules: dict[str, Any], top_k: int, exact: bool, dev: torch.device,
                  dtype: torch.dtype, cache: Any, budget_bytes: int,
                  tick: Callable[[int], None],
                  work: dict[str, float] | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]]:
    """Top-k of every base weight an adapter touches, batched by shape, cached by content.

    ``work`` (when given) receives ``base_gflop`` and ``base_bytes_read``: the arithmetic
    and the checkpoint bytes this took, for rooflines (cache hits cost neither).

    While one batch is decomposed, the next is read from disk by a background thread
    (file reads release the GIL), so I/O overlaps the compute; at most one batch is in
    memory as stored and one in the compute dtype.
    """
    from concurrent.futures import ThreadPoolExecutor

    from spectra.io.spectrum_cache import spectrum_key
    from spectra.spectral import TopK, top_singular
    from spectra.spectral.topk import NonFiniteMatrix

    method = "exact" if exact else "randomized"
    result: dict[str, Any] = {}
    pending: dict[tuple[int, int], list[str]] = defaultdict(list)
    keys: dict[str, str] = {}
    for base_key, module in modules.items():
        m, n = module.shape
        keys[base_key] = spectrum_key(base.fingerprint(base_key) + f"|{m}x{n}", min(top_k, m, n), str(dtype), method)
        hit = cache.get(keys[base_key]) if cache is not None else None
        if hit is not None:
            result[base_key] = (hit.U, hit.S, hit.Vh, f"cache:{hit.method}")
            tick(1)
        else:
            pending[(m, n)].append(base_key)
    jobs = [(shape, batch) for shape, group in pending.items() for batch in _batches(group, shape, budget_bytes // 2)]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="spectra-read") as reader:
        ahead = reader.submit(_read_batch, base, jobs[0][1]) if jobs else None
        buffer: list[torch.Tensor] = []
        for j, (shape, batch) in enumerate(jobs):
            maps, read = ahead.result()
            ahead = reader.submit(_read_batch, base, jobs[j + 1][1]) if j + 1 < len(jobs) else None
            if _zero_copy(maps, modules, batch, dev, dtype):
                # a lone weight stored in the compute dtype (what a batch over half the budget
                # is): decomposed where the file maps it, not copied — a 1 GiB weight costs 1 GiB
                stack, mapped = maps[0].tensor.unsqueeze(0), maps
            else:
                stack, mapped = _stack_batch(maps, modules, batch, shape, dev, dtype, buffer), []
            del maps
            try:
                # a layer narrower than k (a 2-way classifier head) gets its whole row space
                top = top_singular(stack, min(top_k, *shape), exact=exact, memory_budget_bytes=budget_bytes)
            except SpectraError as exc:
                if isinstance(exc, NonFiniteMatrix):
                    _name_non_finite(stack, batch, base)  # top_singular screens the batch; name the tensor
                names = ", ".join(batch[:2]) + (f" (+{len(batch) - 2})" if len(batch) > 2 else "")
                raise SpectraError(f"{base.path}: {names}: {exc}") from None
            finally:
                del stack
                for mt in mapped:  # after the last use of the view
                    mt.close()
            if work is not None:
                work["base_gflop"] = work.get("base_gflop", 0.0) + top.gflop
                work["base_bytes_read"] = work.get("base_bytes_read", 0) + read
            for i, key in enumerate(batch):
                how = f"{top.method.split('+')[0]}-certified" if bool(top.certified[i]) else "exact"
                one = TopK(top.U[i].cpu(), top.S[i].cpu(), top.Vh[i].cpu(), top.certified[i].cpu(),
                           top.residual[i].cpu(), how)
                if cache is not None:
                    cache.put(keys[key], one)
                result[key] = (one.U, one.S, one.Vh, how)
            tick(len(batch))
    return result


def _update_spectrum(module: Any, base: Any, U_pre: torch.Tensor, Vh_pre: torch.Tensor, dev: torch.device,
                     dtype: torch.dtype, top_j: int) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], float, dict[str, float]]:
    """SVD of s·ΔW (thin, from the factors for LoRA: never a dense ΔW), its Frobenius norm
    and its energy share in W_pre's top-k subspaces.

    Dense updates (full fine-tuning, modules_to_save, DoRA's effective update) are read
    once; their overlap uses the whole ΔW since only its leading triplets are kept.
    """
    from spectra.io import DenseUpdate, base_weight_for
    from spectra.io.keys import NEEDS_BASE_KINDS
    from spectra.spectral import frobenius_from_singular_values, lowrank_svd, subspace_overlap, top_singular

    needs_base = module.update_kind in NEEDS_BASE_KINDS
    base_weight = base_weight_for(module, base).to(dtype) if needs_base else None
    update = module.load_update(base_weight=base_weight, dtype=dtype)
    U_pre, Vh_pre = U_pre.to(dev, dtype), Vh_pre.to(dev, dtype)
    if isinstance(update, DenseUpdate):
        delta = update.delta.to(dev, dtype)
        _check_finite(delta, f"{module.name}: update")
        energy = float(delta.pow(2).sum())
        j = min(max(1, top_j), min(delta.shape))
        if energy == 0.0:
            m, n = delta.shape
            zeros = (torch.zeros(m, j, dtype=dtype), torch.zeros(j, dtype=dtype), torch.zeros(j, n, dtype=dtype))
            return zeros, 0.0, {"overlap_left": 0.0, "overlap_right": 0.0, "overlap": 0.0}
        # clamped as subspace_overlap clamps: rounding put a 2-row head's (fully contained) share at 1.00000007
        left = min(1.0, float((U_pre.T @ delta).pow(2).sum()) / energy)
        right = min(1.0, float((delta @ Vh_pre.T).pow(2).sum()) / energy)
        top = top_singular(delta, j, exact=True)
        svd = (top.U.cpu(), top.S.cpu(), top.Vh.cpu())
        return svd, energy ** 0.5, {"overlap_left": left, "overlap_right": right, "overlap": (left + right) / 2}
    B = update.B.to(dev, dtype)
    A = update.A.to(dev, dtype)
    _check_finite(B, f"{module.name}: lora_B")
    _check_finite(A, f"{module.name}: lora_A")
    try:
        svd = lowrank_svd(B, A, float(update.scale))
    except (RuntimeError, torch.linalg.LinAlgError) as exc:  # factors so large that the QR overflows
        raise SpectraError(f"{module.name}: its LoRA factors cannot be decomposed ({type(exc).__name__}); entries this "
                           "large overflow float32") from None
    if not bool(torch.isfinite(svd.S).all()):
        raise SpectraError(f"{module.name}: s·B·A overflows float32 (its singular values are not finite)")
    overlap = {k: float(v) for k, v in subspace_overlap(U_pre, Vh_pre, svd.U, svd.S, svd.Vh).items()}
    frob = float(frobenius_from_singular_values(svd.S))
    return (svd.U.cpu(), svd.S.cpu(), svd.Vh.cpu()), frob, overlap


def module_row(label: str, module: Any, ckpt: Any, base_top: tuple[torch.Tensor, torch.Tensor, torch.Tensor, str],
               dev: torch.device, dtype: torch.dtype, top_j: int = 1) -> dict[str, Any]:
    """One audit row: ``module`` of adapter ``label`` against its base weight's top-k
    (``base_top`` = ``(U, S, Vh, how it was computed)``): σ's, ratio, alignment, overlap."""
    from spectra.spectral import alignment

    U_pre, _, Vh_pre, _ = base_top
    (U_d, S_d, Vh_d), frob, ov = _update_spectrum(module, ckpt, U_pre, Vh_pre, dev, dtype, top_j)
    cos = alignment(U_pre.to(dtype), Vh_pre.to(dtype), U_d, Vh_d, j=top_j, S_d=S_d)
    stats = {"cos_max_left": float(cos["cos_max_left"]), "cos_max_right": float(cos["cos_max_right"]), **ov}
    stats.update({name: float(value) for name, value in cos.items() if name not in stats})
    return assemble_row(label, module, base_top, float(S_d[0]) if S_d.numel() else 0.0, stats, frob)


def assemble_row(label: str, module: Any, base_top: tuple[Any, torch.Tensor, Any, str], sigma_delta: float,
                 stats: dict[str, float], frobenius_delta: float) -> dict[str, Any]:
    """An audit row from its measured numbers — the one place ``audit`` (:func:`module_row`) and
    ``scan`` (:func:`spectra.fleet.engine.batched_rows`) build it, so that both give the same
    keys and the same treatment of a zero base weight (it has no singular directions, so any
    basis is as good as another) and of a zero update (it has no direction at all): cos and
    overlap are undefined there (NaN, written null). Summaries leave them out; a policy rule on
    them stops the gate for a zero base weight and has nothing to judge for a zero update."""
    from spectra.spectral import cos_random

    _, S_pre, _, method = base_top
    sigma_pre, k = float(S_pre[0]), S_pre.numel()
    m, n = module.shape
    row = {
        "adapter": label, "module": module.name, "layer": module.layer,
        "module_type": module.module_type, "shape": (m, n), "rank": module.rank,
        "scale": float(module.scale), "update_kind": module.update_kind,
        "sigma_pre": sigma_pre, "sigma_delta": sigma_delta,
        "ratio": sigma_pre / sigma_delta if sigma_delta > 0 else float("inf"),
        **stats,
        "cos_random_left": cos_random(m, k), "cos_random_right": cos_random(n, k),
        "sigma_pre_k": float(S_pre[-1]), "k": k, "frobenius_delta": frobenius_delta,
        "base_key": module.base_key, "spectrum_method": method,
    }
    if sigma_delta == 0.0 and sigma_pre > 0.0:  # no update, so no direction: its ratio (∞) says the rest
        row.update(dict.fromkeys([key for key in row if key.startswith(("cos_max", "overlap"))], float("nan")))
    if sigma_pre == 0.0:
        import warnings

        from spectra.errors import SpectraWarning

        undefined = [key for key in row if key.startswith(("cos_max", "overlap"))]
        row.update(dict.fromkeys(undefined, float("nan")))
        warnings.warn(f"{label} {module.name}: base weight {module.base_key} is zero, so its top-k directions are "
                      f"arbitrary: {', '.join(undefined)} are undefined (null), and a rule on them cannot pass",
                      SpectraWarning, stacklevel=3)
    return row


def audit(
    base: str | os.PathLike[str] | BaseCheckpoint,
    adapters: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    settings: AuditSettings | None = None,
    *,
    names: Sequence[str] | None = None,
    cache_dir: str | os.PathLike[str] | None | bool = None,
    revision: str | None = None,
    adapter_revision: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    **legacy: Any,
) -> AuditReport:
    """Spectrally audit LoRA (or fully fine-tuned) adapters against their base model.

    Args:
        base: local Hugging Face model folder (safetensors, sharded or not) or hub id, or an
            open :class:`~spectra.io.BaseCheckpoint` (used as it is, and left open).
        adapters: one or more PEFT LoRA folders, or fine-tuned model folders (ΔW = W_ft − W_base).
        settings: :class:`~spectra.audit.settings.AuditSettings` (default: its defaults):
            ``top_k``, the size of W_pre's top singular subspace the cosines and overlaps refer
            to; ``top_j``, also report the max |cos| over ΔW's top-j singular vectors (columns
            ``cos_max_left_top{j}``/``cos_max_right_top{j}``) when greater than 1; ``device``;
            ``dtype`` (``float32`` or ``float64``; stored fp16/bf16 weights are upcast per
            tensor); ``exact`` (full SVD of every base weight, the reference path, instead of
            the certified randomized top-k); ``modules`` (regex patterns: keep modules whose name
            matches or whose type equals one); ``memory_budget_mb`` (base weights in flight: the
            stack being decomposed takes at most half, the batch read ahead the other half; a
            dense SVD spectra was not asked for whose workspace exceeds it is refused with a
            :class:`SpectraError`, see :func:`spectra.spectral.topk.exact_svd_bytes`);
            ``allow_pickle`` (accept ``.bin`` weights, ``torch.load(weights_only=True)``).
            Until 0.4 these are still taken as keywords (``top_k=8``), with a ``DeprecationWarning``.
        names: display names for the adapters, one per adapter (``None`` entries and a missing
            list fall back to folder names, made unique); names must be distinct.
        cache_dir: where base spectra are cached by content; None = the default cache
            (``$SPECTRA_CACHE_DIR`` or ``~/.cache/spectra``), False = no cache.
        revision, adapter_revision: hub revisions (branch, tag or commit) of a hub-id base and
            of hub-id adapters; the resolved commits are recorded in ``inputs``.
        progress: callback ``(done, total)`` over modules, e.g. to drive a progress bar.

    Returns:
        :class:`AuditReport` with one row per (adapter, module).
    """
    from spectra.forgetting import architecture_key
    from spectra.io import BaseCheckpoint, load_adapter, open_base
    from spectra.io.spectrum_cache import SpectrumCache, default_folder
    from spectra.provenance import describe_path, library_versions
    started = time.perf_counter()
    s = with_legacy(AuditSettings, settings, legacy, "audit")
    top_k, top_j, device, dtype, exact, modules = s.top_k, s.top_j, s.device, s.dtype, s.exact, s.modules
    memory_budget_mb, allow_pickle = s.memory_budget_mb, s.allow_pickle
    dev, torch_dtype = _resolve(device, dtype)
    paths = [adapters] if isinstance(adapters, (str, os.PathLike)) else list(adapters)
    if not paths:
        raise SpectraError("no adapter given")
    labels = _labels(paths, names)
    cache = None if cache_dir is False else SpectrumCache(cache_dir or default_folder())

    # an open checkpoint (spectra fix passes its own) is used as it is, and left open
    opened = contextlib.nullcontext(base) if isinstance(base, BaseCheckpoint) else \
        open_base(base, allow_pickle=allow_pickle, revision=revision)
    with opened as ckpt:
        loaded = [load_adapter(p, ckpt, allow_pickle=allow_pickle, revision=adapter_revision) for p in paths]
        selected = [_select(a.modules, modules) for a in loaded]
        if not all(selected):  # one adapter with nothing measured must not ride on another's pass
            from spectra.errors import NothingToAudit

            empty = ", ".join(str(p) for p, s in zip(paths, selected, strict=True) if not s)
            if modules:
                raise NothingToAudit(f"--modules {modules}: no adapted module of {empty} matches")
            # what the loader noticed about them (a full copy equal to its base says so)
            why = "; ".join(n for a, s in zip(loaded, selected, strict=True) if not s for n in a.notes)
            raise NothingToAudit(f"{empty}: no module of a supported kind to audit "
                                 "(LoRA, DoRA, embedding LoRA, modules_to_save or full fine-tuning)"
                                 + (f": {why}" if why else ""))
        unique = {m.base_key: m for mods in selected for m in mods}
        total = len(unique) + sum(len(s) for s in selected)
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        t0 = time.perf_counter()
        work: dict[str, float] = {"base_gflop": 0.0, "base_bytes_read": 0}
        spectra_by_key = _base_spectra(ckpt, unique, top_k, exact, dev, torch_dtype, cache,
                                       memory_budget_mb << 20, tick, work)
        t_base = time.perf_counter() - t0

        rows: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        for label, adapter, mods in zip(labels, loaded, selected):
            for module in mods:
                rows.append(module_row(label, module, ckpt, spectra_by_key[module.base_key], dev, torch_dtype, top_j))
                tick(1)
        t_delta = time.perf_counter() - t0

        given = str(ckpt.path) if isinstance(base, BaseCheckpoint) else str(base)
        inputs = {"base": {**describe_path(ckpt.path), "given": given, "revision": revision,
                           "model_type": ckpt.model_type, "architecture": architecture_key(ckpt.config)},
                  "adapters": {label: {**describe_path(a.path), "given": str(p), "revision": adapter_revision}
                               for label, a, p in zip(labels, loaded, paths)}}

    from spectra.report.audit_rows import columns_of

    columns = columns_of(rows, COLUMNS)
    rows = [{c: row.get(c) for c in columns} for row in rows]
    settings = {"top_k": top_k, "top_j": top_j, "device": str(dev), "dtype": dtype, "exact": exact,
                "modules": list(modules) if modules else None, "cache": str(cache.folder) if cache is not None else None,
                "memory_budget_mb": memory_budget_mb}
    timings = {"base_spectra_s": t_base, "updates_s": t_delta, "total_s": time.perf_counter() - started, **work}
    return AuditReport(rows=rows, settings=settings, inputs=inputs, versions=library_versions(), timings=timings)


def _labels(paths: Sequence[str | os.PathLike[str]], names: Sequence[str | None] | None) -> list[str]:
    """The adapters' display names: the given ones, folder names (made unique) for the rest."""
    given = list(names) if names is not None else [None] * len(paths)
    if len(given) != len(paths):
        raise SpectraError(f"{len(given)} adapter name(s) for {len(paths)} adapter(s)")
    chosen = [n for n in given if n]
    if len(set(chosen)) != len(chosen):
        raise SpectraError(f"adapter names must be distinct (got {', '.join(chosen)})")
    out: list[str] = []
    taken = set(chosen)
    for name, auto in zip(given, _unique_names(paths)):
        if not name:
            while auto in taken:  # a folder name that a given name, or an earlier label, already took
                auto += "#"
        out.append(name or auto)
        taken.add(out[-1])
    return out


def _unique_names(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    names: list[str] = []
    for p in paths:
        name = Path(p).name or str(p)
        candidate, i = name, 2
        while candidate in names:
            candidate, i = f"{name}#{i}", i + 1
        names.append(candidate)
    return names
