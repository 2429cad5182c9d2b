"""A hostile base: one 16384×16384 float32 Gaussian weight (1 GiB), the shape of a large
model's projection with no spectral gap at the top, so the top-k cannot be certified.

Before spectra 0.3 the audit fell back to a dense SVD of it: 6.6 GB RSS and killed after
900 s with no output. Now the fallback is refused above ``--memory-budget``: the run must
end with exit 2, one line naming the weight and the budget that would allow it, and a peak
RSS of the weight itself plus the Krylov basis (printed against the 1 GiB weight).

    python bench/hostile_base.py [--dim 16384] [--budget-mb 256] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, run_cli  # noqa: E402


def build(folder: Path, dim: int, rank: int = 8) -> tuple[Path, Path]:
    """A one-layer LLaMA-shaped base with a Gaussian q_proj and a rank-``rank`` LoRA on it."""
    import torch
    from safetensors.torch import save_file

    base, adapter = folder / "base", folder / "lora"
    base.mkdir(parents=True)
    adapter.mkdir()
    gen = torch.Generator().manual_seed(0)
    key = "model.layers.0.self_attn.q_proj.weight"
    save_file({key: torch.randn(dim, dim, generator=gen) / dim**0.5}, str(base / "model.safetensors"))
    (base / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                                                  "hidden_size": dim, "num_hidden_layers": 1,
                                                  "num_attention_heads": 128, "intermediate_size": dim}))
    pre = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file({f"{pre}.lora_A.weight": torch.randn(rank, dim, generator=gen) * 0.01,
               f"{pre}.lora_B.weight": torch.randn(dim, rank, generator=gen) * 0.01},
              str(adapter / "adapter_model.safetensors"))
    (adapter / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": ["q_proj"],
        "base_model_name_or_path": str(base)}))
    return base, adapter


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=16384)
    p.add_argument("--budget-mb", type=int, default=256)
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="spectra-hostile-") as tmp:
        base, adapter = build(Path(tmp), args.dim)
        weight_mb = args.dim * args.dim * 4 / 2**20
        res = run_cli(["audit", str(base), str(adapter), "-o", str(Path(tmp) / "out"), "--no-cache",
                       "--no-figures", "--memory-budget", str(args.budget_mb)])
        lines = [ln for ln in res["stderr"].splitlines() if ln.strip()]
        print(f"{args.dim}×{args.dim} Gaussian base weight ({weight_mb:,.0f} MiB): exit {res['rc']} in "
              f"{res['wall_s']:.1f} s, peak RSS {res['rss_mb']:,.0f} MiB = {res['rss_mb'] / weight_mb:.2f}× the weight "
              f"(budget {args.budget_mb} MB)")
        for ln in lines[-3:]:
            print("  " + ln)
        ok = res["rc"] == 2 and len(lines) == 1 and "memory budget" in lines[0] and not (Path(tmp) / "out").exists()
        print("PASS" if ok else "FAIL: expected exit 2, one line about the memory budget, no output")
        if args.json:
            Path(args.json).write_text(json.dumps({k: v for k, v in res.items() if k not in ("stdout",)}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
