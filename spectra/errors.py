"""The one exception type the CLI turns into a single line and exit code 1."""


class SpectraError(Exception):
    """Bad input or an unusable file: the message names the file and the problem.

    Library code raises this for anything a user can fix (missing folder, corrupt
    safetensors, shape mismatch, bad trigger spec, ...). The CLI prints ``error: <msg>``
    on one line and exits with code 1; any other exception is a bug in spectra.
    """
