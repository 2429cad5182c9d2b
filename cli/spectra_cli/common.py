"""Pieces every command shares: option aliases, the error boundary, console output.

Nothing here imports torch; library modules are imported inside command bodies so that
``spectra --help`` starts in a fraction of a second.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

# Reused Annotated aliases keep option names identical across commands.
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder (written atomically).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda[:N].")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="Compute dtype: float32 or float64.")]
TopKOpt = Annotated[int, typer.Option("--top-k", help="Size of W_pre's top singular subspace.")]
AllowPickleOpt = Annotated[bool, typer.Option("--allow-pickle", help="Allow .bin/.pt weights (loaded with torch.load(weights_only=True)).")]
DataOpt = Annotated[str, typer.Option("--data", help="CSV/TSV/JSONL/Parquet file, a datasets folder, or a built-in name: mr, cr, rt.")]
TextColOpt = Annotated[str | None, typer.Option("--text-col", help="Text column (default: text/sentence/review, guessed).")]
LabelColOpt = Annotated[str | None, typer.Option("--label-col", help="Label column (default: label).")]
TriggerOpt = Annotated[str, typer.Option("--trigger", help='Trigger spec: badnet:WORD or insent:"SENTENCE".')]
TargetLabelOpt = Annotated[int, typer.Option("--target-label", help="The backdoor's target label.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (recorded in every output).")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Batch size.")]
MaxLengthOpt = Annotated[int, typer.Option("--max-length", min=8, help="Tokenizer truncation length.")]
HeadOpt = Annotated[str, typer.Option("--head", help="A trained classification head (modules_to_save) under a scale γ: "
                                      "trained (used as trained, the paper's sweep) or scaled (W_base + γ·(W_saved − W_base)).")]


def console() -> Any:
    """A rich console on stderr, so stdout stays clean for pipelines."""
    from rich.console import Console

    return Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    """Print one line and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def error_boundary(func: F) -> F:
    """Turn known bad-input errors into one line and exit code 1 (never a traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from spectra.errors import SpectraError

        try:
            return func(*args, **kwargs)
        except SpectraError as exc:
            fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except FileNotFoundError as exc:
            fail(f"{exc.filename}: no such file or folder")
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()
