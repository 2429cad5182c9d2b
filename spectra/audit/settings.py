"""How the audit computes: one object, the home of each default the CLI's ``spectra audit`` shows.

Importing it imports neither torch nor the CLI (``spectra_cli`` builds its options from the fields).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from spectra.errors import SpectraError
from spectra.settings import allow_pickle_setting, device_setting, setting, top_k_setting

Dtype = Literal["float32", "float64"]


@dataclass
class AuditSettings:
    """The audit's settings (see :func:`spectra.audit.audit`); checked once, when built."""

    top_k: int = top_k_setting()
    top_j: int = setting(1, "--top-j", help="Also report max |cos| over ΔW's top-j vectors.", min=1)
    device: str = device_setting()
    dtype: Dtype = setting("float32", "--dtype", help="Compute dtype: float32 or float64.")
    exact: bool = setting(False, "--exact", help="Full SVD of every base weight (the reference path).")
    modules: list[str] | None = setting(None, "--modules", help="Regex on module names or exact module type; "
                                                                "repeatable.")
    memory_budget_mb: int = setting(
        256, "--memory-budget", min=16,
        help="MB of base weights in flight at once (CPU RAM, or GPU memory with --device cuda): same-shape weights "
             "are stacked up to this size; the peak is about twice it plus one weight. A dense SVD of a weight whose "
             "top-k cannot be certified (no spectral gap) is refused when its workspace exceeds it: exit 2, never an "
             "unbounded run.")
    allow_pickle: bool = allow_pickle_setting()

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise SpectraError(f"--top-k must be at least 1 (got {self.top_k})")
        if self.top_j < 1:
            raise SpectraError(f"--top-j must be at least 1 (got {self.top_j})")
        if self.dtype not in get_args(Dtype):
            raise SpectraError(f"--dtype {self.dtype}: choose float32 or float64")
        if self.memory_budget_mb < 1:
            raise SpectraError(f"--memory-budget must be at least 1 MB (got {self.memory_budget_mb})")
        if self.modules is not None:
            self.modules = list(self.modules)
