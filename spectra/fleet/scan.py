"""``spectra scan``: audit a fleet — base spectra once per base, adapters streamed, on Ray or in-process.

Why Ray tasks on actors rather than Ray Data: the expensive state is per base (an open
checkpoint and its weights' top-k), so one long-lived actor per (base, worker) keeps it and
adapters stream through as small calls; Ray Data's batch transforms would rebuild or ship that
state per block. The driver audits each base's first adapter itself and puts the resulting base
spectra in Ray's object store, so every actor starts from them (on a cluster the object moves
once per node); weights an adapter needs beyond those come from the content-keyed disk cache or
are computed by the actor. A small fleet (below :data:`IN_PROCESS_BELOW` adapters) runs
in-process: starting Ray costs seconds a few adapters do not.

Nothing finished is lost (:mod:`spectra.fleet.store`): rows are flushed every
:data:`FLUSH_EVERY` adapters and on Ctrl-C; ``resume=True`` audits only what is missing.
Adapters with identical bytes are audited once, the others referring to it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spectra.errors import SpectraError
from spectra.fleet.engine import BaseAuditor, error_row
from spectra.fleet.settings import ScanSettings
from spectra.fleet.sources import FleetItem, content_hash, discover
from spectra.fleet.store import PartWriter, done_ids, read_rows
from spectra.settings import with_legacy

#: below this many adapters to audit, the scan runs in-process (no Ray start-up)
IN_PROCESS_BELOW = 20
#: rows are written to disk every this many adapters
FLUSH_EVERY = 50


@dataclass
class ScanResult:
    """What a scan did: where its tables are, how many adapters were audited, failed, skipped."""

    out: Path
    total: int
    audited: int = 0
    errors: int = 0
    skipped: int = 0
    duplicates: int = 0
    engine: str = "in-process"
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


def _groups(items: list[FleetItem], todo: set[str]) -> dict[str, list[FleetItem]]:
    by_base: dict[str, list[FleetItem]] = defaultdict(list)
    for it in items:
        if it.id in todo and it.error is None and it.base:
            by_base[it.base].append(it)
    return by_base


def scan(sources: list[str], out: str | Path, settings: ScanSettings | None = None, *, resume: bool = False,
         overwrite: bool = False, cache_dir: Any = None, progress: Callable[[int, int], None] | None = None,
         log: Callable[[str], None] = lambda m: None, **legacy: Any) -> ScanResult:
    """Audit every adapter the ``sources`` name into ``out`` (see the module docstring).

    Args:
        settings: :class:`~spectra.fleet.settings.ScanSettings` (default: its defaults): ``base``
            for adapters whose row names none; ``top_k``; ``engine``: ``auto`` (Ray from
            :data:`IN_PROCESS_BELOW` adapters, when Ray is installed), ``ray`` or ``local``;
            ``workers``, Ray actors per base (default: the CPUs Ray sees; ignored in-process);
            ``address``, an existing Ray cluster (``ray://host:port`` or ``auto``; default: an
            embedded one); ``max_errors``, stop after this many error rows (the rows so far are
            kept). Until 0.4 these are still taken as keywords, with a ``DeprecationWarning``.
        resume, overwrite: continue the scan in ``out``, or replace it.
    """
    st = with_legacy(ScanSettings, settings, legacy, "scan")
    base, top_k, workers, address, max_errors, engine = (st.base, st.top_k, st.workers, st.address, st.max_errors,
                                                         st.engine)
    import shutil

    from spectra.io.output import check_output_dir, check_output_dir_apart

    started = time.perf_counter()
    out = Path(out)
    local_sources = [s for s in sources if not s.startswith("hf://")]
    check_output_dir_apart(out, local_sources + ([base] if base else []))  # never an input, never the working folder
    if out.exists() and resume:
        if not (out / "adapters").is_dir():
            raise SpectraError(f"{out}: not a spectra scan output (no adapters/ folder); --resume continues a scan")
    elif out.exists():
        if not overwrite:
            raise SpectraError(f"{out}: output already exists (pass --resume to continue it, --overwrite to replace it)")
        check_output_dir(out, overwrite=True, inputs=local_sources)
        shutil.rmtree(out)
    items = discover(sources, base)
    if not items:
        raise SpectraError(f"{', '.join(sources)}: no adapter found (no adapter_config.json below, or an empty manifest)")
    done = done_ids(out) if resume else set()
    writer = PartWriter(out)
    result = ScanResult(out=out, total=len(items), skipped=len(done & {it.id for it in items}))
    pending = [it for it in items if it.id not in done]
    # one audit per distinct adapter: the others get the first one's rows under their own id
    first_of: dict[str, str] = {}
    copies: dict[str, list[FleetItem]] = defaultdict(list)
    todo: list[FleetItem] = []
    for it in pending:
        if it.error is not None:
            writer.add(error_row(it.id, it.adapter, it.base, it.error), [])
            result.errors += 1
            continue
        h = content_hash(it.adapter)
        key = f"{it.base}|{h}" if h else None
        if key and key in first_of:
            copies[first_of[key]].append(it)
            result.duplicates += 1
            continue
        if key:
            first_of[key] = it.id
        todo.append(it)
    use_ray = engine == "ray" or (engine == "auto" and len(todo) >= IN_PROCESS_BELOW and _ray_available())
    result.engine = "ray" if use_ray else "in-process"
    log(f"scan: {len(items):,} adapters, {result.skipped:,} done before, {result.duplicates:,} duplicates, "
        f"{len(todo):,} to audit on {len({it.base for it in todo})} base(s) ({result.engine})")
    count = [0]

    def record(item: FleetItem, row: dict[str, Any], modules: list[dict[str, Any]]) -> None:
        writer.add(row, modules)
        for twin in copies.get(item.id, []):
            writer.add({**row, "id": twin.id, "adapter": twin.adapter, "duplicate_of": item.id},
                       [{**m, "adapter": twin.id} for m in modules])
        result.audited += row["status"] == "ok"
        result.errors += row["status"] != "ok"
        count[0] += 1
        if progress is not None:
            progress(count[0], len(todo))
        if count[0] % FLUSH_EVERY == 0:
            writer.flush()
        if max_errors is not None and result.errors > max_errors:
            writer.flush()
            raise SpectraError(f"more than --max-errors {max_errors} adapters failed; the {count[0]:,} rows so far are "
                               f"in {out} (--resume continues)")

    try:
        runner = _run_ray if use_ray else _run_local
        result.timings = runner(_groups(todo, {it.id for it in todo}), record, top_k=top_k, workers=workers,
                                address=address, cache_dir=cache_dir, log=log)
    finally:
        writer.flush()  # Ctrl-C, a killed worker, --max-errors: every finished row is on disk
    result.seconds = time.perf_counter() - started
    return result


def _ray_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def _run_local(groups: dict[str, list[FleetItem]], record: Callable[..., None], *, top_k: int, cache_dir: Any,
               **_: Any) -> dict[str, float]:
    seconds = {"base": 0.0, "adapters": 0.0}
    for base, items in groups.items():
        try:
            auditor = BaseAuditor(base, top_k=top_k, cache_dir=cache_dir)
        except SpectraError as exc:  # the base itself is unusable: every adapter on it is an error row
            for it in items:
                record(it, error_row(it.id, it.adapter, base, f"base: {exc}"), [])
            continue
        try:
            for it in items:
                record(it, *auditor.audit(it.id, it.adapter, it.revision))
        finally:
            seconds = {k: seconds[k] + auditor.seconds[k] for k in seconds}
            auditor.close()
    return seconds


#: the embedded Ray's node address on Linux (see :func:`embedded_ray_options`)
EMBEDDED_NODE_IP = "127.0.0.2"


def embedded_ray_options() -> dict[str, Any]:
    """``ray.init`` options for the embedded Ray: no usage statistics sent anywhere (a scan is
    an audit, not a telemetry source), and on Linux a node address on loopback. Ray replaces
    ``127.0.0.1``/``localhost`` with the machine's routable address
    (``ray._private.services.resolve_ip_for_localhost``) but keeps any other address, and on
    Linux all of 127.0.0.0/8 is loopback, so the node advertises ``127.0.0.2``. Ray's servers
    still bind every interface; token authentication (Ray ≥ 2.5x) guards them."""
    import os
    import sys

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return {"_node_ip_address": EMBEDDED_NODE_IP} if sys.platform.startswith("linux") else {}


def _run_ray(groups: dict[str, list[FleetItem]], record: Callable[..., None], *, top_k: int, workers: int | None,
             address: str | None, cache_dir: Any, log: Callable[[str], None]) -> dict[str, float]:
    import os

    import ray

    from spectra.errors import one_line

    started_here = not ray.is_initialized()
    if started_here:
        # address "local" always starts an embedded Ray, never joins a cluster left running on this machine
        extra = {} if address else embedded_ray_options()
        ray.init(address=address or "local", num_cpus=None if address else (workers or os.cpu_count()),
                 include_dashboard=False, log_to_driver=False, configure_logging=False, **extra)
    n = workers or max(1, int(ray.available_resources().get("CPU", 1)))
    Actor = ray.remote(num_cpus=1)(BaseAuditor)
    seconds = {"base": 0.0, "adapters": 0.0}
    try:
        for base, items in groups.items():
            try:  # the first adapter in the driver: its base spectra go to every actor through the object store
                warm = BaseAuditor(base, top_k=top_k, cache_dir=cache_dir)
            except SpectraError as exc:
                for it in items:
                    record(it, error_row(it.id, it.adapter, base, f"base: {exc}"), [])
                continue
            record(items[0], *warm.audit(items[0].id, items[0].adapter, items[0].revision))
            spectra_ref = ray.put(warm.spectra)
            seconds["base"] += warm.seconds["base"]
            warm.close()
            actors = [Actor.remote(base, top_k, cache_dir, "cpu", 256, spectra_ref, 1) for _ in range(min(n, len(items)))]
            queue = list(items[1:])
            inflight: dict[Any, tuple[FleetItem, int]] = {}
            load = [0] * len(actors)  # calls queued per actor: the next adapter goes to the least loaded
            retried: set[str] = set()
            while queue or inflight:
                while queue and len(inflight) < 2 * len(actors):
                    it = queue.pop(0)
                    a = load.index(min(load))
                    load[a] += 1
                    inflight[actors[a].audit.remote(it.id, it.adapter, it.revision)] = (it, a)
                ready, _ = ray.wait(list(inflight), num_returns=1)
                it, a = inflight.pop(ready[0])
                load[a] -= 1
                try:
                    record(it, *ray.get(ready[0]))
                except ray.exceptions.RayActorError as exc:  # a killed worker: out of the pool, its adapter re-queued once
                    load[a] = 10 ** 9
                    if it.id not in retried and any(x < 10 ** 9 for x in load):
                        retried.add(it.id)
                        queue.insert(0, it)
                    else:  # no live worker left (or a second loss): an error row, retried on --resume
                        record(it, error_row(it.id, it.adapter, base, f"worker lost ({one_line(exc)[:120]})"), [])
                except ray.exceptions.RayError as exc:
                    record(it, error_row(it.id, it.adapter, base, f"worker lost ({one_line(exc)[:120]})"), [])
            for a in actors:
                try:
                    seconds["adapters"] += ray.get(a.timings.remote())["adapters"]
                except Exception:  # noqa: BLE001 - timing only
                    pass
                ray.kill(a)
    finally:
        if started_here:
            ray.shutdown()
    log(f"scan: ray with {n} worker(s) per base")
    return seconds


__all__ = ["scan", "ScanResult", "read_rows", "IN_PROCESS_BELOW"]
