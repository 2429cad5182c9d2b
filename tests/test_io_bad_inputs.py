"""spectra.io on bad inputs: missing, corrupt or mismatched bases and adapters fail with one
clear line (a SpectraError), never a traceback."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from conftest import build_tiny_model, make_adapter, save_model
from io_support import assert_one_line_error, auto_model, edit_config, rewrite_adapter

from spectra.errors import SpectraError
from spectra.io import load_adapter, open_base

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# ---------------------------------------------------------------- bad inputs


def test_missing_empty_and_neither(tmp_path: Path, bert_base: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SpectraError) as exc:
        open_base(missing)
    assert_one_line_error(exc, missing, "no such folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SpectraError) as exc:
        open_base(empty)
    assert_one_line_error(exc, empty, "empty folder")
    neither = tmp_path / "neither"
    neither.mkdir()
    (neither / "README.md").write_text("hello")
    with pytest.raises(SpectraError) as exc:
        open_base(neither)
    assert_one_line_error(exc, neither, "neither a model nor an adapter")
    with open_base(bert_base) as base:
        for folder, text in ((missing, "no such folder"), (empty, "empty folder"), (neither, "neither a model")):
            with pytest.raises(SpectraError) as exc:
                load_adapter(folder, base)
            assert_one_line_error(exc, folder, text)


def test_adapter_folder_as_base(tmp_path: Path) -> None:
    ad = make_adapter(build_tiny_model("bert"), tmp_path / "ad", target_modules=["query"])
    with pytest.raises(SpectraError) as exc:
        open_base(ad)
    assert_one_line_error(exc, ad, "adapter")


def test_hub_id_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SpectraError) as exc:
        open_base("spectra-test-nonexistent/tiny-model")
    assert_one_line_error(exc, "spectra-test-nonexistent/tiny-model", "hub")


def test_truncated_and_corrupt_safetensors(tmp_path: Path) -> None:
    def fresh(name: str) -> Path:
        return save_model(build_tiny_model("bert"), tmp_path / name)

    cut = fresh("cut")
    f = cut / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(SpectraError) as exc:
        open_base(cut)
    assert_one_line_error(exc, f, "truncated")

    huge = fresh("huge-header")
    f = huge / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(struct.pack("<Q", len(data) * 4) + data[8:])
    with pytest.raises(SpectraError) as exc:
        open_base(huge)
    assert_one_line_error(exc, f, "header length")

    garbage = fresh("garbage-header")
    f = garbage / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[8:40] = b"\xff" * 32
    f.write_bytes(bytes(data))
    with pytest.raises(SpectraError) as exc:
        open_base(garbage)
    assert_one_line_error(exc, f, "corrupt safetensors header")

    tiny = fresh("tiny")
    f = tiny / "model.safetensors"
    f.write_bytes(b"\x01\x02")
    with pytest.raises(SpectraError) as exc:
        open_base(tiny)
    assert_one_line_error(exc, f, "truncated")


def test_index_names_missing_shard(tmp_path: Path) -> None:
    sharded = tmp_path / "sharded"
    build_tiny_model("llama").save_pretrained(sharded, max_shard_size="20KB")
    shard = sorted(sharded.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(SpectraError) as exc:
        open_base(sharded)
    assert_one_line_error(exc, sharded / "model.safetensors.index.json", shard.name, "missing")


def test_adapter_module_absent_from_base(bert_base: Path, tmp_path: Path) -> None:
    ad = make_adapter(auto_model("bert", bert_base), tmp_path / "ad", target_modules=["query"])
    rewrite_adapter(ad, lambda t: {k.replace("layer.1.attention.self.query", "layer.1.attention.self.quarry"): v
                                   for k, v in t.items()})
    with open_base(bert_base) as base, pytest.raises(SpectraError) as exc:
        load_adapter(ad, base)
    assert_one_line_error(exc, ad, "bert.encoder.layer.1.attention.self.quarry", "absent", bert_base)


def test_adapter_from_bigger_model_is_a_shape_mismatch(bert_base: Path, tmp_path: Path) -> None:
    import transformers as tf

    cfg = tf.BertConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64)
    ad = make_adapter(tf.BertForSequenceClassification(cfg), tmp_path / "ad", target_modules=["value"])
    with open_base(bert_base) as base, pytest.raises(SpectraError) as exc:
        load_adapter(ad, base)
    assert_one_line_error(exc, ad, "(64, 64)", "(32, 32)", "bert.encoder.layer.0.attention.self.value")


@pytest.mark.parametrize("peft_type", ["IA3", "LOHA", "PREFIX_TUNING"])
def test_unsupported_peft_type(peft_type: str, bert_base: Path, tmp_path: Path) -> None:
    ad = make_adapter(build_tiny_model("bert"), tmp_path / "ad", target_modules=["query"])
    edit_config(ad, peft_type=peft_type)
    with open_base(bert_base) as base, pytest.raises(SpectraError) as exc:
        load_adapter(ad, base)
    msg = assert_one_line_error(exc, ad / "adapter_config.json", f"unsupported PEFT type {peft_type}")
    assert "LORA" in msg


def test_unsupported_lora_variant(bert_base: Path, tmp_path: Path) -> None:
    ad = make_adapter(build_tiny_model("bert"), tmp_path / "ad", target_modules=["query"])
    edit_config(ad, use_qalora=True)
    with open_base(bert_base) as base, pytest.raises(SpectraError) as exc:
        load_adapter(ad, base)
    assert_one_line_error(exc, ad / "adapter_config.json", "use_qalora")


def test_llama_adapter_on_bert_base_does_not_fit(bert_base: Path, tmp_path: Path) -> None:
    ad = make_adapter(build_tiny_model("llama"), tmp_path / "ad", target_modules=["q_proj", "v_proj"])
    with open_base(bert_base) as base, pytest.raises(SpectraError) as exc:
        load_adapter(ad, base)
    assert_one_line_error(exc, ad, bert_base, "does not fit", "no module matches")
    # and a full fine-tune of another architecture
    ft = save_model(build_tiny_model("llama"), tmp_path / "llama-ft")
    with open_base(bert_base) as base, pytest.raises(SpectraError) as exc:
        load_adapter(ft, base)
    assert_one_line_error(exc, ft, bert_base, "does not fit")
