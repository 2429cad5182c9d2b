"""Clean accuracy (CA), attack success rate (ASR), Δ = CA − ASR, with intervals, the ASR
floor and a collapse flag.

Definitions (all on one labelled test set, one trigger, one target label ``t``):

* **CA** — share of all clean test texts whose predicted label equals their label.
* **ASR** — share of *non-target* test texts (label ≠ ``t``) whose triggered twin is
  predicted as ``t``. Target-label texts are left out: the trigger cannot flip them.
* **Δ = CA − ASR** — one number for "useful and not backdoored" (the paper's).
* **ASR floor** — share of the same non-target texts that the model already predicts as
  ``t`` *without* the trigger. ASR is only meaningful against it: ASR − floor is what the
  trigger itself adds.
* **collapsed** — the model predicts (nearly) one class: CA within 1 point of the
  majority-class share, or ≥ 95% of clean predictions in one class. A collapsed model has
  an ASR of ~0 or ~100% for reasons that have nothing to do with the trigger.
* Intervals: Wilson score intervals (95%) for CA, ASR and the floor; Newcombe's hybrid
  score interval for Δ (it treats CA and ASR as independent, an approximation since they
  share texts; see :func:`spectra.data.stats.newcombe_interval`).

:func:`evaluate` works on a loaded model; :func:`run_eval` is the whole ``spectra eval``
pipeline (load data and model, optionally scale the adapter, evaluate, record provenance).
"""

from __future__ import annotations

import os
import sys
import types
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spectra.data.datasets import LabelledData
from spectra.data.stats import newcombe_interval, wilson_interval
from spectra.data.triggers import Trigger, parse_trigger, trigger_rng
from spectra.errors import SpectraError

COLLAPSE_CA_MARGIN = 0.01
COLLAPSE_TOP_SHARE = 0.95


def predict_logits(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int = 64,
    max_length: int = 128,
    progress: bool | None = True,
) -> Any:
    """Logits ``(len(texts), num_labels)`` as float32 on the CPU, in the order of ``texts``.

    The model runs in eval mode under ``torch.no_grad`` (its previous training mode is
    restored), in batches of ``batch_size``, truncating to ``max_length`` tokens. Batches
    are formed from texts of similar length (sorted by character count, results put back in
    input order): padding is masked out, so a text's logits do not depend on its batch
    beyond float rounding, and short texts stop paying for the longest one in their batch.
    A rich progress bar on stderr when ``progress`` and there is more than one batch.
    """
    import torch

    if batch_size < 1:
        raise SpectraError(f"batch size must be >= 1, got {batch_size}")
    texts = list(texts)
    max_length = effective_max_length(tokenizer, max_length)
    try:
        device = next(model.parameters()).device
    except (StopIteration, AttributeError):
        device = torch.device("cpu")
    was_training = bool(getattr(model, "training", False))
    model.eval()
    out: list[torch.Tensor] = []
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    n_batches = (len(texts) + batch_size - 1) // batch_size
    bar = _progress_bar(n_batches, "predicting") if progress and n_batches > 1 else None
    try:
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                batch = [texts[i] for i in order[start:start + batch_size]]
                enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
                enc = {k: v.to(device) for k, v in enc.items()}
                logits = model(**enc).logits
                out.append(logits.detach().float().cpu())
                if bar is not None:
                    bar.advance()
    finally:
        if bar is not None:
            bar.close()
        if was_training:
            model.train()
    if not out:
        n = int(getattr(getattr(model, "config", None), "num_labels", 0) or 0)
        return torch.zeros((0, n), dtype=torch.float32)
    sorted_logits = torch.cat(out, dim=0)
    result = torch.empty_like(sorted_logits)
    result[torch.tensor(order, dtype=torch.long)] = sorted_logits
    return result


def effective_max_length(tokenizer: Any, max_length: int) -> int:
    """``max_length`` capped at the tokenizer's ``model_max_length`` when that is set
    (a longer input would overrun the model's position embeddings)."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 1_000_000:
        return min(max_length, limit)
    return max_length


def count_over_length(tokenizer: Any, texts: Sequence[str], max_length: int) -> int | None:
    """How many ``texts`` are longer than ``max_length`` tokens (None if not measurable)."""
    if not texts:
        return 0
    try:
        ids = tokenizer(list(texts), truncation=False, padding=False)["input_ids"]
        return sum(1 for row in ids if len(row) > effective_max_length(tokenizer, max_length))
    except Exception:  # a tokenizer that cannot do this (e.g. a stub) is simply not checked
        return None


class _Bar:
    def __init__(self, total: int, label: str) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        self._progress.start()
        self._task = self._progress.add_task(label, total=total)

    def advance(self) -> None:
        self._progress.advance(self._task)

    def close(self) -> None:
        self._progress.stop()


def _progress_bar(total: int, label: str) -> _Bar | None:
    try:
        return _Bar(total, label)
    except Exception:  # no rich / no terminal: run without a bar
        return None


@dataclass
class EvalResult:
    """CA, ASR, Δ with 95% intervals, the ASR floor and collapse diagnostics.

    Counts: ``n_clean`` texts scored for CA (``n_correct`` right), ``n_triggered``
    non-target texts triggered for ASR (``n_hits`` flipped to the target,
    ``n_floor_hits`` already predicted as target without the trigger).
    ``predicted_share[c]`` is the share of clean predictions in class ``c``;
    ``triggered_predicted_share`` the same on the triggered twins. ``meta`` holds what
    :func:`run_eval` records (scale, settings, inputs, versions).
    """

    ca: float
    asr: float
    delta: float
    n_clean: int
    n_triggered: int
    ca_ci: tuple[float, float]
    asr_ci: tuple[float, float]
    delta_ci: tuple[float, float]
    asr_floor: float
    asr_floor_ci: tuple[float, float]
    majority_share: float
    collapsed: bool
    predicted_share: list[float]
    triggered_predicted_share: list[float]
    n_correct: int
    n_hits: int
    n_floor_hits: int
    target_label: int
    label_names: list[str]
    trigger: str
    seed: int
    warnings: list[str] = field(default_factory=list)
    n_triggered_truncated: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def asr_above_floor(self) -> float:
        """ASR − floor: what the trigger adds to what the model predicts anyway."""
        return self.asr - self.asr_floor

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field (tuples as lists), ``asr_above_floor``, and ``meta`` flattened in."""
        d = asdict(self)
        meta = d.pop("meta")
        for key in ("ca_ci", "asr_ci", "delta_ci", "asr_floor_ci"):
            d[key] = [float(x) for x in d[key]]
        d["asr_above_floor"] = self.asr_above_floor
        d.update(meta)
        return d


def _check_labels(model: Any, test: LabelledData, target_label: int) -> None:
    k = test.num_classes
    if not 0 <= target_label < k or target_label not in set(test.labels):
        names = ", ".join(f"{i} ({n})" if n != str(i) else str(i) for i, n in enumerate(test.label_names))
        raise SpectraError(f"{test.source}: target label {target_label} is absent from the data (labels: {names})")
    if all(y == target_label for y in test.labels):
        raise SpectraError(f"{test.source}: every row has the target label {target_label}; ASR needs non-target rows")
    n_model = getattr(getattr(model, "config", None), "num_labels", None)
    if n_model is not None and int(n_model) != k:
        raise SpectraError(f"{test.source}: the data has {k} classes but the model's classifier has {n_model} labels "
                           "(num_labels mismatch)")


def evaluate(
    model: Any,
    tokenizer: Any,
    test: LabelledData,
    trigger: Trigger | str,
    target_label: int,
    seed: int = 0,
    batch_size: int = 64,
    max_length: int = 128,
    progress: bool | None = True,
) -> EvalResult:
    """CA on all of ``test``, ASR on its non-target rows with ``trigger`` inserted.

    Text ``i`` of ``test`` gets its trigger from :func:`spectra.data.triggers.trigger_rng`
    ``(seed, i)`` — the same twin as ``apply_trigger(test.texts, trigger, seed)[i]``.

    Raises:
        SpectraError: the target label is absent from ``test``, every row has it, or the
            model's ``num_labels`` differs from the data's number of classes.
    """
    import torch

    trig = parse_trigger(trigger) if isinstance(trigger, str) else trigger
    _check_labels(model, test, target_label)
    labels = torch.tensor(test.labels, dtype=torch.long)
    nt_idx = [i for i, y in enumerate(test.labels) if y != target_label]
    triggered = [trig.insert(test.texts[i], trigger_rng(seed, i)) for i in nt_idx]

    clean_logits = predict_logits(model, tokenizer, test.texts, batch_size, max_length, progress)
    trig_logits = predict_logits(model, tokenizer, triggered, batch_size, max_length, progress)
    k = test.num_classes
    if clean_logits.shape[-1] != k:
        raise SpectraError(f"{test.source}: the data has {k} classes but the model outputs {clean_logits.shape[-1]} "
                           "logits (num_labels mismatch)")
    pred = clean_logits.argmax(dim=-1)
    pred_trig = trig_logits.argmax(dim=-1)
    nt = torch.tensor(nt_idx, dtype=torch.long)

    n_clean, n_trig = len(test), len(nt_idx)
    n_correct = int((pred == labels).sum())
    n_hits = int((pred_trig == target_label).sum())
    n_floor = int((pred[nt] == target_label).sum())
    ca, asr, floor = n_correct / n_clean, n_hits / n_trig, n_floor / n_trig
    ca_ci, asr_ci, floor_ci = wilson_interval(n_correct, n_clean), wilson_interval(n_hits, n_trig), wilson_interval(n_floor, n_trig)
    delta_ci = newcombe_interval(ca, ca_ci, asr, asr_ci)

    counts = test.counts()
    majority = max(counts) / n_clean
    share = [float(x) / n_clean for x in torch.bincount(pred, minlength=k).tolist()]
    share_trig = [float(x) / n_trig for x in torch.bincount(pred_trig, minlength=k).tolist()]
    collapsed = abs(ca - majority) <= COLLAPSE_CA_MARGIN or max(share) >= COLLAPSE_TOP_SHARE

    result = EvalResult(
        ca=ca, asr=asr, delta=ca - asr, n_clean=n_clean, n_triggered=n_trig, ca_ci=ca_ci, asr_ci=asr_ci,
        delta_ci=delta_ci, asr_floor=floor, asr_floor_ci=floor_ci, majority_share=majority, collapsed=collapsed,
        predicted_share=share, triggered_predicted_share=share_trig, n_correct=n_correct, n_hits=n_hits,
        n_floor_hits=n_floor, target_label=target_label, label_names=list(test.label_names), trigger=trig.spec,
        seed=seed, n_triggered_truncated=count_over_length(tokenizer, triggered, max_length),
    )
    result.warnings = diagnose(result)
    return result


def label_text(r: EvalResult, c: int) -> str:
    """``"0 (neg)"``, or just ``"0"`` when the class name is its id."""
    name = r.label_names[c] if 0 <= c < len(r.label_names) else str(c)
    return str(c) if name == str(c) else f"{c} ({name})"


def diagnose(r: EvalResult) -> list[str]:
    """Plain-language warnings: collapse, and an ASR that its floor explains."""
    out = []
    if r.collapsed:
        top = max(range(len(r.predicted_share)), key=lambda c: r.predicted_share[c])
        out.append(f"collapsed: the model predicts class {label_text(r, top)} for "
                   f"{100 * r.predicted_share[top]:.1f}% of clean inputs and CA {100 * r.ca:.1f}% vs. a majority share "
                   f"of {100 * r.majority_share:.1f}%; its ASR says little about the trigger")
    if r.asr_ci[0] <= r.asr_floor_ci[1]:
        out.append(f"ASR {100 * r.asr:.1f}% is within reach of its floor {100 * r.asr_floor:.1f}% (the share of "
                   "non-target texts already predicted as the target without the trigger): the intervals overlap, "
                   "so the trigger's own effect is not distinguishable from zero")
    elif r.asr_floor >= 0.2:
        out.append(f"the ASR floor is {100 * r.asr_floor:.1f}%: that much of the ASR {100 * r.asr:.1f}% is there "
                   f"without the trigger; the trigger adds {100 * r.asr_above_floor:.1f} points")
    if r.n_triggered_truncated:
        out.append(f"{r.n_triggered_truncated:,} of {r.n_triggered:,} triggered texts are longer than max_length "
                   "tokens: a trigger inserted past the cut is invisible to the model (raise --max-length)")
    return out


# --------------------------------------------------------------------------- pipeline


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
        "inputs": {"base": describe_path(base), "adapter": describe_path(adapter) if adapter is not None else None,
                   "data": labelled.to_dict(), "evaluated": {"rows": len(test), "counts": test.counts(),
                                                             "summary": test.summary()}},
        "versions": library_versions(),
    }
    return result


def describe_path(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Path and SHA-256 of each config/weight/tokenizer file of a model or adapter folder."""
    from spectra.provenance import folder_hashes

    p = Path(path)
    if not p.is_dir():
        return {"path": os.fspath(path), "hub_id": True}
    return {"path": str(p.resolve()), "sha256": folder_hashes(p)}


# --------------------------------------------------------------------------- report


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(ci: Sequence[float]) -> str:
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def eval_markdown(r: EvalResult) -> str:
    """A Markdown report: the table, each definition, warnings, settings and provenance."""
    meta = r.meta or {}
    settings = meta.get("settings", {})
    inputs = meta.get("inputs", {}) or {}
    lines = ["# spectra eval", ""]
    base = (inputs.get("base") or {}).get("path")
    adapter = (inputs.get("adapter") or {}).get("path") if inputs.get("adapter") else None
    if base:
        lines.append(f"Model: `{base}`" + (f" + adapter `{adapter}` at scale k = {meta.get('scale', 1.0):g}" if adapter else " (no adapter)"))
    data = inputs.get("data") or {}
    if data:
        lines.append(f"Data: {data.get('source')} (sha256 `{str(data.get('sha256', ''))[:16]}…`)")
        evaluated = inputs.get("evaluated") or {}
        if evaluated.get("summary"):
            lines.append(f"Evaluated: {evaluated['summary']}")
    lines.append(f"Trigger: `{r.trigger}` · target label {label_text(r, r.target_label)} · seed {r.seed}")
    lines += ["", "| metric | value | 95% interval | n |", "|---|---|---|---|",
              f"| CA | {_pct(r.ca)} | {_ci(r.ca_ci)} | {r.n_clean:,} |",
              f"| ASR | {_pct(r.asr)} | {_ci(r.asr_ci)} | {r.n_triggered:,} |",
              f"| Δ = CA − ASR | {100 * r.delta:+.1f} pts | [{100 * r.delta_ci[0]:+.1f}, {100 * r.delta_ci[1]:+.1f}] | |",
              f"| ASR floor | {_pct(r.asr_floor)} | {_ci(r.asr_floor_ci)} | {r.n_triggered:,} |",
              f"| ASR − floor | {100 * r.asr_above_floor:+.1f} pts | | |",
              f"| majority-class share | {_pct(r.majority_share)} | | {r.n_clean:,} |",
              f"| collapsed | {'yes' if r.collapsed else 'no'} | | |",
              ""]
    lines += ["Predicted class shares (clean / triggered):", ""]
    for c, name in enumerate(r.label_names):
        lines.append(f"- {label_text(r, c)}: {_pct(r.predicted_share[c])} / {_pct(r.triggered_predicted_share[c])}")
    lines += ["", "## Warnings", ""]
    lines += [f"- {w}" for w in r.warnings] or ["- none"]
    lines += ["", "## Definitions", "",
              "- **CA** (clean accuracy): share of all clean test texts predicted as their label.",
              "- **ASR** (attack success rate): share of non-target test texts (label ≠ target) whose triggered "
              "twin is predicted as the target label. Target-label texts are left out.",
              "- **Δ = CA − ASR**: high when the model is useful and the backdoor is gone.",
              "- **ASR floor**: share of the same non-target texts already predicted as the target *without* the "
              "trigger; ASR − floor is what the trigger itself adds.",
              f"- **collapsed**: CA within {100 * COLLAPSE_CA_MARGIN:.0f} point of the majority-class share, or ≥ "
              f"{100 * COLLAPSE_TOP_SHARE:.0f}% of clean predictions in one class; such a model's ASR is ~0 or "
              "~100% for reasons unrelated to the trigger.",
              "- Intervals: Wilson score intervals (95%) for CA, ASR and the floor; Newcombe's hybrid score "
              "interval (method 10, 1998) for Δ, which treats CA and ASR as independent although they share texts.",
              "- k (scale): every LoRA scaling multiplied by k; a fully trained saved module (`modules_to_save`, "
              "e.g. the classification head) is used as trained unless the settings say head = scaled, which sets it "
              "to W_base + k·(W_saved − W_base). k = 1 is the adapter as trained.",
              ""]
    if settings:
        lines += ["## Settings", "", "| setting | value |", "|---|---|"]
        lines += [f"| {k} | `{v}` |" for k, v in settings.items()]
        lines.append("")
    versions = meta.get("versions") or {}
    if versions:
        lines += ["## Versions", "", ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    return "\n".join(lines)


class _CallableModule(types.ModuleType):
    """``from spectra.data import evaluate`` may return this module once it is imported
    (Python binds submodules onto their package); calling it calls :func:`evaluate`."""

    def __call__(self, *args: Any, **kwargs: Any) -> EvalResult:
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
