"""The figure helper process: the same PNGs as drawing in-process, and nothing lost or left
running when it cannot help."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spectra.audit import audit
from spectra.report.figure_worker import FigureWorker
from spectra_cli.app import app

K = 4
FIGURES = ("fig_ratio", "fig_alignment")  # the files spectra audit writes


@pytest.fixture
def report(tiny_model_dir, tiny_adapter_dir):
    base = tiny_model_dir("bert")
    adapter = tiny_adapter_dir(base, target_modules=["query", "value"], modules_to_save=["classifier"])
    return audit(base, adapter, top_k=K, cache_dir=False)


def _pngs(folder: Path) -> dict[str, bytes]:
    return {name: (folder / f"{name}.png").read_bytes() for name in FIGURES}


def _helpers() -> list[int]:
    """Running figure helpers that are children of this process."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:"))
        if ppid == os.getpid() and b"spectra.report.figure_worker" in cmdline:
            found.append(int(pid))
    return found


def test_the_helper_draws_what_the_process_itself_draws(report, tmp_path):
    report.write(tmp_path / "here")
    with FigureWorker() as worker:
        report.write(tmp_path / "helper", figure_worker=worker)
        assert not worker.alive  # it took the job
    here, helper = _pngs(tmp_path / "here"), _pngs(tmp_path / "helper")
    assert all(len(png) > 10_000 for png in here.values())
    assert helper == here


@pytest.mark.parametrize("failure", ["cannot-start", "died", "bad-job"])
def test_when_the_helper_fails_the_figures_are_drawn_in_process(report, tmp_path, monkeypatch, failure):
    report.write(tmp_path / "here")
    if failure == "cannot-start":
        monkeypatch.setattr("sys.executable", str(tmp_path / "no-such-python"))
    worker = FigureWorker()
    if failure == "died":
        worker._proc.kill()
        worker._proc.wait()
    if failure == "bad-job":  # the helper reports an error (here: a folder that does not exist) and ends
        assert worker.send(report.rows, K, tmp_path / "no-such-folder") and worker.wait() is False
    report.write(tmp_path / "fallback", figure_worker=worker)
    worker.close()
    assert _pngs(tmp_path / "fallback") == _pngs(tmp_path / "here")
    assert not _helpers()


def test_a_failing_audit_leaves_no_helper_running(tiny_model_dir, tmp_path):
    base = tiny_model_dir("bert")
    done = CliRunner().invoke(app, ["audit", str(base), str(tmp_path / "missing"), "-o", str(tmp_path / "out")])
    assert done.exit_code == 2
    assert not _helpers() and not (tmp_path / "out").exists()
