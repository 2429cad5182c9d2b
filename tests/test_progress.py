"""Every long step shows progress with an ETA, in a log as well as on a terminal."""

from __future__ import annotations

from spectra.progress import EtaLog, fmt_duration


def test_eta_lines_are_rate_limited_and_predict_from_measured_steps() -> None:
    now = [0.0]
    lines: list[str] = []
    eta = EtaLog("training steps", lines.append, interval_s=30, clock=lambda: now[0])
    eta(100, 400)  # a resumed run starts at step 100: the start, no line
    for step in range(101, 401):
        now[0] += 1.0  # one second a step
        eta(step, 400)
    # a line at most every 30 s or each tenth of the run, and one at the end
    assert 9 <= len(lines) <= 300 // 30 + 10 + 1 and lines[-1].startswith("training steps: 400/400 (100%)")
    first = lines[0]
    done = int(first.split(":")[1].split("/")[0].replace(",", ""))
    # the ETA comes from this process's steps only (1 s each), not from the 100 resumed ones
    assert f"ETA {fmt_duration(400 - done)}" in first, first
    assert "ETA" not in lines[-1]


def test_durations_read_naturally() -> None:
    assert [fmt_duration(s) for s in (42, 210, 7200)] == ["42 s", "3.5 min", "2.0 h"]


def test_a_step_shorter_than_the_interval_prints_nothing() -> None:
    now = [0.0]
    lines: list[str] = []
    eta = EtaLog("modules", lines.append, interval_s=30, clock=lambda: now[0])
    for i in range(11):
        now[0] += 0.1
        eta(i, 10)
    assert lines == []
