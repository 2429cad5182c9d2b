"""Draw an audit's two figures in a helper process started before the audit runs.

Importing matplotlib (0.35 s) and drawing the two PNGs (0.4 s) are single-threaded and
came after everything else in ``spectra audit``: 14 % of a SmolLM2-135M audit. Started at
the command's first line, the helper imports matplotlib on the core that torch's import
(also single-threaded) leaves idle, sleeps on its stdin while the audit computes, and
draws while the parent writes the CSV/JSON/SARIF/Markdown files. Anything going wrong in
it (it cannot start, crashes, reports an error, or the platform forbids a subprocess)
costs only that time: :meth:`FigureWorker.wait` returns False and the caller draws the
figures itself, so the outputs never depend on the helper.

Protocol, one JSON line each way: ``{"rows": [...], "top_k": k, "folder": path}`` in,
``{"ok": true}`` or ``{"ok": false, "error": "..."}`` out; end of input ends the helper.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

class FigureWorker:
    """A helper process that will draw ``fig_ratio.png`` and ``fig_alignment.png``.

    Use as a context manager, so the helper ends with the command whatever happens::

        with FigureWorker() as worker:
            report = audit(...)
            report.write(out, figure_worker=worker)
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._sent = False
        if getattr(sys, "frozen", False):  # a bundled app's executable is the app, not Python
            return
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "spectra.report.figure_worker"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, encoding="utf-8")
        except OSError:  # no subprocess here: the caller draws in-process
            self._proc = None

    def __enter__(self) -> FigureWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        """Whether the helper is running and has not been given its job yet."""
        return self._proc is not None and self._proc.poll() is None and not self._sent

    def send(self, rows: list[dict[str, Any]], top_k: int, folder: Path) -> bool:
        """Hand the helper the rows to draw into ``folder``; False if it cannot take them."""
        from spectra.provenance import json_safe

        if not self.alive:
            return False
        job = {"rows": json_safe(rows), "top_k": top_k, "folder": str(folder)}
        try:
            assert self._proc is not None and self._proc.stdin is not None
            self._proc.stdin.write(json.dumps(job) + "\n")
            self._proc.stdin.flush()
        except (OSError, ValueError):
            self.close()
            return False
        self._sent = True
        return True

    def wait(self) -> bool:
        """Wait for the figures asked for by :meth:`send`: True when both PNGs are written."""
        if self._proc is None or not self._sent or self._proc.stdout is None:
            return False
        try:
            reply = json.loads(self._proc.stdout.readline() or "{}")
        except (OSError, ValueError):
            reply = {}
        self.close()
        return bool(reply.get("ok"))

    def close(self) -> None:
        """End the helper now. After :meth:`wait` it has replied and is exiting; before, its
        work is no longer wanted (the command failed, or its folder is being removed)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def draw_figures(rows: list[dict[str, Any]], top_k: int, folder: Path) -> None:
    """Draw and save both audit figures into ``folder`` (what the helper and the in-process
    fallback both run). Rows that came through JSON draw the same: a ``null`` ratio (∞, a zero
    update) is left out like ∞ itself."""
    from spectra.report.audit_figures import figures
    from spectra.report.style import save_figure

    for name, fig in figures(rows, top_k).items():
        save_figure(fig, Path(folder) / f"{name}.png", tight_bbox=False)  # laid out by tight_layout


def _serve() -> int:
    from spectra.report import audit_figures, style  # noqa: F401  (the import is the point: before the job)

    style.pyplot()
    line = sys.stdin.readline()
    if not line:
        return 0
    try:
        job = json.loads(line)
        draw_figures(job["rows"], int(job["top_k"]), Path(job["folder"]))
        reply: dict[str, Any] = {"ok": True}
    except Exception as exc:  # noqa: BLE001 (any failure is reported; the parent then draws in-process)
        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_serve())
