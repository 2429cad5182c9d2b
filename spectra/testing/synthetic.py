"""Synthetic LLaMA-shaped checkpoints with known, realistic spectra, for benchmarks and tests.

:func:`build_synthetic` writes a base model (fp16 safetensors shards + index, a LLaMA
config) and an all-linear PEFT LoRA adapter for a :class:`Shape` (default: TinyLlama-1.1B's:
hidden 2048, 22 layers, intermediate 5632, 32 heads / 4 KV heads, vocab 32000).

The synthetic spectrum: each weight is ``W = U diag(σ) Vᵀ`` with
``σ_i = c · (i + 1 + 0.3 ε_i)^(−0.5)``, ``ε_i ~ U(−1, 1)`` (a power law as in pretrained
weights: flat near index 32, where σ_32/σ_33 ≈ 1.015; the bounded jitter keeps every gap at
least 40 % of the nominal one, like the level repulsion of real spectra, so no pair is
degenerate) and ``c`` giving entries of RMS 0.02. ``U``, ``V`` are cheap random orthonormal
frames: three random orthonormal bases per dimension (one QR each, shared by all
weights), each weight taking one of them with its rows randomly permuted and sign-flipped
and a random subset of its columns. Cost: one GEMM per weight (about a minute for all
154 on 2 cores). The adapter's A rows and B columns mix one of W's top-48 right/left
singular directions (cosine 0.1–0.7) with a random direction, so ΔW points partly into
W's top-32 subspace and partly just outside it: the cosines then depend on W_pre's top-32
vectors being right, which is what the comparison checks.

Large shapes (an 8B model has 224 weights of up to 14336×4096): a full-rank ``U diag(σ) Vᵀ``
costs ~0.5 TFLOP per MLP weight, an hour on 2 cores. ``Shape(spikes=s)`` builds instead
``W = U_s diag(σ_s) V_sᵀ + N``: the same jittered power law on ``s`` random orthonormal
directions plus Gaussian noise ``N`` whose spectral edge ``c(√m + √n)`` sits at 98 % of
``σ_s`` — the top of the spectrum (the part the audit reads, index ≤ 32 ≪ s) keeps the power
law's gaps, the bulk below is Marchenko–Pastur. Cost: one ``randn`` and a rank-``s`` GEMM
per weight. ``Shape(dtype="bfloat16")`` writes bf16 shards, as LLaMA-3 ships.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GEN_VERSION = "g1"  # bump when the generator changes what it writes
MODULES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


@dataclass(frozen=True)
class Shape:
    hidden: int = 2048
    intermediate: int = 5632
    layers: int = 22
    heads: int = 32
    kv_heads: int = 4
    vocab: int = 32000
    rank: int = 16
    alpha: int = 32
    exponent: float = 0.5
    seed: int = 0
    #: 0: full-rank power law (exact spectrum); > 0: that many spikes over Gaussian noise
    spikes: int = 0
    #: storage dtype of the base shards: "float16" or "bfloat16"
    dtype: str = "float16"

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.hidden // self.heads)

    def module_shapes(self) -> dict[str, tuple[int, int]]:
        h, i, kv = self.hidden, self.intermediate, self.kv_dim
        return {"self_attn.q_proj": (h, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h),
                "self_attn.o_proj": (h, h), "mlp.gate_proj": (i, h), "mlp.up_proj": (i, h),
                "mlp.down_proj": (h, i)}

    def tag(self) -> str:
        return (f"llama-h{self.hidden}-i{self.intermediate}-l{self.layers}-a{self.heads}-kv{self.kv_heads}"
                f"-v{self.vocab}-p{self.exponent:g}-s{self.seed}-r{self.rank}a{self.alpha}"
                + (f"-sp{self.spikes}" if self.spikes else "") + ("-bf16" if self.dtype == "bfloat16" else "")
                + f"-{GEN_VERSION}")

    def params(self) -> int:
        per_layer = sum(m * n for m, n in self.module_shapes().values()) + 2 * self.hidden
        return self.layers * per_layer + 2 * self.vocab * self.hidden + self.hidden


def power_law(n: int, exponent: float, gen: Any) -> Any:
    """``(i + 1 + 0.3 ε_i)^(−exponent)`` for i < n: descending, every gap ≥ 40 % of nominal."""
    import torch

    i = torch.arange(n, dtype=torch.float64)
    jitter = 0.3 * (2 * torch.rand(n, generator=gen, dtype=torch.float64) - 1)
    return (i + 1 + jitter).pow(-exponent)


def _frame(bases: list[Any], cols: int, gen: Any) -> Any:
    """A random ``d × cols`` orthonormal frame: a shared basis with its rows permuted and
    sign-flipped and a random subset of its columns (exactly orthonormal, one gather)."""
    import torch

    Q = bases[int(torch.randint(len(bases), (1,), generator=gen))]
    d, c = Q.shape
    rows = torch.randperm(d, generator=gen)
    pick = torch.randperm(c, generator=gen)[:cols]
    signs = torch.randint(0, 2, (d, 1), generator=gen).float() * 2 - 1
    return Q[rows][:, pick] * signs


def _spiked(U: Any, sigma: Any, V: Any, gen: Any) -> Any:
    """``U diag(σ') Vᵀ + N``: Gaussian noise ``N`` with spectral edge ``0.98 σ'_s`` (its largest
    singular value is ``c(√m + √n)``), scaled so the entries have RMS 0.02."""
    import torch

    m, n = U.shape[0], V.shape[0]
    edge = math.sqrt(m) + math.sqrt(n)
    noise = torch.randn(m, n, generator=gen)
    # entries' mean square: (Σσ_i² + (0.98 σ_s / edge)² m n) / (m n) = 0.02²
    unit = float(sigma.square().sum()) + (0.98 * float(sigma[-1]) / edge) ** 2 * m * n
    c = 0.02 * math.sqrt(m * n / unit)
    noise.mul_(0.98 * c * float(sigma[-1]) / edge)
    return noise.addmm_(U * (c * sigma).float(), V.T)


def build_synthetic(shape: Shape, folder: Path, shard_mb: int = 512, log: Any = print) -> tuple[Path, Path]:
    """Write ``folder/base`` (config.json, fp16 shards, index) and ``folder/lora`` (PEFT adapter).

    Deterministic in ``shape`` (incl. its seed); reused when ``folder/DONE`` exists.
    """
    base, lora = folder / "base", folder / "lora"
    if (folder / "DONE").is_file():
        return base, lora
    import torch
    from safetensors.torch import save_file

    t0 = time.perf_counter()
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "base").mkdir(parents=True)
    (tmp / "lora").mkdir()
    shapes = shape.module_shapes()
    # orthonormal columns needed per dimension: the largest min(m, n) it takes part in
    need: dict[int, int] = {}
    for m, n in shapes.values():
        for d in (m, n):
            need[d] = max(need.get(d, 0), min(m, n, shape.spikes or m * n))
    g = torch.Generator().manual_seed(shape.seed)
    bases = {d: [torch.linalg.qr(torch.randn(d, c, generator=g)).Q.contiguous() for _ in range(3)]
             for d, c in sorted(need.items())}
    log(f"  orthonormal bases for dims {sorted(need)}: {time.perf_counter() - t0:.1f} s")

    shard: dict[str, Any] = {}
    shard_bytes, shard_files, weight_map = 0, [], {}
    lora_tensors: dict[str, Any] = {}

    def flush() -> None:
        nonlocal shard, shard_bytes
        if not shard:
            return
        name = f"shard-{len(shard_files):05d}.safetensors"
        save_file(shard, str(tmp / "base" / name), metadata={"format": "pt"})
        shard_files.append(name)
        weight_map.update({k: name for k in shard})
        shard, shard_bytes = {}, 0

    store = {"float16": torch.float16, "bfloat16": torch.bfloat16}[shape.dtype]

    def add(key: str, t: Any) -> None:
        nonlocal shard_bytes
        if shard_bytes + t.numel() * 2 > shard_mb << 20:
            flush()
        shard[key] = t.to(store).contiguous()
        shard_bytes += t.numel() * 2

    ge = torch.Generator().manual_seed(shape.seed + 1)
    add("model.embed_tokens.weight", 0.02 * torch.randn(shape.vocab, shape.hidden, generator=ge))
    for layer in range(shape.layers):
        tl = time.perf_counter()
        for j, (name, (m, n)) in enumerate(shapes.items()):
            gm = torch.Generator().manual_seed(shape.seed * 100_003 + 1_000 * layer + j + 7)
            d = min(m, n, shape.spikes) if shape.spikes else min(m, n)
            U, V = _frame(bases[m], d, gm), _frame(bases[n], d, gm)
            sigma = power_law(d, shape.exponent, gm)
            if shape.spikes:
                weight = _spiked(U, sigma, V, gm)
            else:
                sigma = (sigma * 0.02 * math.sqrt(m * n / float(sigma.square().sum()))).float()
                weight = (U * sigma) @ V.T
            add(f"model.layers.{layer}.{name}.weight", weight)
            del weight
            # LoRA factors: each A row / B column mixes one of W's top-48 directions with noise
            r = shape.rank
            top = min(48, d)
            ia = torch.randint(top, (r,), generator=gm)
            ib = torch.randint(top, (r,), generator=gm)
            ca = 0.1 + 0.6 * torch.rand(r, 1, generator=gm)
            cb = 0.1 + 0.6 * torch.rand(1, r, generator=gm)
            za = torch.randn(r, n, generator=gm)
            zb = torch.randn(m, r, generator=gm)
            A = ca * V[:, ia].T + (1 - ca**2).sqrt() * za / za.norm(dim=1, keepdim=True)
            B = cb * U[:, ib] + (1 - cb**2).sqrt() * zb / zb.norm(dim=0, keepdim=True)
            B = B * (0.01 * 10 ** (-torch.rand(1, r, generator=gm)))  # column norms 0.001–0.01
            prefix = f"base_model.model.model.layers.{layer}.{name}"
            lora_tensors[f"{prefix}.lora_A.weight"] = A.contiguous()
            lora_tensors[f"{prefix}.lora_B.weight"] = B.contiguous()
        for ln in ("input_layernorm", "post_attention_layernorm"):
            add(f"model.layers.{layer}.{ln}.weight", torch.ones(shape.hidden))
        if layer == 0 or (layer + 1) % 5 == 0 or layer + 1 == shape.layers:
            log(f"  layer {layer + 1}/{shape.layers}: {time.perf_counter() - tl:.1f} s/layer, "
                f"{time.perf_counter() - t0:.0f} s so far")
    add("model.norm.weight", torch.ones(shape.hidden))
    add("lm_head.weight", 0.02 * torch.randn(shape.vocab, shape.hidden, generator=ge))
    flush()

    # HF shard names: model-0000i-of-0000N.safetensors
    total = len(shard_files)
    names = {f: f"model-{i + 1:05d}-of-{total:05d}.safetensors" for i, f in enumerate(shard_files)}
    for old, new in names.items():
        (tmp / "base" / old).rename(tmp / "base" / new)
    size = sum((tmp / "base" / n).stat().st_size for n in names.values())
    index = {"metadata": {"total_size": size}, "weight_map": {k: names[v] for k, v in sorted(weight_map.items())}}
    (tmp / "base" / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate, "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads, "num_key_value_heads": shape.kv_heads,
        "head_dim": shape.hidden // shape.heads, "vocab_size": shape.vocab, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5, "hidden_act": "silu", "rope_theta": 10000.0, "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": shape.dtype,
        "spectra_bench": {"generator": GEN_VERSION, **asdict(shape),
                          "spectrum": f"sigma_i = c*(i+1+0.3*U(-1,1))^-{shape.exponent}, entries RMS 0.02"
                                      + (f", on {shape.spikes} spikes over Gaussian noise" if shape.spikes else "")},
    }
    (tmp / "base" / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    save_file(lora_tensors, str(tmp / "lora" / "adapter_model.safetensors"), metadata={"format": "pt"})
    adapter_config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": shape.rank, "lora_alpha": shape.alpha,
        "target_modules": [m.split(".")[-1] for m in MODULES], "lora_dropout": 0.0, "bias": "none",
        "fan_in_fan_out": False, "use_rslora": False, "use_dora": False, "rank_pattern": {},
        "alpha_pattern": {}, "modules_to_save": None, "layers_to_transform": None, "layers_pattern": None,
        "init_lora_weights": True, "inference_mode": True, "base_model_name_or_path": None,
    }
    (tmp / "lora" / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2), encoding="utf-8")
    (tmp / "DONE").write_text(f"built in {time.perf_counter() - t0:.0f} s\n", encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    log(f"  wrote {size / 2**30:.2f} GiB in {total} shards + adapter ({len(lora_tensors)} tensors) "
        f"in {time.perf_counter() - t0:.0f} s")
    return base, lora


def find_or_build(shape: Shape, data_dir: Path) -> tuple[Path, Path, str]:
    """``(base, adapter, note)``: a cached checkpoint of this shape, else a cached one with
    more layers and an adapter cut to the first ``shape.layers`` layers (the generator is
    deterministic per layer, so the audited weights are the same), else a new build."""
    folder = data_dir / shape.tag()
    if (folder / "DONE").is_file():
        return folder / "base", folder / "lora", f"{folder} (cached)"
    pattern = re.escape(shape.tag()).replace(f"\\-l{shape.layers}\\-", r"\-l(\d+)\-")
    for cand in sorted(data_dir.glob("llama-*")) if data_dir.is_dir() else []:
        m = re.fullmatch(pattern, cand.name)
        if m and int(m.group(1)) > shape.layers and (cand / "DONE").is_file():
            sub = cand / f"lora-first{shape.layers}"
            if not (sub / "adapter_model.safetensors").is_file():
                from safetensors.torch import load_file, save_file

                tmp = cand / f"lora-first{shape.layers}.partial"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                keep = {k: v for k, v in load_file(cand / "lora" / "adapter_model.safetensors").items()
                        if int(k.split(".layers.")[1].split(".")[0]) < shape.layers}
                save_file(keep, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
                shutil.copyfile(cand / "lora" / "adapter_config.json", tmp / "adapter_config.json")
                tmp.rename(sub)
            return cand / "base", sub, f"{cand} (cached, {m.group(1)} layers; adapter on the first {shape.layers})"
    t0 = time.perf_counter()
    base, lora = build_synthetic(shape, folder)
    return base, lora, f"{folder} (built in {time.perf_counter() - t0:.0f} s)"
