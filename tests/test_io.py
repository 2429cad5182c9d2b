"""spectra.io: bases, PEFT adapters and full fine-tunes, checked against what peft computes.
Base files (shards, dtypes, mapping, pickles) are in test_io_base_files.py, bad inputs in
test_io_bad_inputs.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_model, make_adapter, save_model
from io_support import assert_one_line_error, auto_model, peft_layers, rewrite_adapter
from safetensors.torch import load_file

from spectra.errors import SpectraError
from spectra.io import (
    DenseUpdate,
    LowRankUpdate,
    base_weight_for,
    load_adapter,
    open_base,
)
from spectra.io.keys import KeyMatcher, module_group, parse_layer, split_lora_key

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# ---------------------------------------------------------------- LoRA deltas == peft's

ARCH_TARGETS = {
    "bert": dict(target_modules=["query", "value", "dense"]),
    "roberta": dict(target_modules=["query", "key", "value"]),
    "llama": dict(target_modules=["q_proj", "k_proj", "o_proj", "up_proj", "down_proj"]),
    "llama-lm": dict(target_modules=["q_proj", "v_proj", "gate_proj"]),
    "gpt2": dict(target_modules=["c_attn"], fan_in_fan_out=True),
}


@pytest.mark.parametrize("arch", list(ARCH_TARGETS))
def test_lora_delta_matches_peft(arch: str, tmp_path: Path) -> None:
    base_dir = save_model(build_tiny_model(arch), tmp_path / "base")
    ad = make_adapter(auto_model(arch, base_dir), tmp_path / "ad", **ARCH_TARGETS[arch])
    layers = peft_layers(auto_model(arch, base_dir), ad)
    with open_base(base_dir) as base, load_adapter(ad, base) as adapter:
        assert adapter.kind == "lora" and adapter.peft_type == "LORA"
        lora_modules = [m for m in adapter.modules if m.update_kind == "lora"]
        assert {m.name for m in lora_modules} == set(layers)
        for m in lora_modules:
            layer = layers[m.name]
            ref = layer.get_delta_weight("default").detach()
            if layer.fan_in_fan_out:
                ref = ref.T  # Conv1D: peft returns (in, out)
            upd = m.load_update()
            assert isinstance(upd, LowRankUpdate)
            assert upd.B.dtype == torch.float32 and upd.shape == m.shape == tuple(ref.shape)
            assert m.rank == upd.rank == layer.r["default"] == 4
            assert m.scale == pytest.approx(layer.scaling["default"]) == 2.0
            torch.testing.assert_close(upd.scale * upd.B @ upd.A, ref, atol=1e-6, rtol=0)
            # base weight in (out, in), equal to the base layer the adapter sits on
            w = base_weight_for(m, base)
            ref_w = layer.get_base_layer().weight.detach()
            torch.testing.assert_close(w, ref_w.T if layer.fan_in_fan_out else ref_w, atol=0, rtol=0)
            assert m.base_transposed == (arch == "gpt2")
            digits = re.search(r"\.(\d+)\.", m.name)
            assert m.layer == (int(digits.group(1)) if digits else None)
            assert m.module_type.rsplit(".", 1)[-1] == m.name.rsplit(".", 1)[-1]
            assert m.name.endswith(m.module_type)
        if arch == "gpt2":
            assert lora_modules[0].shape == (96, 32) and lora_modules[0].base_key == "transformer.h.0.attn.c_attn.weight"


def test_module_identity_fields(bert_base: Path, tmp_path: Path) -> None:
    ad = make_adapter(auto_model("bert", bert_base), tmp_path / "ad", target_modules=["query", "dense"])
    with open_base(bert_base) as base, load_adapter(ad, base) as adapter:
        by = {m.name: m for m in adapter.modules}
        q = by["bert.encoder.layer.1.attention.self.query"]
        assert (q.layer, q.module_type, q.module_group, q.shape) == (1, "query", "attn", (32, 32))
        assert by["bert.encoder.layer.0.attention.output.dense"].module_group == "attn"
        inter = by["bert.encoder.layer.0.intermediate.dense"]
        assert (inter.module_group, inter.shape) == ("mlp", (64, 32))
        out = by["bert.encoder.layer.0.output.dense"]
        assert (out.module_group, out.shape) == ("mlp", (32, 64))
        assert by["bert.pooler.dense"].module_group == "head"
        assert by["bert.pooler.dense"].layer is None


def test_base_saved_as_bare_model_and_adapter_on_bare_model(tmp_path: Path) -> None:
    # base saved as BertModel (encoder.layer...), adapter trained on BertForSequenceClassification (bert.encoder...)
    bare = save_model(build_tiny_model("bert-base"), tmp_path / "bare")
    cls = save_model(build_tiny_model("bert"), tmp_path / "cls")
    ad = make_adapter(auto_model("bert", cls), tmp_path / "ad", target_modules=["query"], modules_to_save=["classifier"])
    with open_base(bare) as base, load_adapter(ad, base) as adapter:
        names = {m.name: m.base_key for m in adapter.modules}
        assert names == {
            "bert.encoder.layer.0.attention.self.query": "encoder.layer.0.attention.self.query.weight",
            "bert.encoder.layer.1.attention.self.query": "encoder.layer.1.attention.self.query.weight",
        }
        assert len(adapter.skipped) == 1 and adapter.skipped[0].startswith("classifier")  # the base has no head
    # and the other way round: adapter trained on BertModel, base saved with a head
    ad2 = make_adapter(build_tiny_model("bert-base"), tmp_path / "ad2", target_modules=["value"])
    with open_base(cls) as base, load_adapter(ad2, base) as adapter:
        assert [m.base_key for m in adapter.modules] == [
            "bert.encoder.layer.0.attention.self.value.weight",
            "bert.encoder.layer.1.attention.self.value.weight",
        ]


# ---------------------------------------------------------------- scales (rsLoRA, patterns)

PATTERN_CONFIGS = {
    "rslora": dict(target_modules=["query", "value"], r=4, lora_alpha=8, use_rslora=True),
    "patterns": dict(
        target_modules=["query", "value"], r=4, lora_alpha=8,
        # an exact module path; "e" must NOT match "value" (PEFT needs a dot boundary)
        rank_pattern={"layer.1.attention.self.query": 2, "e": 7},
        # a full regex: only layer 0's query
        alpha_pattern={r"^.*\.0\..*query$": 32, "value": 3},
    ),
    "rslora+patterns": dict(
        target_modules=["query", "value"], r=4, lora_alpha=8, use_rslora=True,
        rank_pattern={r"layer\.[01]\.attention\.self\.value": 6}, alpha_pattern={"query": 5},
    ),
}


@pytest.mark.parametrize("which", list(PATTERN_CONFIGS))
def test_scale_matches_peft(which: str, bert_base: Path, tmp_path: Path) -> None:
    ad = make_adapter(auto_model("bert", bert_base), tmp_path / "ad", **PATTERN_CONFIGS[which])
    layers = peft_layers(auto_model("bert", bert_base), ad)
    with open_base(bert_base) as base, load_adapter(ad, base) as adapter:
        assert {m.name for m in adapter.modules} == set(layers)
        for m in adapter.modules:
            layer = layers[m.name]
            assert m.rank == layer.r["default"], m.name
            assert m.scale == pytest.approx(layer.scaling["default"], rel=1e-12), m.name
            upd = m.load_update()
            torch.testing.assert_close(upd.dense(), layer.get_delta_weight("default").detach(), atol=1e-6, rtol=0)
        scales = {m.name: (m.rank, m.scale) for m in adapter.modules}
    if which == "patterns":  # the values PEFT's semantics give, spelled out
        assert scales == {
            "bert.encoder.layer.0.attention.self.query": (4, 8.0),
            "bert.encoder.layer.0.attention.self.value": (4, 0.75),
            "bert.encoder.layer.1.attention.self.query": (2, 4.0),
            "bert.encoder.layer.1.attention.self.value": (4, 0.75),
        }


# ---------------------------------------------------------------- DoRA, modules_to_save, embeddings


DORA_TARGETS = {
    "bert": dict(target_modules=["query", "value"]),
    "gpt2": dict(target_modules=["c_attn", "c_proj"], fan_in_fan_out=True),  # Conv1D, incl. square c_proj
    "bert-embedding": dict(target_modules=["word_embeddings"]),  # norm per embedding dimension
}


@pytest.mark.parametrize("case", list(DORA_TARGETS))
def test_dora_delta_matches_peft_merge(case: str, tmp_path: Path) -> None:
    arch = case.split("-")[0]
    base_dir = save_model(build_tiny_model(arch), tmp_path / "base")
    targets = DORA_TARGETS[case]
    ad = make_adapter(auto_model(arch, base_dir), tmp_path / "ad", use_dora=True, **targets)
    # with init_lora_weights=False the magnitude equals ‖W + sBA‖ and DoRA collapses to LoRA: break that
    gen = torch.Generator().manual_seed(3)
    rewrite_adapter(ad, lambda t: {
        k: v * (0.5 + torch.rand(v.shape, generator=gen)) if "magnitude" in k else v for k, v in t.items()})

    from peft import PeftModel

    merged = PeftModel.from_pretrained(auto_model(arch, base_dir), ad).merge_and_unload().state_dict()
    with open_base(base_dir) as base, load_adapter(ad, base) as adapter:
        assert adapter.modules and all(m.update_kind == "dora" for m in adapter.modules)
        for m in adapter.modules:
            W = base_weight_for(m, base)
            upd = m.load_update(W)
            assert isinstance(upd, DenseUpdate) and upd.shape == m.shape
            ref = merged[m.base_key]
            ref = ref.T if m.base_transposed else ref
            torch.testing.assert_close(W + upd.delta, ref, atol=2e-6, rtol=0)
            # not plain LoRA: the magnitude rescaling is really there
            roles = ("lora_embedding_A", "lora_embedding_B") if case.endswith("embedding") else ("lora_A", "lora_B")
            a, b = (m.source.get(m.tensors[r]) for r in roles)
            plain = W + m.scale * ((b @ a).T if case.endswith("embedding") else b @ a)
            assert (plain - ref).abs().max() > 1e-3
            # without an explicit base weight the attached base is read
            torch.testing.assert_close(m.load_update().delta, upd.delta, atol=0, rtol=0)


@pytest.mark.parametrize("arch", ["bert", "roberta", "llama"])
def test_modules_to_save_is_a_full_update(arch: str, tmp_path: Path) -> None:
    base_dir = save_model(build_tiny_model(arch), tmp_path / "base")
    head = "score" if arch == "llama" else "classifier"
    target = "q_proj" if arch == "llama" else "query"
    model = auto_model(arch, base_dir)
    with torch.no_grad():  # train the head a bit
        for name, p in model.named_parameters():
            if name.startswith(head) and p.ndim == 2:
                p.add_(torch.randn_like(p))
    ad = make_adapter(model, tmp_path / "ad", target_modules=[target], modules_to_save=[head])
    saved = load_file(ad / "adapter_model.safetensors")
    with open_base(base_dir) as base, load_adapter(ad, base) as adapter:
        full = [m for m in adapter.modules if m.update_kind == "full"]
        expected = {"roberta": {"classifier.dense", "classifier.out_proj"}}.get(arch, {head})
        assert {m.name for m in full} == expected
        for m in full:
            upd = m.load_update()
            assert isinstance(upd, DenseUpdate)
            ref = saved[f"base_model.model.{m.name}.weight"] - base.get(m.base_key)
            torch.testing.assert_close(upd.delta, ref, atol=0, rtol=0)
            assert upd.delta.abs().max() > 0.1
            assert m.module_group == "head" and m.scale == 1.0 and m.rank == min(m.shape)


def test_embedding_lora_matches_peft(bert_base: Path, tmp_path: Path) -> None:
    ad = make_adapter(auto_model("bert", bert_base), tmp_path / "ad", target_modules=["word_embeddings"])
    layers = peft_layers(auto_model("bert", bert_base), ad)
    with open_base(bert_base) as base, load_adapter(ad, base) as adapter:
        (m,) = adapter.modules
        assert (m.name, m.update_kind, m.module_group) == ("bert.embeddings.word_embeddings", "embedding", "embed")
        assert m.shape == tuple(base.shape(m.base_key)) == (128, 32)
        upd = m.load_update()
        assert upd.B.shape == (128, 4) and upd.A.shape == (4, 32)
        ref = layers[m.name].get_delta_weight("default").detach()
        assert ref.shape == (128, 32)
        torch.testing.assert_close(upd.scale * upd.B @ upd.A, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("one_pass_bytes", [64 << 20, 0])  # the whole adapter in one pass, or tensor by tensor
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_in_adapter(bert_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_pass_bytes: int,
                        value: float) -> None:
    import spectra.io.adapter as adapter_module

    monkeypatch.setattr(adapter_module, "ONE_PASS_FINITE_BYTES", one_pass_bytes)
    ad = make_adapter(auto_model("bert", bert_base), tmp_path / "ad", target_modules=["query"])
    bad = "base_model.model.bert.encoder.layer.1.attention.self.query.lora_B.weight"

    def poison(t):  # type: ignore[no-untyped-def]
        t[bad][3, 1] = value
        return t

    rewrite_adapter(ad, poison)
    with open_base(bert_base) as base, pytest.raises(SpectraError) as exc:
        load_adapter(ad, base)
    assert_one_line_error(exc, ad / "adapter_model.safetensors", bad, "NaN")


# ---------------------------------------------------------------- full fine-tunes


def test_full_finetune_gives_changed_2d_weights(tmp_path: Path) -> None:
    base_dir = save_model(build_tiny_model("bert"), tmp_path / "base")
    model = auto_model("bert", base_dir)
    changed = {
        "bert.encoder.layer.0.attention.self.query.weight",
        "bert.encoder.layer.1.output.dense.weight",
        "bert.embeddings.word_embeddings.weight",
        "classifier.weight",
    }
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k in changed:
            params[k][1, 2] += 0.25
        params["bert.encoder.layer.0.attention.output.LayerNorm.weight"][0] += 1.0  # 1-D: ignored
        params["bert.encoder.layer.0.attention.self.key.bias"][0] += 1.0  # 1-D: ignored
    ft_dir = save_model(model, tmp_path / "ft")
    with open_base(base_dir) as base, load_adapter(ft_dir, base) as adapter:
        assert adapter.kind == "full" and adapter.peft_type is None
        assert {m.base_key for m in adapter.modules} == changed
        for m in adapter.modules:
            assert m.update_kind == "full" and m.name + ".weight" == m.base_key
            delta = m.load_update().delta
            expected = torch.zeros(m.shape)
            expected[1, 2] = 0.25
            torch.testing.assert_close(delta, expected, atol=1e-6, rtol=0)
        assert adapter.module("classifier").module_group == "head"


def test_full_finetune_gpt2_conv1d_orientation(tmp_path: Path) -> None:
    base_dir = save_model(build_tiny_model("gpt2"), tmp_path / "base")
    model = auto_model("gpt2", base_dir)
    w = model.transformer.h[0].attn.c_attn.weight  # Conv1D: (in=32, out=96)
    with torch.no_grad():
        w[5, 70] += 1.0
    ft_dir = save_model(model, tmp_path / "ft")
    with open_base(base_dir) as base, load_adapter(ft_dir, base) as adapter:
        (m,) = adapter.modules
        assert m.name == "transformer.h.0.attn.c_attn" and m.shape == (96, 32) and m.base_transposed
        delta = m.load_update().delta
        assert delta.shape == (96, 32) and delta[70, 5] == pytest.approx(1.0, abs=1e-6)
        assert float(delta.abs().sum()) == pytest.approx(1.0, abs=1e-5)
        assert base_weight_for(m, base).shape == (96, 32)


# ---------------------------------------------------------------- key helpers


def test_bert_dense_modules_get_distinct_types(tmp_path: Path) -> None:
    """BERT names three matrices per block `dense`: each gets its own type, so figures draw
    one line per role instead of a zigzag through all three."""
    base = save_model(build_tiny_model("bert"), tmp_path / "base")
    ad = make_adapter(build_tiny_model("bert"), tmp_path / "ad", target_modules=["dense"])
    with open_base(base) as b, load_adapter(ad, b) as adapter:
        types = {m.name.split("layer.")[-1]: m.module_type for m in adapter.modules if m.layer == 0}
        assert sorted(types.values()) == ["attention.output.dense", "intermediate.dense", "output.dense"]
        shapes = {m.module_type: m.shape for m in adapter.modules if m.layer == 0}
        assert shapes["intermediate.dense"][0] > shapes["intermediate.dense"][1]  # the up-projection
        assert {m.module_type for m in adapter.modules if m.layer is None} <= {"pooler.dense"}


def test_key_helpers() -> None:
    assert split_lora_key("base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight") == (
        "bert.encoder.layer.0.attention.self.query", "lora_A")
    assert split_lora_key("base_model.model.m.q.lora_A.default.weight") == ("m.q", "lora_A")
    assert split_lora_key("base_model.model.m.q.lora_magnitude_vector") == ("m.q", "lora_magnitude_vector")
    assert split_lora_key("base_model.model.e.lora_embedding_B") == ("e", "lora_embedding_B")
    assert split_lora_key("base_model.model.m.q.lora_B.bias") is None
    assert split_lora_key("base_model.model.classifier.weight") is None
    assert [parse_layer(n) for n in ("encoder.layer.3.x", "model.layers.11.mlp", "transformer.h.7.attn",
                                     "blocks.2.q", "encoder.block.5.x", "classifier", "layer_norm")] == [
        3, 11, 7, 2, 5, None, None]
    assert module_group("transformer.h.0.attn.c_proj") == "attn"
    assert module_group("transformer.h.0.mlp.c_proj") == "mlp"
    assert module_group("model.embed_tokens") == "embed"
    m = KeyMatcher(["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight"])
    assert m.match("layers.0.self_attn.q_proj") == "model.layers.0.self_attn.q_proj.weight"
    assert m.match("lm_head") == "model.embed_tokens.weight"  # tied output head
    assert m.match("lm_head", allow_tied=False) is None
    assert KeyMatcher(m.keys, tie_word_embeddings=False).match("lm_head") is None
