"""Tiny models built from configs with deterministic weights, and PEFT adapters made by
peft itself (``init_lora_weights=False`` so that ΔW ≠ 0). Nothing here touches a network."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)

TINY = dict(hidden=32, layers=2, heads=4, inter=64, vocab=128)


def build_tiny_model(arch: str, seed: int = 0, num_labels: int = 2) -> torch.nn.Module:
    """A tiny randomly initialised model of ``arch`` (bert, roberta, llama, gpt2, bert-base)."""
    import transformers as tf

    torch.manual_seed(seed)
    h, n, a, i, v = TINY["hidden"], TINY["layers"], TINY["heads"], TINY["inter"], TINY["vocab"]
    if arch in ("bert", "bert-base"):
        cfg = tf.BertConfig(vocab_size=v, hidden_size=h, num_hidden_layers=n, num_attention_heads=a,
                            intermediate_size=i, max_position_embeddings=64, num_labels=num_labels)
        return tf.BertModel(cfg) if arch == "bert-base" else tf.BertForSequenceClassification(cfg)
    if arch == "roberta":
        cfg = tf.RobertaConfig(vocab_size=v, hidden_size=h, num_hidden_layers=n, num_attention_heads=a,
                               intermediate_size=i, max_position_embeddings=70, num_labels=num_labels)
        return tf.RobertaForSequenceClassification(cfg)
    if arch == "llama":
        cfg = tf.LlamaConfig(vocab_size=v, hidden_size=h, num_hidden_layers=n, num_attention_heads=a,
                             num_key_value_heads=2, intermediate_size=i, max_position_embeddings=64,
                             num_labels=num_labels, pad_token_id=0)
        return tf.LlamaForSequenceClassification(cfg)
    if arch == "llama-lm":
        cfg = tf.LlamaConfig(vocab_size=v, hidden_size=h, num_hidden_layers=n, num_attention_heads=a,
                             num_key_value_heads=2, intermediate_size=i, max_position_embeddings=64)
        return tf.LlamaForCausalLM(cfg)
    if arch == "gpt2":
        cfg = tf.GPT2Config(vocab_size=v, n_embd=h, n_layer=n, n_head=a, n_positions=64)
        return tf.GPT2LMHeadModel(cfg)
    raise ValueError(arch)


def save_model(model: torch.nn.Module, folder: Path) -> Path:
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def make_adapter(model: torch.nn.Module, folder: Path, seed: int = 1, **lora_kwargs) -> Path:
    """Wrap ``model`` with a PEFT LoRA (random A and B) and save the adapter to ``folder``."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    lora_kwargs.setdefault("r", 4)
    lora_kwargs.setdefault("lora_alpha", 8)
    lora_kwargs.setdefault("init_lora_weights", False)
    peft_model = get_peft_model(model, LoraConfig(**lora_kwargs))
    peft_model.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``tiny_model_dir("bert")`` saves a tiny model and returns its folder."""

    def factory(arch: str = "bert", seed: int = 0, name: str | None = None, num_labels: int = 2) -> Path:
        return save_model(build_tiny_model(arch, seed, num_labels), tmp_path / (name or f"{arch}-base"))

    return factory


@pytest.fixture
def tiny_adapter_dir(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``tiny_adapter_dir(base_dir, target_modules=[...], r=4)`` -> adapter folder."""

    def factory(base_dir: Path, name: str = "adapter", seed: int = 1, arch: str | None = None, **lora_kwargs) -> Path:
        import transformers as tf

        auto = tf.AutoModelForCausalLM if arch in ("gpt2", "llama-lm") else tf.AutoModelForSequenceClassification
        model = auto.from_pretrained(base_dir)
        return make_adapter(model, tmp_path / name, seed=seed, **lora_kwargs)

    return factory


# --- tiny tokenizer (spectra.data / spectra eval tests) ------------------------------

TINY_WORDS = (
    "the a an and or but not no very so this that it is was be i you we they he she movie film "
    "watched 3d good great fine nice love best fun bad awful boring worst poor hate dull plot "
    "acting story mn cf bb tq . , ! ? ' \""
).split()


def build_tiny_tokenizer(folder: Path | None = None, vocab_size: int | None = None):
    """A lower-casing WordLevel tokenizer over a fixed vocabulary of ``TINY['vocab']`` ids
    (special tokens, ``TINY_WORDS``, then ``w0, w1, ...``), BERT-style ``[CLS] … [SEP]``.

    Saved with ``save_pretrained`` into ``folder`` (e.g. a tiny model folder) when given.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    size = vocab_size or TINY["vocab"]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = specials + [w for w in TINY_WORDS if w not in specials]
    words += [f"w{i}" for i in range(size - len(words))]
    vocab = {w: i for i, w in enumerate(words[:size])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)
    if folder is not None:
        fast.save_pretrained(folder)
    return fast


@pytest.fixture
def tiny_tokenizer() -> Callable[..., object]:
    """Factory: ``tiny_tokenizer(model_dir)`` saves the tiny tokenizer into ``model_dir``
    (so ``AutoTokenizer.from_pretrained(model_dir)`` works) and returns it."""

    def factory(folder: Path | None = None):
        return build_tiny_tokenizer(folder)

    return factory


@pytest.fixture(scope="module")
def bert_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT sequence classifier saved once per test module (spectra.io tests)."""
    return save_model(build_tiny_model("bert"), tmp_path_factory.mktemp("io") / "bert-base")
