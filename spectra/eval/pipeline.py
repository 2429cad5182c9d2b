"""``spectra eval`` as a library call: load the data and the classifier (base + adapter at a
LoRA scale), evaluate, and record what produced the numbers."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable
from typing import Any

from spectra.data.labelled import LabelledData
from spectra.data.triggers import Trigger, parse_trigger
from spectra.errors import SpectraError
from spectra.eval.metrics import EvalResult, _check_labels, evaluate
from spectra.eval.settings import EvalSettings
from spectra.settings import with_legacy


def run_eval(
    base: str | os.PathLike[str],
    adapter: str | os.PathLike[str] | None,
    data: str | os.PathLike[str] | LabelledData,
    trigger: str | Trigger,
    target_label: int = 0,
    settings: EvalSettings | None = None,
    *,
    progress: bool | Callable[[int, int], None] | None = True,
    **legacy: Any,
) -> EvalResult:
    """Load ``data`` and the classifier (``base`` + ``adapter`` at ``settings.scale``), evaluate.

    ``settings`` (:class:`~spectra.eval.settings.EvalSettings`, default its defaults): ``scale``
    multiplies every LoRA scale (``head="scaled"`` extrapolates a trained head with it too; see
    :func:`spectra.eval.scaling.scaled_adapter`); ``split_test`` evaluates on the test side of
    ``split(data, split_test, seed)`` instead of the whole file; ``text_col``/``label_col`` name the
    data's columns; ``batch_size``, ``max_length``, ``seed``, ``device``, ``allow_pickle``. Until 0.4
    they are still taken as keywords (``seed=0``), with a ``DeprecationWarning``. The result's
    ``meta`` records ``scale``, the exact ``settings``, the ``inputs`` (paths and content hashes of
    base, adapter and data) and library ``versions``. Bad input (data, trigger, labels, folders)
    raises :class:`SpectraError` before any model is run.
    """
    import torch

    from spectra.data.datasets import load_labelled, split
    from spectra.device import resolve_device
    from spectra.errors import SpectraWarning
    from spectra.eval.scaling import scaled_adapter
    from spectra.io.model import load_classifier

    st = with_legacy(EvalSettings, settings, legacy, "run_eval")
    scale, head, split_test, seed, batch_size = st.scale, st.head, st.split_test, st.seed, st.batch_size
    max_length, device, text_col, label_col, allow_pickle = (st.max_length, st.device, st.text_col, st.label_col,
                                                             st.allow_pickle)
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
        refuse_untrained_head(model, base, adapter, st.allow_untrained_head)
        with scaled_adapter(model, scale, head=head):
            result = evaluate(model, tokenizer, test, trig, target_label, seed=seed, batch_size=batch_size,
                              max_length=max_length, progress=progress)
    for w in caught:  # loader warnings (fresh head, DoRA scaling) belong in the report
        if issubclass(w.category, SpectraWarning):
            result.warnings.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    result.meta = _meta(trig, target_label, st, dev, base, adapter, labelled, test)
    return result


def refuse_untrained_head(model: Any, base: Any, adapter: Any, allowed: bool) -> None:
    """A :class:`SpectraError` when ``model``'s classification head is freshly initialised (the
    checkpoint has none and no adapter brings one) and ``allowed`` is False: its CA and ASR are
    those of a random head, and an exit 0 with them would read as a measurement."""
    if getattr(model, "spectra_fresh_head", False) and not allowed:
        brings = " and the adapter brings none" if adapter is not None else ""
        raise SpectraError(f"{base}: the checkpoint has no trained sequence-classification head{brings}, so its "
                           "predictions would come from a random head; evaluate a fine-tuned classifier (or pass "
                           "--allow-untrained-head to see those numbers anyway)")


def evaluate_models(
    base: str | os.PathLike[str],
    adapters: dict[str, str | os.PathLike[str] | None],
    test: LabelledData,
    trigger: str | Trigger,
    target_label: int = 0,
    settings: EvalSettings | None = None,
) -> dict[str, EvalResult]:
    """:func:`run_eval` of the base (an entry ``None``) and of several adapters on ``test``, with the base
    model loaded once: PEFT holds every adapter at once (``load_adapter``), ``set_adapter`` picks one, and
    ``disable_adapter()`` gives the base itself (a ``modules_to_save`` head included). Each result holds the
    numbers and ``meta`` its own :func:`run_eval` gives (``tests/test_eval_models.py`` checks that); the
    warnings of the one load (a fresh head, DoRA scaling) are attached to every row. Unlike
    :func:`run_eval`, a fresh head is not refused here: ``spectra fix`` evaluates the base it trained
    from beside its adapters, and that base may have no head of its own (its row carries the note).
    """
    import torch

    from spectra.device import resolve_device
    from spectra.errors import SpectraWarning
    from spectra.io.model import load_classifier

    st = settings or EvalSettings()
    if st.scale != 1.0 or st.split_test is not None:
        raise SpectraError("evaluate_models evaluates each model as trained on all of `test` (scale 1, no split)")
    trig = parse_trigger(trigger) if isinstance(trigger, str) else trigger
    _check_labels(None, test, target_label)
    dev = resolve_device(st.device)
    named = [(name, path) for name, path in adapters.items() if path is not None]
    torch.manual_seed(st.seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SpectraWarning)
        model, tokenizer = load_classifier(base, named[0][1] if named else None, num_labels=test.num_classes,
                                           device=dev, allow_pickle=st.allow_pickle)
        loaded = {named[0][0]: "default"} if named else {}
        for name, path in named[1:]:
            loaded[name] = f"a{len(loaded)}"
            try:
                model.load_adapter(str(path), adapter_name=loaded[name], is_trainable=False)
            except (RuntimeError, ValueError, KeyError, OSError, TypeError) as exc:
                raise SpectraError(f"{path}: the adapter does not fit the base model ({exc})") from None
        model.to(dev)
        model.eval()
    notes = [str(w.message) for w in caught if issubclass(w.category, SpectraWarning)]
    results: dict[str, EvalResult] = {}
    for name, path in adapters.items():
        if path is None:
            ctx = model.disable_adapter() if named else contextlib.nullcontext()
        else:
            model.set_adapter(loaded[name])
            ctx = contextlib.nullcontext()
        with ctx:
            result = evaluate(model, tokenizer, test, trig, target_label, seed=st.seed, batch_size=st.batch_size,
                              max_length=st.max_length, progress=False)
        result.warnings += notes
        result.meta = _meta(trig, target_label, st, dev, base, path, test, test)
        results[name] = result
    return results


def _meta(trig: Trigger, target_label: int, st: EvalSettings, dev: Any, base: Any, adapter: Any,
          labelled: LabelledData, test: LabelledData) -> dict[str, Any]:
    """What produced an evaluation: the settings, the inputs (paths and content hashes), library versions."""
    from spectra.provenance import library_versions

    scale = float(st.scale)
    return {
        "scale": scale,
        "settings": {"trigger": trig.spec, "target_label": target_label, "scale": scale, "head": st.head,
                     "seed": st.seed, "batch_size": st.batch_size, "max_length": st.max_length, "device": str(dev),
                     "split_test": st.split_test, "text_col": st.text_col, "label_col": st.label_col,
                     "allow_pickle": st.allow_pickle, "allow_untrained_head": st.allow_untrained_head},
        "inputs": {"base": _described(base), "adapter": _described(adapter) if adapter is not None else None,
                   "data": labelled.to_dict(), "evaluated": {"rows": len(test), "counts": test.counts(),
                                                             "summary": test.summary()}},
        "versions": library_versions(),
    }


def _described(path: Any) -> dict[str, Any]:
    """:func:`spectra.provenance.describe_path`, plus the ``sha256`` map eval.json carried
    before 0.2 (raw hex per file; kept for one release, see CHANGELOG)."""
    from spectra.provenance import describe_path

    d = describe_path(path)
    if "files" in d:
        d["sha256"] = {name: h.split(":", 1)[1] for name, h in d["files"].items() if h.startswith("sha256:")}
    return d
