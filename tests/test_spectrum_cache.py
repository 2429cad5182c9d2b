"""The base-spectrum cache (spectra.io.spectrum_cache): round trips, damaged files, keys and
the default folder."""

from __future__ import annotations

import pytest
import torch

from spectra.io.files import cache_dir as default_cache_dir
from spectra.io.spectrum_cache import SpectrumCache, spectrum_key
from spectra.spectral import TopK, top_singular


def small_topk() -> TopK:
    W = torch.randn(2, 20, 30, generator=torch.Generator().manual_seed(15))
    return top_singular(W, 4)


def test_cache_round_trip(tmp_path):
    cache = SpectrumCache(tmp_path / "c")
    key = spectrum_key("sha256:abc", 4, "float32", "randomized")
    assert cache.get(key) is None
    value = small_topk()
    cache.put(key, value)
    got = cache.get(key)
    assert got is not None and got.method == value.method
    for name in ("U", "S", "Vh", "certified", "residual"):
        assert torch.equal(getattr(got, name), getattr(value, name)), name
    assert [p.name for p in (tmp_path / "c").iterdir()] == [f"{key}.safetensors"]  # no temp left


@pytest.mark.parametrize("damage", ["garbage", "truncate", "wrong_key"])
def test_cache_corrupt_file_is_a_miss_and_is_removed(tmp_path, damage):
    cache = SpectrumCache(tmp_path)
    key = spectrum_key("f", 4, "float32", "exact")
    cache.put(key, small_topk())
    file = tmp_path / f"{key}.safetensors"
    if damage == "garbage":
        file.write_bytes(b"\x00not a safetensors file")
    elif damage == "truncate":
        file.write_bytes(file.read_bytes()[:-40])
    else:  # a valid file stored under another key's name
        other = spectrum_key("g", 4, "float32", "exact")
        cache.put(other, small_topk())
        (tmp_path / f"{other}.safetensors").replace(file)
    assert cache.get(key) is None
    assert not file.exists()


def test_spectrum_key_and_default_dir(monkeypatch, tmp_path):
    key = spectrum_key("fp", 32, "float32", "randomized")
    assert len(key) == 64 and int(key, 16) >= 0
    assert key == spectrum_key("fp", 32, "float32", "randomized")
    variants = {spectrum_key("fq", 32, "float32", "randomized"), spectrum_key("fp", 16, "float32", "randomized"),
                spectrum_key("fp", 32, "float64", "randomized"), spectrum_key("fp", 32, "float32", "exact")}
    assert key not in variants and len(variants) == 4
    with pytest.raises(ValueError):
        SpectrumCache(tmp_path).get("../escape")
    monkeypatch.setenv("SPECTRA_CACHE_DIR", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("SPECTRA_CACHE_DIR")
    assert default_cache_dir() == __import__("pathlib").Path.home() / ".cache" / "spectra"
