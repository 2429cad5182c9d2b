"""``spectra demo``: the whole story on the real MiniLM model and real MR/CR data, on CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spectra_cli.common import OverwriteOpt, SeedOpt, console, error_boundary


@error_boundary
def demo_command(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default: spectra-demo, or the next free spectra-demo-N).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A ~5-minute version: smaller data, fewer epochs, dirty-label poisoning.")] = False,
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Poison MiniLM on MR (BadNet) → LoRA on CR → audit → threshold → RoRA fix → eval → one report.

    Examples:

      spectra demo            # full run, ~20-30 min on 2 CPU cores (the poisoned base is cached)

      spectra demo --quick    # ~5 min
    """
    from spectra.demo import run_demo

    con = console()
    run_demo(out, quick=quick, seed=seed, overwrite=overwrite, log=lambda msg: con.print(msg, highlight=False))
