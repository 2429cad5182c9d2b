"""The ``spectra`` command: one thin module per sub-command, registered here.

Each sub-command module imports only typer at import time; it parses options, makes one
library call, and writes the outputs.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys

import typer

from spectra_cli.help_format import SpectraCommand

app = typer.Typer(
    name="spectra",
    help="Spectral audit, backdoor-override estimates and RoRA repair for LoRA adapters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)



def _version(value: bool) -> None:
    if value:
        from spectra._version import __version__

        typer.echo(f"spectra {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Spectral audit, backdoor-override estimates and RoRA repair for LoRA adapters.

    Start with `spectra demo` (the whole story on a real small model, on CPU), then
    `spectra audit BASE ADAPTER -o OUT` on your own adapters.
    """


# (module, function) per command, in the order --help lists them.
COMMANDS = {
    "audit": ("spectra_cli.cmd_audit", "audit_command"),
    "threshold": ("spectra_cli.cmd_threshold", "threshold_command"),
    "fix": ("spectra_cli.cmd_fix", "fix_command"),
    "eval": ("spectra_cli.cmd_eval", "eval_command"),
    "poison": ("spectra_cli.cmd_poison", "poison_command"),
    "demo": ("spectra_cli.cmd_demo", "demo_command"),
    "canary": ("spectra_cli.cmd_canary", "canary_command"),
    "scan": ("spectra_cli.cmd_scan", "scan_command"),
}


def reflowed_help(doc: str | None) -> str | None:
    """A command's docstring as its ``--help`` text: each prose paragraph joined into one line,
    paragraphs with indented lines (the examples) kept as written.

    Typer's rich markup mode keeps a docstring's line breaks after the first paragraph, and a
    terminal narrower than the source lines then breaks each of them again ("… until the" /
    "model is written"); one line per paragraph lets the terminal do the only wrapping.
    """
    if doc is None:
        return None
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(p if any(line.startswith((" ", "\b")) for line in p.splitlines())
                       else " ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


for _name, (_module, _func) in COMMANDS.items():
    # every listed command must import: a missing module is a packaging bug, not an option
    _callback = getattr(importlib.import_module(_module), _func)
    app.command(_name, help=reflowed_help(_callback.__doc__), cls=SpectraCommand)(_callback)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script; ``argv`` makes it testable without a subprocess
    (and then the interpreter is left running, see :func:`_exit_without_teardown`)."""
    if argv is not None:
        app(args=argv, prog_name="spectra")
        return
    _terminate_cleanly()
    try:
        app(prog_name="spectra")
        code: int = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:  # sys.exit("message"): print it like the interpreter would
            print(exc.code, file=sys.stderr)
            code = 1
    _exit_without_teardown(code)


def _terminate_cleanly() -> None:
    """Turn SIGTERM (``timeout``, a CI runner cancelling a job, ``kill``) into ``SystemExit(143)``
    so that every ``finally`` and ``except BaseException`` runs: atomic outputs remove their
    temporary folders, caches their temporary files. Python's default is to die on the spot,
    which left hidden ``.NAME.tmp-*`` folders in 5 of 16 tries during the write phase."""
    import signal

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def _exit_without_teardown(code: int) -> None:
    """Run the atexit handlers, flush, and end the process without the interpreter's teardown.

    After torch is imported, tearing the interpreter down (module dicts, the OpenMP pool)
    takes ~0.5 s — a tenth of a whole ``spectra audit`` of SmolLM2-135M. Every output file
    is closed by then (the commands write through context managers and atomic renames) and
    atexit handlers still run, so nothing is lost. ``SPECTRA_DEBUG=1`` keeps the normal exit.
    """
    if os.environ.get("SPECTRA_DEBUG"):
        sys.exit(code)
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing left to deliver
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
