"""PEFT's own post-hoc remediation of a trained LoRA adapter: ``reduce_intruder_dimension``.

Shuttleworth et al. (2025, "LoRA vs Full Fine-tuning: An Illusion of Equivalence") find
"intruder dimensions" — leading singular vectors of ``W + ΔW`` with near-zero cosine to
every leading singular vector of ``W`` — and PEFT (``peft.tuners.lora.intruders``)
subtracts a share ``mitigation_lambda`` of them to recover pre-training behaviour. That is
the opposite direction to RoRA's (which pushes ΔW *away* from W's top subspace and
amplifies it), so it is a natural baseline: does undoing the adapter's new directions
bring the backdoor back, or remove it?

PEFT adds the result as a second adapter. For a sequence classifier, PEFT's
``add_adapter`` gives that adapter a fresh copy of the *original* head
(``modules_to_save``); the trained head is copied over here before saving, otherwise the
"mitigated" model would classify with an untrained head.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

NEW_ADAPTER = "intruder_reduced"


def reduce_intruders(base: str | os.PathLike[str], adapter: str | os.PathLike[str], out: str | os.PathLike[str],
                     top_k: int = 10, threshold_epsilon: float = 0.5, mitigation_lambda: float = 0.75,
                     num_labels: int = 2) -> dict[str, Any]:
    """Apply PEFT's ``reduce_intruder_dimension`` to ``adapter`` and save a standard PEFT adapter to ``out``.

    Args:
        base, adapter: the (poisoned) base classifier folder and its trained LoRA adapter.
        out: folder for the mitigated adapter (plain PEFT; the trained head included).
        top_k, threshold_epsilon, mitigation_lambda: PEFT's parameters (its defaults).
        num_labels: classes of the classifier.

    Returns:
        ``{"modules_with_intruders": n, "modules": m, "log": [...]}`` from PEFT's log lines.
    """
    import torch
    from peft.tuners.lora.intruders import reduce_intruder_dimension
    from peft.utils.other import ModulesToSaveWrapper

    from spectra.io.model import load_classifier

    model, _ = load_classifier(base, adapter, num_labels=num_labels, device="cpu")
    lines: list[str] = []
    reduce_intruder_dimension(model, top_k=top_k, threshold_epsilon=threshold_epsilon,
                              mitigation_lambda=mitigation_lambda, new_adapter_name=NEW_ADAPTER,
                              logging_sink=lines.append)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ModulesToSaveWrapper) and NEW_ADAPTER in module.modules_to_save:
                module.modules_to_save[NEW_ADAPTER].load_state_dict(module.modules_to_save["default"].state_dict())
    tmp = Path(out)
    model.save_pretrained(str(tmp), selected_adapters=[NEW_ADAPTER])
    # PEFT saves a non-default adapter into a sub-folder named after it; flatten it so
    # ``out`` is an adapter folder like any other
    nested = tmp / NEW_ADAPTER
    if nested.is_dir():
        for f in nested.iterdir():
            f.replace(tmp / f.name)
        nested.rmdir()
    hits = [ln for ln in lines if "Intruders:" in ln]
    return {"modules_with_intruders": len(hits), "modules": sum(1 for ln in lines if ":" in ln and
                                                               ("Intruders" in ln or "No intruders" in ln)),
            "log": lines, "top_k": top_k, "threshold_epsilon": threshold_epsilon,
            "mitigation_lambda": mitigation_lambda}
