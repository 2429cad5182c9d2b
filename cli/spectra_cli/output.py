"""One sink for what a command tells its user (huggingface_hub's ``cli/_output.py`` pattern).

Three modes, chosen by every command's ``--json`` / ``--quiet``:

- human (default): logs, tables and result lines on stderr through rich, so stdout stays clean;
- ``--json``: logs stay on stderr; stdout gets exactly one strict JSON document at the end (the
  command's results, the output folder and the exit code) for pipelines to parse;
- ``--quiet``: nothing but warnings and errors; the exit code and the output files say the rest
  (with ``--json`` too: then stdout still gets the document).

Errors never go through here: the error boundary (``common.error_boundary``) writes them in every mode.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document with the results on stdout (logs stay on stderr).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but warnings and errors: the exit code and the output files say the rest.")]


class Output:
    """A command's output in the mode its user asked for (module docstring)."""

    def __init__(self, *, json: bool = False, quiet: bool = False) -> None:
        from rich.console import Console

        # --json --quiet: the document on stdout and nothing on stderr but warnings and errors (a CI step's
        # natural pair; refusing it from here reached the user as "a bug in spectra")
        self.json_mode, self.quiet = json, quiet
        self.console = Console(stderr=True, quiet=quiet)  # also what progress bars draw on
        self.payload: dict[str, Any] = {}

    def log(self, message: str) -> None:
        """A progress or log line (stderr; silent under --quiet)."""
        self.console.print(message, markup=False, highlight=False)

    def line(self, text: str, *, markup: bool = True) -> None:
        """A human result line (not under --json, where the document says it)."""
        if not self.json_mode:
            self.console.print(text, markup=markup, highlight=False)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]],
              right: Sequence[str] = ()) -> None:
        """A human result table (not under --json)."""
        if self.json_mode:
            return
        from rich.table import Table

        table = Table(title=title)
        for col in columns:
            table.add_column(col, justify="right" if col in right else "left")
        for row in rows:
            table.add_row(*row)
        self.console.print(table)

    def result(self, **fields: Any) -> None:
        """Fields of the --json document (kept in every mode; printed only under --json)."""
        self.payload.update(fields)

    def finish(self, exit_code: int = 0) -> None:
        """Under --json, print the document (strict JSON: no NaN or Infinity) with ``exit_code``."""
        if self.json_mode:
            from spectra.provenance import strict_json

            sys.stdout.write(strict_json({**self.payload, "exit_code": exit_code}) + "\n")
            sys.stdout.flush()
