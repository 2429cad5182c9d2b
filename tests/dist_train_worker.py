"""One rank of the 2-process DDP test (tests/test_train.py): run under
``torchrun --nproc_per_node 2 dist_train_worker.py BASE DATA OUT``.

Each rank trains the same RoRA recipe for 3 optimizer steps on its own shard of the data
(gloo on CPU: transformers picks it), then saves its adapter weights to
``OUT/rank{R}.safetensors`` and what it saw to ``OUT/rank{R}.json``; the test compares them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)


def main(base: str, data: str, out_dir: str) -> None:
    import torch.distributed as dist
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    from spectra.data import load_labelled
    from spectra.train.config import RoRAConfig
    from spectra.train.recipe import RoRARecipe

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ["RANK"])
    cfg = RoRAConfig(top_k=4, batch_size=8, epochs=1, lr=1e-2, rank=4)
    recipe = RoRARecipe(base, load_labelled(data), out / "work", cfg, device="cpu", cache_dir=False,
                        max_steps=3, save_strategy="no", logging_strategy="steps", logging_steps=1).setup()
    seen: dict[str, object] = {}
    compute_loss = recipe.trainer.compute_loss

    def spy(model, inputs, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.setdefault("first_batch", inputs["input_ids"][:, :8].tolist())
        return compute_loss(model, inputs, *args, **kwargs)

    recipe.trainer.compute_loss = spy
    if rank == 0:
        init = {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(recipe.rora.model).items()}
        save_file(init, str(out / "init.safetensors"))
    recipe.train()
    weights = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(recipe.rora.model).items()}
    save_file(weights, str(out / f"rank{rank}.safetensors"))
    info = {
        "rank": rank,
        "world_size": dist.get_world_size() if dist.is_initialized() else 1,
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "global_step": int(recipe.trainer.state.global_step),
        "penalty": float(cfg.lam * recipe.rora.tr()),
        "task_losses": [r["task_loss"] for r in recipe.trainer.state.log_history if "task_loss" in r],
        **seen,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(info), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:4])
