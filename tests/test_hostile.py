"""Hostile and broken input: the safetensors reader is at least as strict as the safetensors
library (property-tested over mutated files), special files are refused instead of read,
the spectrum cache survives concurrent writers, an unwritable folder and Ctrl-C, and every
refusal is one line, exit code 2 and no output folder."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from spectra.errors import SpectraError
from spectra.io._tensors import SafetensorsStore
from spectra_cli.app import app

pytest.importorskip("hypothesis", reason="the fuzz tests draw their inputs with hypothesis (the dev extra)")
from hypothesis import HealthCheck, given, settings  # the skip above must run first
from hypothesis import strategies as st

K = ["--top-k", "4", "--no-cache"]


def raw_file(path: Path, header: dict, data: bytes, *, length: int | None = None, prefix: bytes = b"") -> Path:
    body = prefix + json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(body) if length is None else length) + body + data)
    return path


def valid_bytes() -> bytes:
    from safetensors.torch import save

    g = torch.Generator().manual_seed(0)
    return save({"a": torch.randn(3, 4, generator=g), "b": torch.arange(6, dtype=torch.int64),
                 "c": torch.randn(2, dtype=torch.float16, generator=g)}, metadata={"format": "pt"})


def ours(path: Path) -> dict[str, torch.Tensor]:
    store = SafetensorsStore([path])
    return {k: store.get(k) for k in store.keys()}


def theirs(data: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(data)


F32 = {"dtype": "F32"}


@pytest.mark.parametrize("case, header, data, needle", [
    ("overlap", {"a": {**F32, "shape": [4], "data_offsets": [0, 16]}, "b": {**F32, "shape": [4], "data_offsets": [0, 16]}},
     bytes(16), "overlaps"),
    ("gap", {"a": {**F32, "shape": [2], "data_offsets": [0, 8]}, "b": {**F32, "shape": [2], "data_offsets": [12, 20]}},
     bytes(20), "gap"),
    ("not from 0", {"a": {**F32, "shape": [2], "data_offsets": [4, 12]}}, bytes(12), "gap"),
    ("trailing bytes", {"a": {**F32, "shape": [2], "data_offsets": [0, 8]}}, bytes(12), "cover 8 bytes"),
    ("span ≠ shape", {"a": {**F32, "shape": [3], "data_offsets": [0, 8]}}, bytes(8), "bytes for shape"),
    ("unknown dtype", {"a": {"dtype": "F33", "shape": [2], "data_offsets": [0, 8]}}, bytes(8), "unknown dtype"),
    ("negative dim", {"a": {**F32, "shape": [-2], "data_offsets": [0, 8]}}, bytes(8), "bad shape"),
    ("bool dim", {"a": {**F32, "shape": [True, 2], "data_offsets": [0, 8]}}, bytes(8), "bad shape"),
    ("float offset", {"a": {**F32, "shape": [2], "data_offsets": [0, 8.0]}}, bytes(8), "bad offsets"),
    ("reversed", {"a": {**F32, "shape": [0], "data_offsets": [8, 0]}}, bytes(8), "offsets"),
    ("past the end", {"a": {**F32, "shape": [4], "data_offsets": [0, 16]}}, bytes(8), "ends at byte"),
    ("metadata", {"__metadata__": {"format": 3}, "a": {**F32, "shape": [2], "data_offsets": [0, 8]}}, bytes(8),
     "__metadata__"),
    ("not an object", [1, 2], b"", "does not start"),
])
def test_reader_refuses_what_the_library_refuses(tmp_path: Path, case: str, header, data: bytes, needle: str) -> None:
    path = raw_file(tmp_path / "m.safetensors", header, data)
    with pytest.raises(SpectraError, match=needle):
        ours(path)
    with pytest.raises(Exception):  # noqa: B017 - the reference: the safetensors library refuses it too
        theirs(path.read_bytes())


@pytest.mark.parametrize("case", ["huge length", "leading space", "bad utf-8", "deep nesting", "empty"])
def test_reader_refuses_malformed_headers_before_allocating(tmp_path: Path, case: str) -> None:
    p = tmp_path / "m.safetensors"
    if case == "huge length":  # claims a 100,000,001-byte header: refused before any read of that size
        raw_file(p, {}, b"", length=100_000_001)
    elif case == "leading space":
        raw_file(p, {}, b"", prefix=b" ")
    elif case == "bad utf-8":
        p.write_bytes(struct.pack("<Q", 4) + b"{\xff\xfe}")
    elif case == "deep nesting":
        body = b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
        p.write_bytes(struct.pack("<Q", len(body)) + body)
    else:
        p.write_bytes(b"")
    with pytest.raises(SpectraError):
        ours(p)


# --------------------------------------------------------------------------- property-based fuzzing

VALID = valid_bytes()


def mutations() -> st.SearchStrategy[bytes]:
    n = len(VALID)
    header_end = 8 + struct.unpack("<Q", VALID[:8])[0]
    flip = st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 255)), min_size=1, max_size=6).map(
        lambda edits: _apply(VALID, edits))
    flip_header = st.lists(st.tuples(st.integers(0, header_end - 1), st.integers(0, 255)), min_size=1,
                           max_size=4).map(lambda edits: _apply(VALID, edits))
    truncate = st.integers(0, n - 1).map(lambda k: VALID[:k])
    extend = st.binary(min_size=1, max_size=32).map(lambda tail: VALID + tail)
    length = st.integers(0, 2**64 - 1).map(lambda v: struct.pack("<Q", v) + VALID[8:])
    numbers = st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["shape", "data_offsets"]),
                        st.integers(0, 1), st.integers(-2**40, 2**40)).map(_edit_header)
    dtypes = st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(
        ["F64", "F32", "F16", "BF16", "I64", "I8", "U8", "BOOL", "F8_E4M3", "X", ""])).map(_edit_dtype)
    return st.one_of(flip, flip_header, truncate, extend, length, numbers, dtypes)


def _apply(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    b = bytearray(data)
    for i, v in edits:
        b[i] = v
    return bytes(b)


def _header() -> tuple[dict, bytes]:
    n = struct.unpack("<Q", VALID[:8])[0]
    return json.loads(VALID[8:8 + n]), VALID[8 + n:]


def _repack(header: dict, data: bytes) -> bytes:
    body = json.dumps(header).encode()
    return struct.pack("<Q", len(body)) + body + data


def _edit_header(args: tuple[str, str, int, int]) -> bytes:
    key, field, i, value = args
    header, data = _header()
    seq = header[key][field]
    if i < len(seq):
        seq[i] = value
    else:
        seq.append(value)
    return _repack(header, data)


def _edit_dtype(args: tuple[str, str]) -> bytes:
    key, dtype = args
    header, data = _header()
    header[key]["dtype"] = dtype
    return _repack(header, data)


def _check(data: bytes, path: Path) -> None:
    path.write_bytes(data)
    try:
        got = ours(path)
    except SpectraError as exc:
        assert "\n" not in str(exc)
        return
    # accepted: the library must accept it too, with the same tensors
    want = theirs(data)
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape
        assert torch.equal(got[k].view(torch.uint8), want[k].contiguous().view(torch.uint8)) or \
            torch.equal(got[k], want[k])


FUZZ = settings(max_examples=2000, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(mutations())
def test_fuzzed_files_are_refused_in_one_line_or_read_exactly_as_the_library_reads_them(tmp_path_factory, data):
    _check(data, tmp_path_factory.getbasetemp() / "fuzz.safetensors")


@pytest.mark.slow
@settings(max_examples=30000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(mutations())
def test_fuzzed_files_many_more(tmp_path_factory, data):
    _check(data, tmp_path_factory.getbasetemp() / "fuzz-slow.safetensors")


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(mutations())
def test_fuzzed_base_through_the_cli_is_one_line_exit_2_and_no_output(tiny_model_dir, tiny_adapter_dir, tmp_path, data):
    base = tiny_model_dir("bert", name="fuzz-base")
    adapter = tiny_adapter_dir(base, name="fuzz-adapter", target_modules=["query"])
    valid = (base / "model.safetensors").read_bytes()
    cut = min(len(data), len(valid))  # graft the mutation onto the real file's header region
    (base / "model.safetensors").write_bytes(data[:cut] if len(data) < 64 else valid[:8] + data[8:cut] + valid[cut:])
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["audit", str(base), str(adapter), "-o", str(out), *K])
    assert res.exit_code in (0, 2), res.output
    assert "Traceback" not in res.output
    if res.exit_code == 2:
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), res.output
        assert "bug in spectra" not in lines[0], res.output  # the boundary prints a crash as one line too
        assert not out.exists()
    else:
        assert (out / "audit.json").is_file()
    import shutil

    shutil.rmtree(out, ignore_errors=True)


# --------------------------------------------------------------------------- special files


def _cli(*args: object, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI in its own process, so that a hang is a failed test rather than a hung suite."""
    return subprocess.run([sys.executable, "-c", "from spectra_cli.app import main; main()", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("case", ["fifo weights", "device weights", "fifo config", "index outside", "index absolute"])
def test_special_files_and_escaping_shards_are_refused(tiny_model_dir, tiny_adapter_dir, tmp_path, case) -> None:
    base = tiny_model_dir("bert")
    adapter = tiny_adapter_dir(base, target_modules=["query"])
    weights = base / "model.safetensors"
    if case == "fifo weights":
        weights.unlink()
        os.mkfifo(weights)
        needle = "is a FIFO"
    elif case == "device weights":
        weights.unlink()
        weights.symlink_to("/dev/zero")
        needle = "is a device"
    elif case == "fifo config":
        (base / "config.json").unlink()
        os.mkfifo(base / "config.json")
        needle = "is a FIFO"
    else:
        outside = tmp_path / "outside.safetensors"
        outside.write_bytes(weights.read_bytes())
        name = "../outside.safetensors" if case == "index outside" else str(outside)
        from safetensors import safe_open

        with safe_open(str(weights), "pt") as f:
            keys = list(f.keys())
        (base / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {k: name for k in keys}}))
        weights.unlink()
        needle = "not a file name inside"
    out = tmp_path / "out"
    proc = _cli("audit", base, adapter, "-o", out, *K, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not out.exists()


# --------------------------------------------------------------------------- the cache


def test_two_audits_writing_one_cache_at_once_leave_it_valid(tiny_model_dir, tiny_adapter_dir, tmp_path) -> None:
    base = tiny_model_dir("bert")
    adapter = tiny_adapter_dir(base, target_modules=["query", "value"])
    env = {"SPECTRA_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-c", "from spectra_cli.app import main; main()", "audit", str(base), str(adapter),
           "--top-k", "4"]
    procs = [subprocess.Popen(cmd + ["-o", str(tmp_path / f"o{i}")], env={**os.environ, **env},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    from spectra.io.spectrum_cache import SpectrumCache

    cache = SpectrumCache(tmp_path / "cache" / "base_spectra")
    entries = list(cache.folder.glob("*.safetensors"))
    assert entries and all(cache.get(e.stem) is not None for e in entries)
    assert not list(cache.folder.glob("*.tmp"))
    warm = _cli("audit", base, adapter, "--top-k", "4", "-o", tmp_path / "warm", env=env)
    assert warm.returncode == 0
    import pandas as pd

    a, b = pd.read_csv(tmp_path / "o0" / "audit.csv"), pd.read_csv(tmp_path / "warm" / "audit.csv")
    assert (b["spectrum_method"].str.startswith("cache:")).all()
    pd.testing.assert_frame_equal(a.drop(columns="spectrum_method"), b.drop(columns="spectrum_method"))


def test_an_unwritable_cache_degrades_to_no_cache_with_a_warning(tiny_model_dir, tiny_adapter_dir, tmp_path,
                                                                 monkeypatch) -> None:
    base = tiny_model_dir("bert")
    adapter = tiny_adapter_dir(base, target_modules=["query"])
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = _cli("audit", base, adapter, "--top-k", "4", "-o", tmp_path / "out",
                env={"SPECTRA_CACHE_DIR": str(blocker / "cache")})
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "cannot write the spectrum cache" in warnings[0]
    assert (tmp_path / "out" / "audit.json").is_file()

    import errno

    import safetensors.torch

    def full(*a: object, **k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    monkeypatch.setenv("SPECTRA_CACHE_DIR", str(tmp_path / "full"))
    res = CliRunner().invoke(app, ["audit", str(base), str(adapter), "--top-k", "4", "-o", str(tmp_path / "o2")])
    assert res.exit_code == 0 and "No space left on device" in res.output
    assert not list((tmp_path / "full" / "base_spectra").glob("*"))


def test_ctrl_c_leaves_no_partial_output_and_no_cache_entry(tiny_model_dir, tiny_adapter_dir, tmp_path,
                                                            monkeypatch) -> None:
    base = tiny_model_dir("bert")
    adapter = tiny_adapter_dir(base, target_modules=["query"])
    import spectra.report.audit_rows as audit_rows

    def interrupt(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    # while the output folder is being written (and the figure helper is drawing)
    monkeypatch.setattr(audit_rows, "write_csv", interrupt)
    res = CliRunner().invoke(app, ["audit", str(base), str(adapter), "-o", str(tmp_path / "out"), *K])
    assert res.exit_code == 130 and not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")]

    import safetensors.torch

    from spectra.io.spectrum_cache import SpectrumCache
    from spectra.spectral import top_singular

    monkeypatch.setattr(safetensors.torch, "save_file", interrupt)
    cache = SpectrumCache(tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        cache.put("ab" * 32, top_singular(torch.randn(8, 6), 2))
    assert list(cache.folder.iterdir()) == []
