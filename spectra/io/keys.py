"""Module names ↔ checkpoint keys, for any architecture.

PEFT saves tensors as ``base_model.model.<module path>.lora_A.weight``; the module path
is relative to the model class the adapter was trained on (``bert.encoder.layer.3...``
for BertForSequenceClassification), while the base may have been saved as another class
(``encoder.layer.3...`` for BertModel). ``KeyMatcher`` tries the name as is, without its
first component, and under each top-level prefix present in the base.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

#: what a module's update can be (``Module.update_kind``): PEFT's LoRA factors, DoRA (LoRA plus a
#: magnitude vector, so its update needs the base weight), a full changed weight, embedding LoRA
UpdateKind = Literal["lora", "dora", "full", "embedding"]
UPDATE_KINDS: tuple[str, ...] = get_args(UpdateKind)
#: updates with a LoRA scale: what Pt rescales and what the forgetting verdict's features read
SCALED_KINDS = ("lora", "dora")
#: updates held as an adapter's factors (not a whole weight): what ``--rescale-only`` can touch
FACTORED_KINDS = ("lora", "dora", "embedding")
#: updates whose ΔW needs the base weight to be formed (DoRA's normalisation, a full weight's difference)
NEEDS_BASE_KINDS = ("dora", "full")
from collections.abc import Iterable, Iterator

PEFT_PREFIXES = ("base_model.model.", "base_model.")

LORA_ROLES = ("lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector", "lora_A", "lora_B")
_LORA_KEY = re.compile(
    r"^(?P<module>.+?)\.(?P<role>lora_embedding_A|lora_embedding_B|lora_magnitude_vector|lora_A|lora_B)"
    r"(?:\.(?P<rest>[^.]+(?:\.weight)?))?$"
)
_MTS_INFIX = re.compile(r"\.(?:modules_to_save\.[^.]+|original_module)(?=\.)")
_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)(?:\.|$)")

# the input embedding a tied output head shares its weight with
_INPUT_EMBEDDINGS = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight", "shared.weight")
_OUTPUT_HEADS = ("lm_head", "embed_out")
_AMBIGUOUS_TYPES = {"dense"}  # names several different matrices of one block (BERT)

# modules stored (in, out) by transformers' Conv1D
CONV1D_MODEL_TYPES = frozenset({"gpt2", "openai-gpt", "imagegpt", "decision_transformer"})
CONV1D_MODULES = frozenset({"c_attn", "c_proj", "c_fc", "q_attn"})

_HEAD = {"classifier", "score", "lm_head", "embed_out", "qa_outputs", "pooler", "cls", "head", "output_layer"}
_EMBED = {"word_embeddings", "position_embeddings", "token_type_embeddings", "embed_tokens", "wte", "wpe",
          "embed_in", "shared", "embed_positions", "embeddings"}
_ATTN_PARTS = {"attention", "attn", "self_attn", "self_attention", "selfattention", "encdecattention",
               "crossattention", "cross_attn", "encoder_attn"}
_ATTN_TYPES = {"query", "key", "value", "q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "c_attn", "q_attn",
               "qkv", "wqkv", "query_key_value", "out_proj", "q", "k", "v", "o"}
_MLP_PARTS = {"mlp", "intermediate", "ffn", "feed_forward", "densereludense", "block_sparse_moe", "experts"}
_MLP_TYPES = {"up_proj", "down_proj", "gate_proj", "fc1", "fc2", "c_fc", "w1", "w2", "w3", "wi", "wo",
              "dense_h_to_4h", "dense_4h_to_h", "gate_up_proj"}


def strip_peft_prefix(key: str) -> str:
    """``base_model.model.bert.x`` -> ``bert.x``."""
    for prefix in PEFT_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def split_lora_key(key: str) -> tuple[str, str] | None:
    """``(module, role)`` for a LoRA tensor key (role in ``LORA_ROLES``), None for any other key.

    Accepts PEFT's saved forms (``q.lora_A.weight``, ``e.lora_embedding_A``,
    ``q.lora_magnitude_vector``) and the in-memory ones with the adapter name
    (``q.lora_A.default.weight``, ``q.lora_magnitude_vector.default.weight``).
    Biases (``lora_B.bias`` with ``lora_bias=True``) are not LoRA weight factors: None.
    """
    m = _LORA_KEY.match(strip_peft_prefix(key))
    if not m:
        return None
    rest = m.group("rest")
    if rest is not None and (rest == "bias" or rest.endswith(".bias")):
        return None
    return m.group("module"), m.group("role")


def saved_module_name(key: str) -> str:
    """Module path of a non-LoRA saved tensor (modules_to_save): prefix and wrapper infixes removed."""
    return _MTS_INFIX.sub("", strip_peft_prefix(key))


def parse_layer(name: str) -> int | None:
    """Transformer block index from ``layer.N``/``layers.N``/``h.N``/``blocks.N``/``block.N``."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def module_type(name: str) -> str:
    """The module's role: the last component of its path (``query``, ``q_proj``, ``c_attn``,
    ``classifier``...), qualified where that alone is ambiguous.

    BERT-style models name three different matrices of every block ``dense``; grouped under
    one type they would draw as one zigzag line per figure. Those get the path inside the
    block (``attention.output.dense``, ``intermediate.dense``, ``output.dense``) or, outside
    the blocks, their parent (``pooler.dense``).
    """
    parts = name.split(".")
    if parts[-1] not in _AMBIGUOUS_TYPES or len(parts) == 1:
        return parts[-1]
    layer_at = next((i for i in range(len(parts) - 1, -1, -1) if parts[i].isdigit()), None)
    if layer_at is not None and layer_at < len(parts) - 2:
        return ".".join(parts[layer_at + 1:])
    return ".".join(parts[-2:])


def base_module_type(name: str) -> str:
    """The last component of a module path, whatever :func:`module_type` made of it."""
    return name.rsplit(".", 1)[-1]


def module_group(name: str) -> str:
    """Coarse role: ``head``, ``embed``, ``attn``, ``mlp`` or ``other``."""
    parts = [p.lower() for p in name.split(".")]
    last = parts[-1]
    if any(p in _HEAD for p in parts):
        return "head"
    if any(p in _EMBED for p in parts):
        return "embed"
    if any(p in _ATTN_PARTS for p in parts[:-1]) or last in _ATTN_TYPES:
        return "attn"
    if any(p in _MLP_PARTS for p in parts[:-1]) or last in _MLP_TYPES:
        return "mlp"
    if parse_layer(name) is not None and "output" in parts and last == "dense":
        return "mlp"  # BERT's layer.N.output.dense (attention.output.dense was caught above)
    return "other"


def is_conv1d(name: str, model_type: str | None) -> bool:
    """Whether the weight of module ``name`` is stored (in, out) by transformers' Conv1D."""
    return (model_type or "") in CONV1D_MODEL_TYPES and module_type(name) in CONV1D_MODULES


def natural_key(name: str) -> list[object]:
    """Sort key that puts ``layer.2`` before ``layer.10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


class KeyMatcher:
    """Find the base checkpoint key of an adapter module, whatever class each was saved as."""

    def __init__(self, base_keys: Iterable[str], tie_word_embeddings: bool = True):
        self.keys = list(base_keys)
        self._set = set(self.keys)
        prefixes: dict[str, None] = {}
        for k in self.keys:
            if "." in k:
                prefixes.setdefault(k.split(".", 1)[0], None)
        self.prefixes = list(prefixes)
        self.tie_word_embeddings = tie_word_embeddings

    def candidates(self, name: str) -> Iterator[str]:
        first, _, rest = name.partition(".")
        yield name
        if rest:
            yield rest
        for p in self.prefixes:
            if p != first:
                yield f"{p}.{name}"
        if rest:
            for p in self.prefixes:
                if p != first:
                    yield f"{p}.{rest}"

    def match(self, name: str, suffix: str = ".weight", allow_tied: bool = True) -> str | None:
        """The base key holding module ``name``'s weight, or None when the base has no such module."""
        for cand in self.candidates(name):
            if cand + suffix in self._set:
                return cand + suffix
        if allow_tied and self.tie_word_embeddings and suffix == ".weight" and module_type(name) in _OUTPUT_HEADS:
            for k in self.keys:
                if k.endswith(_INPUT_EMBEDDINGS):
                    return k
        return None
