"""How ``spectra threshold`` measures: one object, the home of each default its CLI options show.

Importing it imports neither torch nor the CLI (``spectra_cli`` builds its options from the fields).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from spectra.errors import SpectraError
from spectra.eval.settings import HEAD_HELP, Head, check_head
from spectra.settings import (
    batch_size_setting,
    device_setting,
    label_col_setting,
    max_length_setting,
    seed_setting,
    setting,
    text_col_setting,
)

#: γ's measured by default: 1 = the adapter as trained, 0 = no LoRA update (Figure 3's range and beyond)
DEFAULT_GRID = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


def parse_grid(spec: str | Sequence[float]) -> list[float]:
    """``"0,0.5,1,2"`` → sorted unique non-negative floats."""
    if isinstance(spec, str):
        try:
            values = [float(v) for v in spec.replace(" ", "").split(",") if v]
        except ValueError:
            raise SpectraError(f"--grid {spec!r}: expected comma-separated numbers, e.g. 0,0.5,1,2,4") from None
    else:
        values = [float(v) for v in spec]
    if not values:
        raise SpectraError("--grid is empty")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise SpectraError(f"--grid {spec!r}: multipliers must be finite and ≥ 0")
    return sorted(set(values))


def _grid_text(grid: Sequence[float]) -> str:
    return ",".join(f"{g:g}" for g in grid)


@dataclass
class ThresholdSettings:
    """The sweep's settings (see :func:`spectra.threshold.threshold`); checked once, when built."""

    grid: tuple[float, ...] = setting(
        DEFAULT_GRID, "--grid", help="Multipliers γ of every LoRA module's scale to measure (1 = as trained, 0 = no "
                                     "LoRA update).", cli_type=str, show=_grid_text,
        parse=lambda text: tuple(parse_grid(text)))
    head: Head = setting("trained", "--head", help=HEAD_HELP)
    module: str | None = setting(None, "--module", help="Module whose σ_pre, σ_Δ normalise the ρ's (name or regex; "
                                                        "default: the head if trained, else nearest the output).")
    batch_size: int = batch_size_setting()
    max_length: int = max_length_setting()
    seed: int = seed_setting()
    max_samples: int | None = setting(None, "--max-samples", min=1, help="Keep about N non-target samples "
                                                                          "(stratified subsample) for speed.")
    split_test: float | None = setting(None, "--split-test", help="Evaluate only on the test side of a stratified "
                                                                  "split of this fraction (same seed as poison/fix).")
    device: str = device_setting()
    text_col: str | None = text_col_setting()
    label_col: str | None = label_col_setting()
    #: rows of the cheap crossing search (:mod:`spectra.threshold.search`)
    search_rows: int = 64

    def __post_init__(self) -> None:
        self.grid = tuple(parse_grid(self.grid))
        check_head(self.head)
