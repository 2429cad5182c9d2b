"""How ``spectra scan`` audits a fleet: one object, the home of each default its CLI options show.

Importing it imports neither torch, Ray nor the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from spectra.errors import SpectraError
from spectra.settings import setting, top_k_setting

Engine = Literal["auto", "ray", "local"]


@dataclass
class ScanSettings:
    """The scan's settings (see :func:`spectra.fleet.scan.scan`); checked once, when built."""

    base: str | None = setting(None, "--base", help="The base for adapters whose manifest row names none (else each "
                                                    "adapter_config.json's base_model_name_or_path).")
    top_k: int = top_k_setting()
    engine: Engine = setting("auto", "--engine", help="auto (Ray from 20 adapters when installed), ray, or local.")
    workers: int | None = setting(None, "--workers", min=1, help="Ray workers per base (default: the CPUs Ray "
                                                                 "sees).")
    address: str | None = setting(None, "--address", help="An existing Ray cluster (auto, or ray://host:port); "
                                                          "default: an embedded one.")
    max_errors: int | None = setting(None, "--max-errors", min=0, help="Stop after more than N error rows (the rows "
                                                                       "so far are kept).")

    def __post_init__(self) -> None:
        if self.engine not in get_args(Engine):
            raise SpectraError(f"--engine {self.engine!r}: use auto, ray or local")
        if self.top_k < 1:
            raise SpectraError(f"--top-k must be at least 1 (got {self.top_k})")
