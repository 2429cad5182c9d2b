"""spectra.io's base checkpoints: sharded, every dtype, unmappable file systems, headers only,
fingerprints and pickles, each read as safetensors/torch themselves read them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_model, make_adapter, save_model
from io_support import assert_one_line_error
from safetensors.torch import load_file, save_file

from spectra.errors import SpectraError
from spectra.io import base_weight_for, load_adapter, open_base

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# ---------------------------------------------------------------- base checkpoints


def test_sharded_base_reads_same_tensors(tmp_path: Path) -> None:
    model = build_tiny_model("llama")
    single = save_model(model, tmp_path / "single")
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    with open_base(single) as a, open_base(sharded) as b:
        assert len(b.files) > 1 and len(a.files) == 1
        assert sorted(a.keys()) == sorted(b.keys())
        assert b.config["model_type"] == "llama"
        for k in a.keys():
            assert a.shape(k) == b.shape(k) and a.dtype(k) == b.dtype(k)
            assert torch.equal(a.get(k), b.get(k))


def test_store_reads_every_dtype_like_safetensors_itself(tmp_path: Path) -> None:
    """Both readers, the positioned ``get`` and the mapped read-through the audit uses,
    return exactly what safetensors' own loader does; a mapped tensor is unmapped when
    closed; either refuses a file truncated after its header was validated."""
    from spectra.io._tensors import SafetensorsStore

    g = torch.Generator().manual_seed(0)
    tensors = {
        "f32": torch.randn(5, 7, generator=g),
        "f16": torch.randn(3, 4, generator=g).half(),
        "bf16": torch.randn(6, generator=g).bfloat16(),
        "f64": torch.randn(2, 2, 2, generator=g).double(),
        "i64": torch.arange(-3, 9),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }
    f = tmp_path / "m.safetensors"
    save_file(tensors, str(f))
    reference = load_file(str(f))
    store = SafetensorsStore([f])
    for key, ref in reference.items():
        got = store.get(key)
        assert got.dtype == ref.dtype and got.shape == ref.shape, key
        assert torch.equal(got, ref), key
        mt = store.mapped(key)
        assert mt.tensor is not None and mt.tensor.dtype == ref.dtype and torch.equal(mt.tensor, ref), key
        assert mt.nbytes == ref.numel() * ref.element_size()
        mt.close()
        assert mt.tensor is None and mt.nbytes == 0
        mt.close()  # idempotent

    def mapped_regions() -> int:
        return sum(str(f) in line for line in Path("/proc/self/maps").read_text().splitlines())

    if Path("/proc/self/maps").exists():
        before = mapped_regions()  # safetensors' load_file above keeps its own map
        held = [store.mapped(k) for k in ("f32", "f16", "bf16")]
        assert mapped_regions() == before + 3
        for mt in held:
            mt.close()
        assert mapped_regions() == before  # unmapped: no file pages left counted in RSS
    # a store whose small file has not been read yet (``get`` reads a small file whole, once)
    unread = SafetensorsStore([f])
    with open(f, "r+b") as fh:  # shrink the file after its header was validated
        fh.truncate(f.stat().st_size - 4)
    entries = store.headers[f].entries
    last = max((k for k in entries if entries[k]["offsets"][1] > entries[k]["offsets"][0]),
               key=lambda k: entries[k]["offsets"][1])
    with pytest.raises(SpectraError, match="truncated"):
        unread.get(last)
    with pytest.raises(SpectraError, match="truncated"):
        store.mapped(last)  # a map past the end would kill the process with SIGBUS instead


def test_a_file_system_that_cannot_map_is_read_instead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mmap

    from spectra.io._tensors import SafetensorsStore

    f = tmp_path / "m.safetensors"
    w = torch.randn(6, 5)
    save_file({"w": w}, str(f))

    def no_map(*args: object, **kwargs: object) -> None:
        raise OSError(19, "No such device")  # what mmap says on a file system without it

    monkeypatch.setattr(mmap, "mmap", no_map)
    mt = SafetensorsStore([f]).mapped("w")
    assert mt.tensor is not None and torch.equal(mt.tensor, w)
    mt.close()


def test_headers_only_and_upcast(tmp_path: Path) -> None:
    model = build_tiny_model("llama").to(torch.bfloat16)
    base_dir = save_model(model, tmp_path / "bf16")
    ad = make_adapter(build_tiny_model("llama"), tmp_path / "ad", target_modules=["q_proj"])
    with open_base(base_dir) as base, load_adapter(ad, base) as adapter:
        key = "model.layers.0.mlp.up_proj.weight"
        assert base.shape(key) == (64, 32) and base.dtype(key) == torch.bfloat16
        assert base.get(key).dtype == torch.bfloat16
        w = base_weight_for(adapter.modules[0], base)
        assert w.dtype == torch.float32
        assert torch.equal(w, base.get(adapter.modules[0].base_key).float())


def test_fingerprint_stable_and_sensitive(tmp_path: Path) -> None:
    base_dir = save_model(build_tiny_model("bert"), tmp_path / "base")
    key = "bert.encoder.layer.0.attention.self.query.weight"
    with open_base(base_dir) as a, open_base(base_dir) as b:
        fp = a.fingerprint(key)
        assert fp == b.fingerprint(key)
        assert fp != a.fingerprint("bert.encoder.layer.1.attention.self.query.weight")
        assert len({a.fingerprint(k) for k in a.keys()}) == len(a.keys())
    f = base_dir / "model.safetensors"
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touched
    with open_base(base_dir) as c:
        assert c.fingerprint(key) != fp
    save_model(build_tiny_model("bert", seed=5), base_dir)  # rewritten with other weights
    with open_base(base_dir) as d:
        assert d.fingerprint(key) != fp


def test_pickle_only_with_allow_pickle(tmp_path: Path) -> None:
    model = build_tiny_model("bert")
    folder = tmp_path / "pickled"
    folder.mkdir()
    model.config.to_json_file(folder / "config.json")
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(SpectraError) as exc:
        open_base(folder)
    assert_one_line_error(exc, folder, "--allow-pickle")
    with open_base(folder, allow_pickle=True) as base:
        key = "bert.encoder.layer.0.attention.self.query.weight"
        assert torch.equal(base.get(key), model.state_dict()[key])
        assert base.shape(key) == (32, 32) and base.format == "pickle"
        assert base.fingerprint(key) == base.fingerprint(key)
        # a pickled PEFT adapter too
        ad = make_adapter(build_tiny_model("bert"), tmp_path / "ad", target_modules=["query"])
        st = ad / "adapter_model.safetensors"
        torch.save(load_file(st), ad / "adapter_model.bin")
        st.unlink()
        with pytest.raises(SpectraError) as exc:
            load_adapter(ad, base)
        assert_one_line_error(exc, ad / "adapter_model.bin", "--allow-pickle")
        with load_adapter(ad, base, allow_pickle=True) as adapter:
            assert len(adapter.modules) == 2 and adapter.modules[0].load_update().rank == 4
