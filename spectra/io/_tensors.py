"""Lazy tensor stores: safetensors files read through their header, pickles on request.

A store maps tensor names to the file that holds them and answers ``shape``/``dtype``
from metadata alone; ``get`` reads exactly one tensor. The safetensors header (an
8-byte little-endian length, then a JSON object) is parsed here and checked at least as
strictly as the safetensors library checks it, before anything is allocated for a tensor:

- the file is a regular file (never a FIFO or a device, which could block or never end);
- the header length is at most 100,000,000 bytes and fits in the file; the header is
  UTF-8 JSON starting with ``{``; ``__metadata__``, when present, maps strings to strings;
- every entry has a known dtype, a shape of non-negative integers, and offsets whose span
  is exactly the shape's byte size;
- the entries, ordered by offset, start at 0, follow each other with no gap and no
  overlap, and end exactly where the file ends: two tensors can never share bytes.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from spectra.errors import SpectraError, one_line

# safetensors dtype tag -> (torch dtype name, bytes per element)
_ST_DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 8),
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "I16": ("int16", 2),
    "I8": ("int8", 1),
    "U64": ("uint64", 8),
    "U32": ("uint32", 4),
    "U16": ("uint16", 2),
    "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
    "F8_E4M3": ("float8_e4m3fn", 1),
    "F8_E5M2": ("float8_e5m2", 1),
}

_MAX_HEADER = 100_000_000  # the safetensors library's own limit (MAX_HEADER_SIZE)


def _torch_dtype(tag: str) -> torch.dtype:
    name, _ = _ST_DTYPES[tag]
    dtype = getattr(torch, name, None)
    if dtype is None:  # pragma: no cover - very old torch
        raise SpectraError(f"dtype {tag} is not supported by this torch version")
    return dtype


class SafetensorsHeader:
    """The parsed and validated header of one safetensors file."""

    def __init__(self, path: Path):
        from spectra.io.files import regular_file

        self.path = path
        regular_file(path, "safetensors file")
        try:
            st = path.stat()
        except OSError as exc:
            raise SpectraError(f"{path}: cannot read ({one_line(exc)})") from None
        self.size = st.st_size
        self.mtime_ns = st.st_mtime_ns
        if self.size < 8:
            raise SpectraError(f"{path}: truncated safetensors file ({self.size} bytes, no header)")
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n == 0 or n > _MAX_HEADER or n > self.size - 8:
                raise SpectraError(
                    f"{path}: corrupt or truncated safetensors file (header length {n} does not fit "
                    f"in a file of {self.size} bytes)"
                )
            raw = fh.read(n)
        if not raw.startswith(b"{"):
            raise SpectraError(f"{path}: corrupt safetensors header (does not start with '{{')")
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise SpectraError(f"{path}: corrupt safetensors header ({one_line(exc)})") from None
        if not isinstance(header, dict):
            raise SpectraError(f"{path}: corrupt safetensors header (not a JSON object)")
        self.header_len = n
        self.data_len = self.size - 8 - n
        metadata = header.pop("__metadata__", None)
        if metadata is not None and not (isinstance(metadata, dict) and
                                         all(isinstance(v, str) for v in metadata.values())):
            raise SpectraError(f"{path}: corrupt safetensors header (__metadata__ must map strings to strings)")
        self.metadata = metadata or {}
        self.entries: dict[str, dict[str, Any]] = {}
        for key, info in header.items():
            self.entries[key] = self._check_entry(key, info)
        self._check_layout()

    def _check_layout(self) -> None:
        """Offsets ordered from 0, contiguous, non-overlapping, covering the data section exactly."""
        expected = 0
        for key, e in sorted(self.entries.items(), key=lambda kv: kv[1]["offsets"]):
            begin, end = e["offsets"]
            if begin != expected:
                what = "overlaps the tensor before it" if begin < expected else f"leaves a gap of {begin - expected} bytes"
                raise SpectraError(f"{self.path}: corrupt safetensors header (tensor {key} at bytes {begin}-{end} "
                                   f"{what})")
            expected = end
        if expected != self.data_len:
            raise SpectraError(f"{self.path}: corrupt safetensors file (the tensors cover {expected} bytes of a "
                               f"{self.data_len}-byte data section)")

    def _check_entry(self, key: str, info: Any) -> dict[str, Any]:
        path = self.path
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys() or \
                not isinstance(info["dtype"], str):
            raise SpectraError(f"{path}: corrupt safetensors header (bad entry for tensor {key})")
        tag, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if tag not in _ST_DTYPES:
            raise SpectraError(f"{path}: tensor {key} has unknown dtype {tag!r}")
        if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                for d in shape)):
            raise SpectraError(f"{path}: corrupt safetensors header (bad shape {shape!r} for tensor {key})")
        if not (isinstance(offsets, list) and len(offsets) == 2 and
                all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise SpectraError(f"{path}: corrupt safetensors header (bad offsets for tensor {key})")
        begin, end = offsets
        if not 0 <= begin <= end:
            raise SpectraError(f"{path}: corrupt safetensors header (offsets {offsets} of tensor {key})")
        if end > self.data_len:
            raise SpectraError(
                f"{path}: truncated or corrupt safetensors file (tensor {key} ends at byte {end} of a "
                f"{self.data_len}-byte data section)"
            )
        numel = 1
        for d in shape:
            numel *= d
        if end - begin != numel * _ST_DTYPES[tag][1]:
            raise SpectraError(
                f"{path}: corrupt safetensors header (tensor {key}: {end - begin} bytes for shape "
                f"{tuple(shape)} {tag})"
            )
        return {"dtype": tag, "shape": tuple(shape), "offsets": (begin, end)}


#: storage dtypes whose values are the weights themselves (quantised ones need scales spectra
#: does not read: an int8 factor audited as raw integers measures nothing real)
AUDITABLE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_auditable(dtype: torch.dtype, where: str) -> None:
    """Raise :class:`SpectraError` for a weight stored as a quantised or integer dtype."""
    if dtype not in AUDITABLE_DTYPES:
        name = str(dtype).removeprefix("torch.")
        raise SpectraError(f"{where} is stored as {name}: spectra reads weights stored as float16, bfloat16, float32 "
                           "or float64 (quantised weights need their scales: dequantise the checkpoint first)")


class MappedTensor:
    """A tensor to read once and let go: ``tensor`` is valid until :meth:`close`.

    ``torch.frombuffer`` does not pin the map, so a view of ``tensor`` kept past
    ``close()`` points at unmapped memory: copy out what must outlive it (the audit converts
    into its own stack, then closes).

    For a safetensors store it is a view of the file mapped read-only (copy-on-write, so
    nothing can write the file) over exactly the tensor's bytes: the consumer's own read
    (a dtype conversion, a copy into a stack) is the only pass over them, with no
    intermediate buffer to zero and fill first. The kernel has been asked to read the
    range ahead (``MADV_WILLNEED``), so on a cold disk the I/O runs while the caller is
    still busy with something else. Closing unmaps the range, so the pages never stay
    counted in the process's RSS (what ``safe_open``'s long-lived map does).
    """

    def __init__(self, tensor: torch.Tensor, region: mmap.mmap | None = None):
        self.tensor: torch.Tensor | None = tensor
        self._region = region

    @property
    def nbytes(self) -> int:
        """Bytes of the stored tensor."""
        t = self.tensor
        return 0 if t is None else t.numel() * t.element_size()

    def close(self) -> None:
        """Drop the tensor and unmap its bytes (idempotent)."""
        self.tensor = None
        region, self._region = self._region, None
        if region is not None:
            region.close()


class TensorStore:
    """Common interface of the lazy stores."""

    files: list[Path]

    def keys(self) -> list[str]:
        raise NotImplementedError

    def __contains__(self, key: object) -> bool:
        raise NotImplementedError

    def shape(self, key: str) -> tuple[int, ...]:
        raise NotImplementedError

    def dtype(self, key: str) -> torch.dtype:
        raise NotImplementedError

    def get(self, key: str) -> torch.Tensor:
        raise NotImplementedError

    def mapped(self, key: str) -> MappedTensor:
        """One tensor for a single read-through (see :class:`MappedTensor`); stores that
        cannot map a file read it with :meth:`get`."""
        return MappedTensor(self.get(key))

    def fingerprint(self, key: str) -> str:
        raise NotImplementedError

    def file_of(self, key: str) -> Path:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _missing(store: TensorStore, key: str) -> SpectraError:
    where = store.files[0].parent if store.files else "?"
    return SpectraError(f"{where}: no tensor named {key}")


#: a safetensors file up to this size is read whole on its first ``get`` and its tensors are views
#: of that one buffer: an all-linear adapter of a 30-layer model is 420 tensors in ~5 MB, and one
#: open + read per tensor was most of the fleet scan's per-adapter cost
SLURP_BYTES = 32 << 20


def _read_exact(f: Path, offset: int, size: int, what: str) -> torch.Tensor:
    """``size`` bytes of ``f`` from ``offset`` into a fresh uint8 tensor (positioned ``readinto``;
    one read(2) returns at most ~2 GiB); a short read is a truncated file."""
    raw = torch.empty(size, dtype=torch.uint8)
    view, got = memoryview(raw.numpy()), 0
    try:
        with open(f, "rb", buffering=0) as fh:
            fh.seek(offset)
            while got < size:
                n = fh.readinto(view[got:])
                if not n:
                    break
                got += n
    except OSError as exc:
        raise SpectraError(f"{f}: cannot read {what} ({one_line(exc)})") from None
    if got != size:
        raise SpectraError(f"{f}: truncated safetensors file ({what}: read {got} of {size} bytes)")
    return raw


class SafetensorsStore(TensorStore):
    """Tensors spread over one or more safetensors files, read one at a time through their validated headers."""

    def __init__(self, files: Iterable[Path], expected: dict[str, str] | None = None):
        self._blobs: dict[Path, torch.Tensor] = {}
        self.files = [Path(f) for f in files]
        self.headers: dict[Path, SafetensorsHeader] = {}
        self._where: dict[str, Path] = {}
        for f in self.files:
            h = SafetensorsHeader(f)
            self.headers[f] = h
            for key in h.entries:
                self._where.setdefault(key, f)
        if expected:  # index.json weight_map: every key it names must be in the shard it names
            for key, fname in expected.items():
                f = self.files[0].parent / fname
                if key not in self.headers.get(f, _EMPTY).entries:
                    raise SpectraError(f"{f}: the index names tensor {key} but this shard does not hold it")

    def keys(self) -> list[str]:
        return list(self._where)

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def _entry(self, key: str) -> dict[str, Any]:
        try:
            return self.headers[self._where[key]].entries[key]
        except KeyError:
            raise _missing(self, key) from None

    def file_of(self, key: str) -> Path:
        self._entry(key)
        return self._where[key]

    def shape(self, key: str) -> tuple[int, ...]:
        return self._entry(key)["shape"]

    def dtype(self, key: str) -> torch.dtype:
        return _torch_dtype(self._entry(key)["dtype"])

    def get(self, key: str) -> torch.Tensor:
        """Read one tensor: from a small file (:data:`SLURP_BYTES`), a view of the file's bytes read
        once and kept until :meth:`close` (callers must not write into it); from a larger one, a
        positioned ``readinto`` into its own buffer.

        Deliberately not ``safe_open``: its memory map keeps every page it has touched
        resident for as long as the file is open, so auditing a 2 GB checkpoint held
        2 GB of file-backed RSS on top of the working set. A plain read leaves those
        pages in the kernel's page cache, where they do not count against the process.
        """
        e = self._entry(key)
        f = self._where[key]
        h = self.headers[f]
        begin, end = e["offsets"]
        blob = self._blob(f)
        dtype = _torch_dtype(e["dtype"])
        if blob is not None and begin % dtype.itemsize == 0:  # a misaligned tensor is copied out below
            return blob[begin:end].view(dtype).reshape(e["shape"])
        raw = _read_exact(f, 8 + h.header_len + begin, end - begin, f"tensor {key}")
        return raw.view(_torch_dtype(e["dtype"])).reshape(e["shape"])

    def close(self) -> None:
        self._blobs.clear()

    def _blob(self, f: Path) -> torch.Tensor | None:
        """The whole data section of a small file (:data:`SLURP_BYTES`), read once; None for a large one."""
        if f in self._blobs:
            return self._blobs[f]
        h = self.headers[f]
        size = max((e["offsets"][1] for e in h.entries.values()), default=0)
        if size > SLURP_BYTES:
            return None
        raw = _read_exact(f, 8 + h.header_len, size, "tensor data")
        self._blobs[f] = raw
        return raw

    def mapped(self, key: str) -> MappedTensor:
        """The tensor as a read-only view of its bytes in the file (:class:`MappedTensor`).

        Compared with :meth:`get`, which ``readinto``s a fresh buffer, this saves a copy and
        the zero-filling of the buffer's pages: 0.2 s of a 0.7 GB audit (bench/README.md).
        The file size is checked again first: a file truncated after its header was
        validated would otherwise end the process with SIGBUS on the first missing page.
        """
        e = self._entry(key)
        f = self._where[key]
        h = self.headers[f]
        begin, end = e["offsets"]
        if end == begin:
            return MappedTensor(self.get(key))
        start = 8 + h.header_len + begin
        aligned = start - start % mmap.ALLOCATIONGRANULARITY
        try:
            with open(f, "rb") as fh:
                if os.fstat(fh.fileno()).st_size < 8 + h.header_len + end:
                    raise SpectraError(f"{f}: truncated safetensors file (tensor {key} ends past the end of the file)")
                region = mmap.mmap(fh.fileno(), start - aligned + end - begin, offset=aligned,
                                   access=mmap.ACCESS_COPY)
        except OSError:
            # a file system that cannot map (some FUSE and network mounts): read it instead;
            # get() reports an unreadable file in its own words
            return MappedTensor(self.get(key))
        if hasattr(region, "madvise"):  # not on Windows
            region.madvise(mmap.MADV_WILLNEED)
        raw = torch.frombuffer(region, dtype=torch.uint8, offset=start - aligned, count=end - begin)
        return MappedTensor(raw.view(_torch_dtype(e["dtype"])).reshape(e["shape"]), region)

    def fingerprint(self, key: str) -> str:
        e = self._entry(key)
        h = self.headers[self._where[key]]
        ident = (
            f"safetensors|{h.path.name}|{h.size}|{h.mtime_ns}|{key}|{e['dtype']}|"
            f"{list(e['shape'])}|{8 + h.header_len + e['offsets'][0]}-{8 + h.header_len + e['offsets'][1]}"
        )
        return hashlib.sha256(ident.encode()).hexdigest()

class _Empty:
    entries: dict[str, Any] = {}


_EMPTY = _Empty()


def torch_load_weights(path: Path) -> dict[str, torch.Tensor]:
    """``torch.load`` restricted to tensors (``weights_only=True``), memory-mapped when possible."""
    try:
        try:
            obj = torch.load(path, weights_only=True, map_location="cpu", mmap=True)
        except RuntimeError as exc:  # legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise SpectraError(
            f"{path}: cannot load as plain tensors with torch.load(weights_only=True) ({one_line(exc)})"
        ) from None
    if isinstance(obj, dict) and len(obj) == 1:
        (inner,) = obj.values()
        if isinstance(inner, dict):
            obj = inner
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SpectraError(f"{path}: not a state dict of tensors")
    return obj


class PickleStore(TensorStore):
    """Tensors from ``.bin``/``.pt`` files, loaded with ``torch.load(weights_only=True, mmap=True)``."""

    def __init__(self, files: Iterable[Path]):
        self.files = [Path(f) for f in files]
        self._tensors: dict[str, torch.Tensor] = {}
        self._where: dict[str, Path] = {}
        self._stat: dict[Path, tuple[int, int]] = {}
        for f in self.files:
            st = f.stat()
            self._stat[f] = (st.st_size, st.st_mtime_ns)
            for key, t in torch_load_weights(f).items():
                self._tensors.setdefault(key, t)
                self._where.setdefault(key, f)

    def keys(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, key: object) -> bool:
        return key in self._tensors

    def _t(self, key: str) -> torch.Tensor:
        try:
            return self._tensors[key]
        except KeyError:
            raise _missing(self, key) from None

    def file_of(self, key: str) -> Path:
        self._t(key)
        return self._where[key]

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._t(key).shape)

    def dtype(self, key: str) -> torch.dtype:
        return self._t(key).dtype

    def get(self, key: str) -> torch.Tensor:
        return self._t(key)

    def fingerprint(self, key: str) -> str:
        t = self._t(key)
        f = self._where[key]
        size, mtime = self._stat[f]
        ident = f"pickle|{f.name}|{size}|{mtime}|{key}|{t.dtype}|{list(t.shape)}"
        return hashlib.sha256(ident.encode()).hexdigest()

    def close(self) -> None:
        self._tensors.clear()
