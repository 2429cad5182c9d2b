"""How ``spectra eval`` evaluates: one object, the home of each default its CLI options show.

Importing it imports neither torch nor the CLI (``spectra_cli`` builds its options from the fields).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from spectra.errors import SpectraError
from spectra.settings import (
    EVAL_BATCH_SIZE,
    allow_pickle_setting,
    batch_size_setting,
    device_setting,
    label_col_setting,
    max_length_setting,
    seed_setting,
    setting,
    text_col_setting,
)

#: a trained classification head (PEFT ``modules_to_save``) under a LoRA scale γ: used as trained
#: (the paper's Figure 3) or extrapolated with γ (:func:`spectra.eval.scaling.scaled_adapter`)
Head = Literal["trained", "scaled"]
HEAD_HELP = ("A trained classification head (modules_to_save) under a scale γ: trained (used as trained, the paper's "
             "sweep) or scaled (W_base + γ·(W_saved − W_base)).")


def check_head(head: str) -> None:
    """One line naming ``--head`` and its choices, for any value outside :data:`Head`."""
    if head not in get_args(Head):
        raise SpectraError(f"--head {head!r}: use trained (the head as trained) or scaled (interpolated with γ)")


@dataclass
class EvalSettings:
    """The evaluation's settings (see :func:`spectra.eval.pipeline.run_eval`); checked once, when built."""

    scale: float = setting(1.0, "--scale", help="Adapter strength γ: every LoRA scaling × γ (1 = as trained, 0 = no "
                                                "LoRA update); see --head.")
    head: Head = setting("trained", "--head", help=HEAD_HELP)
    split_test: float | None = setting(None, "--split-test", help="Evaluate only on the test side of a stratified "
                                                                  "split of this fraction (same seed as poison/fix).")
    batch_size: int = batch_size_setting(EVAL_BATCH_SIZE)
    max_length: int = max_length_setting()
    seed: int = seed_setting()
    device: str = device_setting()
    text_col: str | None = text_col_setting()
    label_col: str | None = label_col_setting()
    allow_pickle: bool = allow_pickle_setting()
    allow_untrained_head: bool = setting(False, "--allow-untrained-head",
                                         help="Evaluate a model without a trained classification head anyway (it "
                                              "gets a fresh, random head: its CA and ASR mean nothing).")

    def __post_init__(self) -> None:
        if not math.isfinite(float(self.scale)):
            raise SpectraError(f"--scale {self.scale!r}: the adapter scale must be a finite number")
        check_head(self.head)
