"""Pieces every command shares: option aliases, the error boundary, progress (output: ``output.Output``).

Nothing here imports torch; library modules are imported inside command bodies so that
``spectra --help`` starts in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

import spectra.settings as shared

F = TypeVar("F", bound=Callable[..., Any])


def _shared(setting: Any) -> Any:
    """A shared setting of :mod:`spectra.settings` (its flag and help) as a typer option: for the
    commands that declare it by hand rather than through a settings object."""
    spec = setting.metadata["cli"]
    return typer.Option(*spec.flags, help=spec.help, min=spec.min)


# Reused Annotated aliases keep option names identical across commands.
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder (written atomically).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")]
DeviceOpt = Annotated[str, _shared(shared.device_setting())]
RUN_PANEL = "Run"  # the --help panel of the options about running (resuming, work folder, cache)
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint (in --work-dir).", rich_help_panel=RUN_PANEL)]
WorkDirOpt = Annotated[Path | None, typer.Option("--work-dir", help="Where checkpoints live until OUT is complete (default: OUT.partial).", rich_help_panel=RUN_PANEL)]
DataOpt = Annotated[str, typer.Option("--data", help="CSV/TSV/JSONL/Parquet file, a datasets folder, or a built-in name: mr, cr, rt.")]
TextColOpt = Annotated[str | None, _shared(shared.text_col_setting())]
LabelColOpt = Annotated[str | None, _shared(shared.label_col_setting())]
TriggerOpt = Annotated[str, typer.Option("--trigger", help='Trigger spec: badnet:WORD or insent:"SENTENCE".')]
TargetLabelOpt = Annotated[int, _shared(shared.target_label_setting())]
SeedOpt = Annotated[int, _shared(shared.seed_setting())]
HubOpt = Annotated[bool, typer.Option("--hub", help="Look up BASE / ADAPTER arguments written owner/name on the Hugging Face hub when no such local folder exists (without it, only hf://owner/name is a hub id).")]
RevisionOpt = Annotated[str | None, typer.Option("--revision", help="Hub revision (branch, tag or commit) of a hub-id BASE; the resolved commit is recorded.")]


@contextlib.contextmanager
def progress(label: str, con: Any) -> Iterator[Callable[[int, int | None], None]]:
    """A ``(done, total)`` callback showing ``label``'s progress with an ETA: a rich bar on a
    terminal, plain lines (:class:`spectra.progress.EtaLog`) in a log or a pipe, where a bar
    would show nothing at all."""
    if not con.is_terminal:
        from spectra.progress import EtaLog

        yield EtaLog(label, lambda line: con.print(line, markup=False, highlight=False))
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    with Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=con, transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


#: exit codes, as scanners use them (ruff, mypy, trivy, grype): 0 audited and the policy holds,
#: 1 audited and a policy was broken (findings), 2 the tool could not do its job (bad input,
#: usage error — click's own code — or an internal error), 3 nothing was audited
EXIT_OK, EXIT_FINDINGS, EXIT_ERROR, EXIT_NOTHING = 0, 1, 2, 3


def hub_refs(paths: list[str], hub: bool) -> list[str]:
    """``--hub`` applied: bare ``owner/name`` paths that are not local become ``hf://owner/name``."""
    from spectra.io.hub import as_hub_reference

    return [as_hub_reference(str(p), hub) for p in paths]


def debug_traceback() -> None:
    """With ``SPECTRA_DEBUG=1``, the traceback of the exception being handled (on stderr),
    before its one line: bad input too, so a user can see where a refusal came from."""
    import os
    import traceback

    if os.environ.get("SPECTRA_DEBUG"):
        traceback.print_exc()


#: set by the error boundary while a command that was given --json runs: its errors also reach
#: stdout as the one JSON document a pipeline parses, instead of an empty stdout
_JSON_ERRORS: contextvars.ContextVar[bool] = contextvars.ContextVar("spectra_json_errors", default=False)


def fail(message: str, code: int = EXIT_ERROR) -> None:
    """Print one line (and, under ``--json``, ``{"error": …, "exit_code": …}`` on stdout) and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    if _JSON_ERRORS.get():
        from spectra.provenance import strict_json

        typer.echo(strict_json({"error": message, "exit_code": code}, indent=None))
    raise typer.Exit(code)


def error_boundary(func: F) -> F:
    """Known bad input → one line and exit 2; nothing to audit → exit 3; any other exception
    (a bug in spectra) → one line and exit 2 too, with the traceback only when
    ``SPECTRA_DEBUG=1`` — a pipeline reads 2 as "the scanner could not run", never a pass."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import warnings

        from spectra.errors import NothingToAudit, SpectraError, SpectraNotice, SpectraWarning, one_line

        token = _JSON_ERRORS.set(bool(kwargs.get("json_out")))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default", SpectraWarning)
                shown = warnings.showwarning

                def show(message: Any, category: Any, *rest: Any, **kw: Any) -> None:
                    if issubclass(category, SpectraWarning):  # one line, like the errors
                        kind = "note" if issubclass(category, SpectraNotice) else "warning"
                        typer.echo(f"{kind}: {one_line(message)}", err=True)
                    else:
                        shown(message, category, *rest, **kw)

                warnings.showwarning = show
                return func(*args, **kwargs)
        except typer.Exit:
            raise
        except NothingToAudit as exc:
            debug_traceback()
            fail(one_line(exc) or type(exc).__name__, EXIT_NOTHING)
        except SpectraError as exc:
            debug_traceback()
            fail(one_line(exc) or type(exc).__name__)
        except FileNotFoundError as exc:
            debug_traceback()
            fail(f"{exc.filename}: no such file or folder")
        except OSError as exc:  # unreadable input, read-only or full output: the machine's state, not a bug
            if exc.errno is None:  # an OSError without an errno is not about a file
                internal_error(exc)
            debug_traceback()
            where = f"{exc.filename}: " if exc.filename else ""
            fail(f"{where}{exc.strerror or one_line(exc) or type(exc).__name__}")
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except Exception as exc:  # noqa: BLE001 - the boundary: every bug becomes one line and exit 2
            internal_error(exc)
        finally:
            _JSON_ERRORS.reset(token)

    return wrapper  # type: ignore[return-value]


def internal_error(exc: BaseException) -> None:
    """A bug in spectra: re-raised with ``SPECTRA_DEBUG=1``, else one line and exit 2."""
    import os

    from spectra.errors import one_line

    if os.environ.get("SPECTRA_DEBUG"):
        raise exc
    fail(f"internal error ({type(exc).__name__}: {one_line(exc)}); this is a bug in spectra — rerun with "
         "SPECTRA_DEBUG=1 for the traceback and report it")

