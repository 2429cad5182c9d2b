"""The exception and warning types the CLI turns into one line, and that one line.

:class:`SpectraError` is anything a user can fix (missing folder, corrupt safetensors,
shape mismatch, bad trigger spec, ...; exit code 2); :class:`NothingToAudit` is a readable
input with nothing to audit (exit code 3); :class:`SpectraWarning` is something a user should
know that does not stop the run (a fresh classification head, a DoRA scaling caveat).
:func:`one_line` is how any exception text becomes the single line the CLI prints.
"""

from __future__ import annotations


class SpectraError(Exception):
    """Bad input or an unusable file: the message names the file and the problem.

    Library code raises this for anything a user can fix. The CLI prints
    ``error: <msg>`` on one line and exits with an error code; any other exception is a
    bug in spectra.
    """


class NothingToAudit(SpectraError):
    """The input was readable but held nothing to audit: no adapted module matched ``--modules``,
    or the adapter has no module of a supported kind. Scanners report this apart from errors
    (exit code 3): the gate neither passed nor failed."""


class SpectraWarning(UserWarning):
    """Something the user should know about that does not stop the run."""


class SpectraNotice(SpectraWarning):
    """Not a problem, but something a gate's log must show (e.g. a model resolved on the hub);
    the CLI prints it as ``note: …``."""


def one_line(text: object) -> str:
    """The first non-empty line of ``text`` (an exception or any object), whitespace
    collapsed; an exception with no message gives its type's name."""
    for line in str(text).strip().splitlines():
        if line.strip():
            return " ".join(line.split())
    return type(text).__name__ if isinstance(text, BaseException) else ""


def pickle_refused(where: object, what: str) -> SpectraError:
    """The one message for pickle weights met without ``allow_pickle``: true for every command,
    since only some of them (audit, eval) offer ``--allow-pickle``."""
    return SpectraError(f"{where}: {what} pickle (.bin), which can run code, so it is not read by default: save "
                        "it as safetensors (save_pretrained does by default), or pass --allow-pickle where the "
                        "command offers it (audit, eval; torch.load weights_only=True)")
