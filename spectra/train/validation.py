"""Per-epoch validation during fine-tuning: the training curve and the learning-rate choice.

The paper (Luong & Chen 2026, Appendix A.1) picks the fine-tuning learning rate from
{2e-5, 2e-4, 2e-3} "to ensure convergence" and trains 20 epochs. To make both checkable,
every epoch the trainer asks an :class:`EpochValidation` for

- ``val_ca`` and ``val_loss`` on a *clean* validation split of the downstream training
  data: the only numbers any choice (learning rate, convergence) is made from;
- ``val_asr_monitor`` (when a trigger is given): the share of the validation split's
  non-target rows that the trigger flips to the target. It is recorded to draw how the
  backdoor evolves during training and is never used to choose anything — a defender
  has no triggered data.

:func:`converged` is the study's convergence rule on that curve (no longer improving).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from spectra.settings import EVAL_BATCH_SIZE, MAX_LENGTH

#: the last epochs may raise the best validation CA by at most this (0.5 point)
CONVERGENCE_TOLERANCE = 0.005
#: how many final epochs the rule looks at
CONVERGENCE_WINDOW = 3


@dataclass
class EpochValidation:
    """Clean validation rows (and optionally a trigger to monitor ASR on their non-target rows).

    Attributes:
        data: a :class:`spectra.data.LabelledData` validation split (clean).
        tokenizer: the tokenizer of the model being trained.
        trigger: a trigger spec or :class:`spectra.data.Trigger`; ``None`` records no ASR.
        target_label: the backdoor's target label (for the monitored ASR).
        max_length, batch_size: inference settings.
        seed: seeds where the trigger is inserted in each row (as :func:`spectra.eval.metrics.evaluate`).
    """

    data: Any
    tokenizer: Any
    trigger: Any = None
    target_label: int = 0
    max_length: int = MAX_LENGTH
    batch_size: int = EVAL_BATCH_SIZE
    seed: int = 0

    def __post_init__(self) -> None:
        from spectra.data.triggers import parse_trigger, trigger_rng

        self._triggered: list[str] = []
        if self.trigger is not None:
            trig = parse_trigger(self.trigger) if isinstance(self.trigger, str) else self.trigger
            self._triggered = [trig.insert(text, trigger_rng(self.seed, i))
                               for i, (text, y) in enumerate(zip(self.data.texts, self.data.labels))
                               if y != self.target_label]

    def __call__(self, model: Any) -> dict[str, float]:
        """``val_ca``, ``val_loss`` (and ``val_asr_monitor``) of ``model`` now; its mode is restored."""
        import torch
        import torch.nn.functional as F

        from spectra.eval.inference import predict_logits

        logits = predict_logits(model, self.tokenizer, self.data.texts, self.batch_size, self.max_length,
                                progress=False)
        labels = torch.tensor(self.data.labels, dtype=torch.long)
        out = {"val_ca": float((logits.argmax(-1) == labels).double().mean()),
               "val_loss": float(F.cross_entropy(logits, labels))}
        if self._triggered:
            trig_logits = predict_logits(model, self.tokenizer, self._triggered, self.batch_size, self.max_length,
                                         progress=False)
            out["val_asr_monitor"] = float((trig_logits.argmax(-1) == self.target_label).double().mean())
        return out


def converged(val_ca: Sequence[float], window: int = CONVERGENCE_WINDOW,
              tolerance: float = CONVERGENCE_TOLERANCE) -> bool:
    """Whether a run has stopped improving: its last ``window`` epochs raise the best
    validation CA of the epochs before them by at most ``tolerance`` (0.5 point).

    A run still climbing fails; a run that reached its level earlier and then moves within
    the noise of a few hundred validation rows (one row of 289 is 0.35 point) passes, and
    so does one that overfits slowly — :func:`final_drop` says how far the last epoch sits
    below the best. ``False`` for runs of ``window`` epochs or fewer.
    """
    values = [float(v) for v in val_ca]
    if len(values) <= window:
        return False
    return max(values[-window:]) <= max(values[:-window]) + tolerance + 1e-12


def final_drop(val_ca: Sequence[float]) -> float:
    """How far the final epoch's validation CA sits below the run's best (0 when it is the best)."""
    values = [float(v) for v in val_ca]
    return max(values) - values[-1] if values else float("nan")


def end_level(val_ca: Sequence[float], window: int = CONVERGENCE_WINDOW) -> float:
    """The level a run ends at: the mean validation CA of its last ``window`` epochs (one
    epoch's value moves by a row or two of noise; the final model is what is kept)."""
    values = [float(v) for v in val_ca][-window:]
    return sum(values) / len(values) if values else float("nan")


def pick_learning_rate(candidates: dict[float, Sequence[float]]) -> float:
    """The learning rate whose run ends at the best validation CA (:func:`end_level`; ties:
    the smaller rate). ``candidates`` maps each rate to its per-epoch validation CA."""
    usable = {lr: list(curve) for lr, curve in candidates.items() if len(curve)}
    if not usable:
        raise ValueError("no learning-rate run has a validation curve")
    return min(usable, key=lambda lr: (-round(end_level(usable[lr]), 12), lr))
