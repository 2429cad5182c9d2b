"""What a fleet scan audits: adapters found in folder trees, listed in manifests, or named on the hub.

A SOURCE is one of:

- a folder: the adapter itself (it holds ``adapter_config.json``), or a tree in which every
  folder holding an ``adapter_config.json`` is an adapter (named by its path below the tree);
- a manifest: ``.csv``, ``.jsonl`` or ``.parquet`` with an ``adapter`` column and optional
  ``base``, ``revision`` and ``id`` columns (relative paths are read from the manifest's folder);
- ``hf://owner/name[@revision]``: an adapter on the hub, through huggingface_hub's cache.

Each adapter's base is its manifest row's ``base``, else the scan's ``--base``, else the
``base_model_name_or_path`` of its ``adapter_config.json``. An adapter whose base cannot be
told becomes an error row, not the end of the scan.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from spectra.errors import SpectraError

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".parquet")
#: the file names PEFT saves an adapter's weights under
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass(frozen=True)
class FleetItem:
    """One adapter of the fleet: its stable ``id`` (what resume keys on), where it is, its base."""

    id: str
    adapter: str
    base: str | None
    revision: str | None = None
    error: str | None = None  # a problem found before any audit (no base, unreadable config)


def _rows_of_manifest(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return list(csv.DictReader(fh))
    if path.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise SpectraError(f"{path}: line {i + 1} is not JSON ({exc.msg})") from None
        return rows
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SpectraError(f"{path}: reading a Parquet manifest needs pyarrow (pip install 'spectra-lora[fleet]')") \
            from None
    return pq.read_table(path).to_pylist()


def _config_base(adapter: Path) -> str | None:
    try:
        cfg = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    base = cfg.get("base_model_name_or_path") if isinstance(cfg, dict) else None
    return str(base) if base else None


def _item(item_id: str, adapter: str, base: str | None, default_base: str | None, revision: str | None = None,
          relative_to: Path | None = None) -> FleetItem:
    if not adapter.startswith("hf://") and relative_to is not None and not Path(adapter).is_absolute():
        adapter = str(relative_to / adapter)
    if base and not base.startswith("hf://") and relative_to is not None and not Path(base).is_absolute() \
            and (relative_to / base).exists():
        base = str(relative_to / base)
    chosen = base or default_base
    error = None
    if not chosen and not adapter.startswith("hf://"):
        # the adapter's own config is a hint only: an existing local folder, never a hub download it picks
        hint = _config_base(Path(adapter))
        if hint and Path(hint).expanduser().is_dir():
            chosen = hint
        elif hint:
            error = (f"no base: adapter_config.json names {hint!r}, which is not a local folder (a base the adapter "
                     "names is never fetched); give --base or a manifest 'base' column")
    if not chosen and error is None:
        error = "no base: give --base, a manifest 'base' column, or base_model_name_or_path in adapter_config.json"
    return FleetItem(item_id, adapter, chosen, revision or None, error)


def printable_id(text: str) -> str:
    """``text`` with each control character (newline, ESC, …) written as ``\\xNN``: a hostile folder
    name or manifest id can then neither break a Markdown table nor drive the terminal."""
    import unicodedata

    return "".join(f"\\x{ord(c):02x}" if unicodedata.category(c) == "Cc" else c for c in text)


def discover(sources: list[str], base: str | None = None) -> list[FleetItem]:
    """Every adapter the sources name, in a stable order; ids are unique (a repeated id is an error)."""
    items: list[FleetItem] = []
    for source in sources:
        if source.startswith("hf://"):
            items.append(_item(source, source, None, base))
            continue
        path = Path(source).expanduser()
        if path.is_file() and path.suffix in MANIFEST_SUFFIXES:
            for i, row in enumerate(_rows_of_manifest(path)):
                adapter = str(row.get("adapter") or "").strip()
                if not adapter:
                    if "adapter" not in row:
                        raise SpectraError(f"{path}: row {i + 1} has no 'adapter' column (it has: "
                                           f"{', '.join(map(str, row)) or 'nothing'})")
                    raise SpectraError(f"{path}: row {i + 1} has an empty 'adapter'")
                items.append(_item(str(row.get("id") or adapter), adapter, str(row.get("base") or "") or None,
                                   base, str(row.get("revision") or "") or None, relative_to=path.parent))
        elif path.is_dir():
            if (path / "adapter_config.json").is_file():
                items.append(_item(path.name, str(path), None, base))
                continue
            found = sorted(p.parent for p in path.rglob("adapter_config.json"))
            for folder in found:
                items.append(_item(os.path.relpath(folder, path), str(folder), None, base))
            # adapter weights with no config beside them: PEFT cannot load them and the gate cannot
            # audit them — an error row (an 'unaudited' finding), never a folder passed over in silence
            configured = set(found)
            orphans = sorted({p.parent for name in ADAPTER_WEIGHTS for p in path.rglob(name)} - configured)
            for folder in orphans:
                items.append(FleetItem(os.path.relpath(folder, path), str(folder), base, None,
                                       "adapter weights but no adapter_config.json: PEFT cannot load them, so they "
                                       "cannot be audited"))
        elif path.exists():
            raise SpectraError(f"{path}: a scan source is a folder, a manifest ({', '.join(MANIFEST_SUFFIXES)}) "
                               "or hf://owner/name")
        else:
            raise SpectraError(f"{path}: no such folder or manifest")
    # an id lands in report.md, the terminal and SARIF: no raw newline or escape sequence
    items = [replace(it, id=printable_id(it.id)) for it in items]
    seen: dict[str, int] = {}
    for it in items:
        seen[it.id] = seen.get(it.id, 0) + 1
    dup = sorted(k for k, n in seen.items() if n > 1)
    if dup:
        raise SpectraError(f"adapter ids must be unique; repeated: {', '.join(dup[:5])} (an id given twice in a "
                           "manifest, or an adapter found twice: give each a manifest 'id')")
    return items


def content_hash(adapter: str) -> str | None:
    """SHA-256 over an adapter folder's config and weight bytes (duplicates are audited once);
    ``None`` for a hub id or an unreadable folder (audited on its own, where its error shows)."""
    import hashlib

    if adapter.startswith("hf://"):
        return None
    folder = Path(adapter)
    h = hashlib.sha256()
    try:
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            with open(folder / name, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()
