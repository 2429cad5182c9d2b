"""``spectra eval`` as a library call: load the data and the classifier (base + adapter at a
LoRA scale), evaluate, and record what produced the numbers."""

from __future__ import annotations

import os
import warnings
from typing import Any

from spectra.data.labelled import LabelledData
from spectra.data.triggers import Trigger, parse_trigger
from spectra.errors import SpectraError
from spectra.eval.metrics import EvalResult, _check_labels, evaluate


def run_eval(
    base: str | os.PathLike[str],
    adapter: str | os.PathLike[str] | None,
    data: str | os.PathLike[str] | LabelledData,
    trigger: str | Trigger,
    target_label: int = 0,
    *,
    scale: float = 1.0,
    head: str = "trained",
    text_col: str | None = None,
    label_col: str | None = None,
    split_test: float | None = None,
    seed: int = 0,
    batch_size: int = 64,
    max_length: int = 128,
    device: str = "auto",
    allow_pickle: bool = False,
    progress: bool | None = True,
) -> EvalResult:
    """Load ``data`` and the classifier (``base`` + ``adapter`` at ``scale``), evaluate.

    ``scale`` multiplies every LoRA scale (``head="scaled"`` extrapolates a trained head with
    it too; see :func:`spectra.io.model.scaled_adapter`).
    ``split_test`` evaluates on the test side of ``split(data, split_test, seed)`` instead
    of the whole file. The result's ``meta`` records ``scale``, the exact ``settings``,
    the ``inputs`` (paths and content hashes of base, adapter and data) and library
    ``versions``. Bad input (data, trigger, labels, folders) raises :class:`SpectraError`
    before any model is run.
    """
    import torch

    from spectra.data.datasets import load_labelled, split
    from spectra.device import resolve_device
    from spectra.errors import SpectraWarning
    from spectra.eval.scaling import scaled_adapter
    from spectra.io.model import load_classifier
    from spectra.provenance import library_versions

    trig = parse_trigger(trigger) if isinstance(trigger, str) else trigger
    if scale != 1.0 and adapter is None:
        raise SpectraError("--scale needs an adapter (the base model has nothing to scale)")
    labelled = data if isinstance(data, LabelledData) else load_labelled(data, text_col, label_col)
    test = labelled
    if split_test is not None:
        _, test = split(labelled, split_test, seed)
    _check_labels(None, test, target_label)  # fail on the data before loading any model
    dev = resolve_device(device)
    torch.manual_seed(seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SpectraWarning)
        model, tokenizer = load_classifier(base, adapter, num_labels=test.num_classes, device=dev,
                                           allow_pickle=allow_pickle)
        with scaled_adapter(model, scale, head=head):
            result = evaluate(model, tokenizer, test, trig, target_label, seed=seed, batch_size=batch_size,
                              max_length=max_length, progress=progress)
    for w in caught:  # loader warnings (fresh head, DoRA scaling) belong in the report
        if issubclass(w.category, SpectraWarning):
            result.warnings.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    result.meta = {
        "scale": float(scale),
        "settings": {"trigger": trig.spec, "target_label": target_label, "scale": float(scale), "head": head,
                     "seed": seed,
                     "batch_size": batch_size, "max_length": max_length, "device": str(dev),
                     "split_test": split_test, "text_col": text_col, "label_col": label_col,
                     "allow_pickle": allow_pickle},
        "inputs": {"base": _described(base), "adapter": _described(adapter) if adapter is not None else None,
                   "data": labelled.to_dict(), "evaluated": {"rows": len(test), "counts": test.counts(),
                                                             "summary": test.summary()}},
        "versions": library_versions(),
    }
    return result




def _described(path: Any) -> dict[str, Any]:
    """:func:`spectra.provenance.describe_path`, plus the ``sha256`` map eval.json carried
    before 0.2 (raw hex per file; kept for one release, see CHANGELOG)."""
    from spectra.provenance import describe_path

    d = describe_path(path)
    if "files" in d:
        d["sha256"] = {name: h.split(":", 1)[1] for name, h in d["files"].items() if h.startswith("sha256:")}
    return d
