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

:func:`score` computes them from predictions (the threshold sweep scores each grid point
with it); :func:`evaluate` runs a loaded model on a test set and scores it; the whole
``spectra eval`` pipeline is :func:`spectra.eval.pipeline.run_eval`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spectra.data.labelled import LabelledData
from spectra.data.stats import newcombe_interval, wilson_interval
from spectra.data.triggers import Trigger, parse_trigger, trigger_rng
from spectra.errors import SpectraError
from spectra.settings import EVAL_BATCH_SIZE, MAX_LENGTH

COLLAPSE_CA_MARGIN = 0.01
COLLAPSE_TOP_SHARE = 0.95


@dataclass
class Scores:
    """CA, ASR, floor and collapse from predictions: the one place they are computed."""

    ca: float
    asr: float
    asr_floor: float
    majority_share: float
    collapsed: bool
    predicted_share: list[float]
    n_correct: int
    n_hits: int
    n_floor_hits: int
    n_clean: int
    n_triggered: int


def score(pred: Any, pred_trig: Any, labels: Any, non_target: Any, target_label: int, num_classes: int) -> Scores:
    """Score predictions (1-D integer tensors).

    Args:
        pred: clean predictions for every test row; ``labels`` their labels.
        pred_trig: predictions on the triggered twins of the non-target rows, in the order
            of ``non_target`` (their positions in ``pred``).
        target_label, num_classes: the backdoor's target and the number of classes.
    """
    import torch

    n_clean, n_trig = int(labels.numel()), int(non_target.numel())
    n_correct = int((pred == labels).sum())
    n_hits = int((pred_trig == target_label).sum())
    n_floor = int((pred[non_target] == target_label).sum())
    ca = n_correct / n_clean if n_clean else float("nan")
    counts = torch.bincount(labels, minlength=num_classes)
    majority = float(counts.max()) / n_clean if n_clean else float("nan")
    share = [float(x) / n_clean for x in torch.bincount(pred, minlength=num_classes).tolist()] if n_clean else []
    collapsed = bool(n_clean) and (abs(ca - majority) <= COLLAPSE_CA_MARGIN or max(share) >= COLLAPSE_TOP_SHARE)
    return Scores(ca=ca, asr=n_hits / n_trig if n_trig else float("nan"),
                  asr_floor=n_floor / n_trig if n_trig else float("nan"), majority_share=majority,
                  collapsed=collapsed, predicted_share=share, n_correct=n_correct, n_hits=n_hits,
                  n_floor_hits=n_floor, n_clean=n_clean, n_triggered=n_trig)


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

    #: the collapse rule's constants, carried by every result so reports need not import them
    COLLAPSE_CA_MARGIN = COLLAPSE_CA_MARGIN
    COLLAPSE_TOP_SHARE = COLLAPSE_TOP_SHARE

    def label_text(self, c: int) -> str:
        """``"0 (neg)"``, or just ``"0"`` when the class name is its id."""
        name = self.label_names[c] if 0 <= c < len(self.label_names) else str(c)
        return str(c) if name == str(c) else f"{c} ({name})"

    @property
    def asr_above_floor(self) -> float:
        """ASR − floor: what the trigger adds to what the model predicts anyway."""
        return self.asr - self.asr_floor

    def write(self, out: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write ``eval.json`` (strict JSON: ∞/NaN as null) and ``report.md`` atomically into ``out``."""
        from spectra.io.output import atomic_output_dir
        from spectra.provenance import strict_json
        from spectra.report.eval_markdown import eval_markdown

        with atomic_output_dir(out, overwrite=overwrite) as tmp:
            (tmp / "eval.json").write_text(strict_json(self.to_dict()) + "\n",
                                           encoding="utf-8")
            (tmp / "report.md").write_text(eval_markdown(self), encoding="utf-8")
        return Path(out)

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
    batch_size: int = EVAL_BATCH_SIZE,
    max_length: int = MAX_LENGTH,
    progress: bool | Callable[[int, int], None] | None = True,
) -> EvalResult:
    """CA on all of ``test``, ASR on its non-target rows with ``trigger`` inserted.

    Text ``i`` of ``test`` gets its trigger from :func:`spectra.data.triggers.trigger_rng`
    ``(seed, i)`` — the same twin as ``apply_trigger(test.texts, trigger, seed)[i]``.

    Raises:
        SpectraError: the target label is absent from ``test``, every row has it, or the
            model's ``num_labels`` differs from the data's number of classes.
    """
    import torch

    from spectra.eval.inference import count_over_length, predict_logits

    trig = parse_trigger(trigger) if isinstance(trigger, str) else trigger
    _check_labels(model, test, target_label)
    labels = torch.tensor(test.labels, dtype=torch.long)
    nt_idx = [i for i, y in enumerate(test.labels) if y != target_label]
    triggered = [trig.insert(test.texts[i], trigger_rng(seed, i)) for i in nt_idx]

    first, second = progress, progress
    if callable(progress):  # one count over both passes: clean texts, then their triggered twins
        n_clean = math.ceil(len(test.texts) / batch_size)
        n_all = n_clean + math.ceil(len(triggered) / batch_size)
        first = lambda done, _: progress(done, n_all)
        second = lambda done, _: progress(n_clean + done, n_all)
    clean_logits = predict_logits(model, tokenizer, test.texts, batch_size, max_length, first)
    trig_logits = predict_logits(model, tokenizer, triggered, batch_size, max_length, second)
    k = test.num_classes
    if clean_logits.shape[-1] != k:
        raise SpectraError(f"{test.source}: the data has {k} classes but the model outputs {clean_logits.shape[-1]} "
                           "logits (num_labels mismatch)")
    pred = clean_logits.argmax(dim=-1)
    pred_trig = trig_logits.argmax(dim=-1)
    s = score(pred, pred_trig, labels, torch.tensor(nt_idx, dtype=torch.long), target_label, k)
    ca_ci, asr_ci = wilson_interval(s.n_correct, s.n_clean), wilson_interval(s.n_hits, s.n_triggered)
    share_trig = [float(x) / s.n_triggered for x in torch.bincount(pred_trig, minlength=k).tolist()]
    result = EvalResult(
        ca=s.ca, asr=s.asr, delta=s.ca - s.asr, n_clean=s.n_clean, n_triggered=s.n_triggered, ca_ci=ca_ci,
        asr_ci=asr_ci, delta_ci=newcombe_interval(s.ca, ca_ci, s.asr, asr_ci), asr_floor=s.asr_floor,
        asr_floor_ci=wilson_interval(s.n_floor_hits, s.n_triggered), majority_share=s.majority_share,
        collapsed=s.collapsed, predicted_share=s.predicted_share, triggered_predicted_share=share_trig,
        n_correct=s.n_correct, n_hits=s.n_hits, n_floor_hits=s.n_floor_hits, target_label=target_label,
        label_names=list(test.label_names), trigger=trig.spec, seed=seed,
        n_triggered_truncated=count_over_length(tokenizer, triggered, max_length),
    )
    result.warnings = diagnose(result)
    return result


def label_text(r: EvalResult, c: int) -> str:
    """0.2's module-level form of :meth:`EvalResult.label_text`, kept for this release (goes in 0.4)."""
    return r.label_text(c)


def diagnose(r: EvalResult) -> list[str]:
    """Plain-language warnings: collapse, and an ASR that its floor explains."""
    out = []
    if r.collapsed:
        top = max(range(len(r.predicted_share)), key=lambda c: r.predicted_share[c])
        out.append(f"collapsed: the model predicts class {r.label_text(top)} for "
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
