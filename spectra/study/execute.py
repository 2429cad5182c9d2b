"""Carry out one :class:`~spectra.study.plan.Run` and store its result as JSON.

Every run writes ``<results>/<id>.json`` once it is complete (atomically), and nothing
before: a run that is cut short leaves its checkpoints in ``<work>/<id>.partial`` (the
``spectra fix`` or ``spectra poison`` work folder) and resumes from the last epoch when
started again (ONION's language-model scores are stored as they are computed). Heavy
artifacts (poisoned bases, adapters) live under ``<work>``, which is not committed; the
JSON holds every number the study page and its figures are drawn from, so the page
regenerates without retraining.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spectra.io.zoo import model_path
from spectra.study.plan import Run, lr_picks
from spectra.study.records import (audit_summary, compact_eval, epoch_records, rebuild_check, rescale_summary,
                                    write_json)
from spectra.study.recipe import (ATTACKS, LR_FAMILY, MAX_EXTRA_POISON_EPOCHS, MIN_EXTRA_EPOCH_GAIN, TARGET_LABEL,
                                  Recipe, Splits, load_splits)
from spectra.train.poison import ASR_WARNING

Log = Callable[[str], None]
#: written beside a rebuilt base's poison.json: how its evaluation compares with the committed one
REBUILD_FILE = "rebuild.json"

class Study:
    """The study's state on disk: where results and work live, and how each run kind executes."""

    def __init__(self, results: str | os.PathLike[str], work: str | os.PathLike[str], recipe: Recipe | None = None,
                 log: Log = print, bases: str | os.PathLike[str] | None = None) -> None:
        self.results = Path(results)
        self.work = Path(work)
        self.bases = Path(bases) if bases is not None else self.work / "bases"  # poisoned bases (a cache)
        self.recipe = recipe or Recipe()
        self.log = log
        self._splits: Splits | None = None

    # ---- state
    @property
    def splits(self) -> Splits:
        if self._splits is None:
            self._splits = load_splits(self.recipe)
        return self._splits

    def path(self, run: Run) -> Path:
        return self.results / f"{run.id}.json"

    def result(self, run: Run) -> dict[str, Any] | None:
        p = self.path(run)
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None

    def done(self, run: Run) -> bool:
        return self.path(run).is_file()

    def ready(self, run: Run) -> bool:
        return all(self.done(d) for d in run.deps())

    def paper_base_folder(self, run: Run) -> Path:
        """The base poisoned with the paper's recipe as is (3 epochs)."""
        return self.bases / run.base().id

    def more_epochs_folder(self, run: Run, extra: int) -> Path:
        """The base after ``extra`` epochs of poisoning past the paper's (see :meth:`_base`)."""
        paper = self.paper_base_folder(run)
        return paper.with_name(f"{paper.name}.plus{extra}ep")

    def base_folder(self, run: Run) -> Path:
        """The poisoned base ``run`` fine-tunes: the paper's, or the one its base run went on to
        (named in the base's result) where the paper's stayed under the 95 % ASR bar."""
        doc = self.result(run.base())
        return self.bases / Path(doc["folder"]).name if doc and doc.get("folder") else self.paper_base_folder(run)

    def run_folder(self, run: Run) -> Path:
        """Where a finished run keeps what it wrote (adapter, logs, reports): ``WORK/runs/<run id>``."""
        return self.work / "runs" / run.id

    def partial_folder(self, run: Run) -> Path:
        """Where a base or fine-tuning run keeps its checkpoints until it finishes."""
        if run.kind != "base":
            return self.run_folder(run).with_name(run.id + ".partial")
        extra = [self.more_epochs_folder(run, k) for k in range(MAX_EXTRA_POISON_EPOCHS, 0, -1)]
        running = [f for f in extra if f.with_name(f.name + ".partial").exists()]  # a continuation under way
        folder = running[0] if running else self.paper_base_folder(run)
        return folder.with_name(folder.name + ".partial")

    def progress(self, run: Run) -> tuple[int, int] | None:
        """(optimiser step, total steps) of the newest checkpoint a cut-short or running run
        has left, else ``None``."""
        from spectra.train.checkpoints import checkpoint_progress

        return checkpoint_progress(self.partial_folder(run) / "checkpoints")

    def picked_lr(self, family: str) -> tuple[float, dict[str, list[float]]]:
        """The rate ``family`` picked (final validation CA of its pick runs) and the curves."""
        from spectra.train.validation import pick_learning_rate

        curves = {}
        for pick in lr_picks(family, self.recipe.lr_grid):
            res = self.result(pick)
            if res is None:
                raise RuntimeError(f"{pick.id}: not done yet")
            curves[float(pick.lr)] = [row["val_ca"] for row in res["epochs"] if row.get("val_ca") is not None]
        return pick_learning_rate(curves), {f"{lr:g}": c for lr, c in curves.items()}

    def resolve_lr(self, run: Run) -> tuple[float, str]:
        """The learning rate ``run`` trains at and where it came from: the run's own, else its family's pick
        on MiniLM."""
        if run.lr is not None:
            return float(run.lr), "given"
        if run.model != "minilm":  # no pick on the second architecture: LoRA's rate on MiniLM
            lr, _ = self.picked_lr(LR_FAMILY[run.method])
            return lr, f"picked for {LR_FAMILY[run.method]} on MiniLM"
        lr, _ = self.picked_lr(LR_FAMILY[run.method])
        return lr, f"picked for the {LR_FAMILY[run.method]} family"

    # ---- execution
    def execute(self, run: Run) -> dict[str, Any]:
        """Run ``run`` (its deps must be done) and store its JSON; returns the result."""
        if self.done(run):
            return self.result(run)  # type: ignore[return-value]
        t0, cpu0 = time.time(), time.process_time()
        handler = {"base": self._base, "finetune": self._finetune, "sweep": self._sweep, "onion": self._onion,
                   "intruder": self._intruder}[run.kind]
        doc = handler(run)
        doc = {"id": run.id, "run": {k: getattr(run, k) for k in ("kind", "attack", "base_seed", "method", "seed",
                                                                    "lr", "model", "tier", "variant")},
               "wall_s": round(time.time() - t0, 1),
               # CPU seconds of this process (all its threads): unlike the wall, a worker paused
               # with SIGSTOP (to time something else on the machine) does not inflate it
               "cpu_s": round(time.process_time() - cpu0, 1), **doc}
        write_json(self.path(run), doc)
        return doc

    # base: poison the clean model on the proxy, then measure it downstream (Table 1)
    def _base(self, run: Run) -> dict[str, Any]:
        from spectra.eval.pipeline import run_eval
        from spectra.eval.settings import EvalSettings

        r, trig = self.recipe, ATTACKS[run.attack]
        folder = self._poison(run, self.paper_base_folder(run), model_path(run.model), r.poison_epochs)
        stages = [_stage(folder, r.poison_epochs)]
        # the paper configures every poisoned base so that its ASR exceeds 95 % without saying
        # how; the smallest change: one more epoch at a time, on the same poisoned rows
        while stages[-1]["proxy_heldout"]["asr"] <= ASR_WARNING and len(stages) <= MAX_EXTRA_POISON_EPOCHS:
            if len(stages) > 1 and _gain(stages) < MIN_EXTRA_EPOCH_GAIN:
                break  # at this pace the bar is out of reach
            extra = len(stages)
            done = (self.more_epochs_folder(run, extra) / "poison.json").is_file()
            self.log(f"{run.id}: held-out ASR {100 * stages[-1]['proxy_heldout']['asr']:.1f}% is not above the "
                     f"paper's {100 * ASR_WARNING:.0f}%: " + ("its extra epoch" if done else "poisoning one more epoch")
                     + f" ({extra} of at most {MAX_EXTRA_POISON_EPOCHS})" + (", kept from an earlier run" if done else ""))
            folder = self._poison(run, self.more_epochs_folder(run, extra), folder, 1.0)
            stages.append(_stage(folder, r.poison_epochs + extra))
        used = stages[-1] if stages[-1]["proxy_heldout"]["asr"] > ASR_WARNING else stages[0]
        if used is not stages[-1]:
            self.log(f"{run.id}: {len(stages) - 1} more epoch(s) did not pass the bar; fine-tuning starts from the "
                     f"paper's {r.poison_epochs:g}-epoch base")
        folder = Path(used["folder"])
        info = json.loads((folder / "poison.json").read_text(encoding="utf-8"))
        down = run_eval(str(folder), None, self.splits.test, trig, TARGET_LABEL,
                        EvalSettings(seed=0, max_length=r.max_length, device="cpu"), progress=False)
        return {"folder": str(folder), "proxy_heldout": compact_eval(info.get("evaluation") or info),
                "poison_wall_s": sum(stage["wall_s"] or 0 for stage in stages) or None,
                "resumed": any(stage["resumed"] for stage in stages),  # then a wall is only its last part
                "downstream_test": compact_eval(down.to_dict()), "poisoning": info.get("poisoning", {}),
                "poison_epochs": used["epochs"], "stages": stages,
                "train_log": info.get("train_log", []), "warnings": info.get("warnings", []),
                "settings": {"clean_model": str(model_path(run.model)), "batch_size": _poison_batch(run),
                             **{k: getattr(r, k) for k in ("n_poison", "poison_mode", "poison_epochs", "poison_lr",
                                                           "poison_test_size", "max_length")}}}

    def _poison(self, run: Run, folder: Path, start: Path, epochs: float) -> Path:
        """Poison ``start`` for ``epochs`` into ``folder`` (kept if already there); resumable."""
        from spectra.train.options import RunOptions
        from spectra.train.poison import PoisonConfig, poison

        if not (folder / "poison.json").is_file():
            r = self.recipe
            work = folder.with_name(folder.name + ".partial")  # its checkpoints: a killed run resumes
            config = PoisonConfig(target_label=TARGET_LABEL, n_poison=r.n_poison, mode=r.poison_mode, epochs=epochs,
                                  lr=r.poison_lr, batch_size=_poison_batch(run), max_length=r.max_length,
                                  seed=run.base_seed, test_size=r.poison_test_size, device="cpu")
            # SmolLM2 at batch 4 runs ~2,400 steps an epoch (over an hour on one thread): checkpoint every 500
            opts = RunOptions(log=self.log, work_dir=work, resume=work.exists(),
                              save_steps=None if run.model == "minilm" else 500)
            result = poison(start, self.splits.proxy, ATTACKS[run.attack], config, run=opts)
            result.write(folder, overwrite=True)
        return folder

    # finetune: spectra fix with the study's settings, plus the rows derived from its adapter
    def _finetune(self, run: Run) -> dict[str, Any]:
        lr, why = self.resolve_lr(run)
        reuse = self._same_pick(run, lr)
        if reuse is not None:
            return {**{k: v for k, v in reuse.items() if k not in ("id", "run", "wall_s")},
                    "lr_choice": why, "same_as": reuse["id"], "wall_s_of_original": reuse.get("wall_s")}
        from spectra.train.fix import run_fix
        from spectra.train.options import FixData, RunOptions
        from spectra.train.validation import converged

        r, trig = self.recipe, ATTACKS[run.attack]
        epochs = r.epochs if run.model == "minilm" else 5.0  # the paper: 5 epochs for LLaMA
        overrides: dict[str, Any] = {"epochs": epochs}
        if run.model != "minilm":
            overrides.update(rank=16)  # the paper: r = 16 for LLaMA
        if run.variant:  # a user's recipe (evidence for the forgetting verdict)
            from spectra.study.evidence import UserRecipe, parse_tag

            overrides.update(UserRecipe(lr=lr, **parse_tag(run.variant)).overrides())
        cfg = r.config(run.method, lr, run.seed, **overrides)
        out = self.run_folder(run)
        work = self.partial_folder(run)
        if out.exists() and not (out / "eval.json").is_file():
            shutil.rmtree(out)
        resumed = not out.exists() and work.exists()  # then wall_s counts only this process's part
        if not out.exists():
            self.ensure_base(run)
            data = FixData(self.splits.train, eval=self.splits.test, val=self.splits.val, trigger=trig,
                           target_label=TARGET_LABEL)
            run_fix(str(self.base_folder(run)), data, out, config=cfg,
                    run=RunOptions(device="cpu", resume=work.exists(), work_dir=work, log=self.log,
                                   training_overrides={"group_by_length": r.group_by_length}))
        rows = {row["model"]: row for row in json.loads((out / "eval.json").read_text(encoding="utf-8"))}
        epochs_log = epoch_records(out / "train_log.csv")
        doc: dict[str, Any] = {
            "lr": lr, "lr_choice": why, "config": cfg.to_dict(), "folder": str(out),
            "eval": {name: compact_eval(row) for name, row in rows.items()},
            "epochs": epochs_log, "converged": converged([e["val_ca"] for e in epochs_log if "val_ca" in e]),
            "resumed": resumed,
        }
        rebuilt = self.base_folder(run) / REBUILD_FILE
        if rebuilt.is_file():  # trained on a rebuilt base: whether it is the committed one
            doc["base_rebuilt"] = json.loads(rebuilt.read_text(encoding="utf-8"))
        if not cfg.full:
            doc["audit"] = audit_summary(str(self.base_folder(run)), out / "adapter", cfg.top_k)
            if cfg.pt_active:
                doc["audit_before_pt"] = audit_summary(str(self.base_folder(run)), out / "adapter_before_rescale",
                                                        cfg.top_k)
                doc["rescale"] = rescale_summary(out / "rescale.csv")
            else:  # Pt alone on this adapter: the "+Pt" row of the ablation
                doc["pt_alone"] = self._pt_alone(run, out, cfg)
        return doc

    def _same_pick(self, run: Run, lr: float) -> dict[str, Any] | None:
        """The pick run this one duplicates (same attack, base, method, seed and rate), if any."""
        if run.lr is not None or run.variant:
            return None
        twin = Run("finetune", run.attack, run.base_seed, run.method, run.seed, lr, run.model, run.tier)
        return self.result(twin)

    def _pt_alone(self, run: Run, out: Path, cfg: Any) -> dict[str, Any]:
        from spectra.train.fix import run_fix
        from spectra.train.options import FixData, RunOptions

        pt_out = out.with_name(out.name + "__pt")
        if not (pt_out / "eval.json").is_file():
            shutil.rmtree(pt_out, ignore_errors=True)
            pt_cfg = cfg.with_(pt=True)
            data = FixData(eval=self.splits.test, trigger=ATTACKS[run.attack], target_label=TARGET_LABEL)
            run_fix(str(self.base_folder(run)), data, pt_out, adapter=out / "adapter", rescale_only=True,
                    config=pt_cfg, run=RunOptions(device="cpu", log=self.log))
        rows = {row["model"]: row for row in json.loads((pt_out / "eval.json").read_text(encoding="utf-8"))}
        doc = {"eval": compact_eval(rows["new"]), "rescale": rescale_summary(pt_out / "rescale.csv"),
               "folder": str(pt_out)}
        if run.variant:  # the rescaled adapter is one more labelled row of the evidence table
            doc["audit"] = audit_summary(str(self.base_folder(run)), pt_out / "adapter", cfg.top_k)
        return doc

    def ensure_base(self, run: Run) -> None:
        """Rebuild a finished base run's poisoned checkpoint when its folder is gone (a fresh
        checkout holds the base's result JSON, not its weights): the same recipe and seed,
        every stage it used, logged — its held-out ASR is recorded beside the committed one."""
        import fcntl

        folder = self.base_folder(run)
        if (folder / "poison.json").is_file():
            return
        locks = self.work / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{run.base().id}.rebuild.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # one worker rebuilds; the others wait, then find it
            if not (folder / "poison.json").is_file():
                self._rebuild_base(run, folder)

    def _rebuild_base(self, run: Run, folder: Path) -> None:
        doc = self.result(run.base()) or {}
        used = float(doc.get("poison_epochs") or self.recipe.poison_epochs)
        self.log(f"{run.base().id}: its poisoned checkpoint is not in {self.bases}; poisoning it again "
                 f"({used:g} epochs, seed {run.base_seed})")
        start = self._poison(run, self.paper_base_folder(run), model_path(run.model), self.recipe.poison_epochs)
        for extra in range(1, int(round(used - self.recipe.poison_epochs)) + 1):
            start = self._poison(run, self.more_epochs_folder(run, extra), start, 1.0)
        info = json.loads((folder / "poison.json").read_text(encoding="utf-8"))
        check = rebuild_check(doc.get("proxy_heldout") or {}, compact_eval(info.get("evaluation") or info))
        write_json(folder / REBUILD_FILE, check)
        same = ("identical to the committed result in " + ", ".join(check["compared"]) if check["identical"]
                else f"different from the committed result: {check['differences'] or 'nothing to compare'}")
        self.log(f"{run.base().id}: rebuilt; its held-out evaluation is {same}")

    # sweep: Figure 3 and the threshold predictions for one adapter (before Pt)
    def _sweep(self, run: Run) -> dict[str, Any]:
        from spectra.study.sweep import sweep_run

        ft = self.result(run.finetune())
        assert ft is not None
        folder = Path(ft["folder"])
        adapter = folder / ("adapter_before_rescale" if (folder / "adapter_before_rescale").is_dir() else "adapter")
        rescale = ft.get("rescale") or (ft.get("pt_alone") or {}).get("rescale")
        return sweep_run(str(self.base_folder(run)), str(adapter), self.splits.test, ATTACKS[run.attack],
                         TARGET_LABEL, self.recipe, rescale=rescale, log=self.log)

    def _onion(self, run: Run) -> dict[str, Any]:
        from spectra.study.baselines import onion_run

        ft = self.result(run.finetune())
        assert ft is not None
        return onion_run(str(self.base_folder(run)), str(Path(ft["folder"]) / "adapter"), self.splits,
                         ATTACKS[run.attack], TARGET_LABEL, self.recipe, log=self.log,
                         store=self.work / "onion" / "smollm2-135m-instruct_scores.jsonl")

    def _intruder(self, run: Run) -> dict[str, Any]:
        from spectra.study.baselines import intruder_run

        ft = self.result(run.finetune())
        assert ft is not None
        return intruder_run(str(self.base_folder(run)), str(Path(ft["folder"]) / "adapter"),
                            self.run_folder(run), self.splits, ATTACKS[run.attack], TARGET_LABEL, self.recipe,
                            top_k=self.recipe.top_k)


def _poison_batch(run: Run) -> int:
    return 32 if run.model == "minilm" else 4  # the paper: 32 for BERT/RoBERTa, 4 for LLaMA


def _gain(stages: list[dict[str, Any]]) -> float:
    """How much the last poisoning stage raised the held-out ASR."""
    return stages[-1]["proxy_heldout"]["asr"] - stages[-2]["proxy_heldout"]["asr"]


def _stage(folder: Path, epochs: float) -> dict[str, Any]:
    """One poisoning stage's held-out evaluation and wall, read from its ``poison.json``."""
    info = json.loads((folder / "poison.json").read_text(encoding="utf-8"))
    return {"epochs": epochs, "folder": str(folder), "proxy_heldout": compact_eval(info.get("evaluation") or info),
            "wall_s": (info.get("timings_s") or {}).get("total"),
            "resumed": bool((info.get("poisoning") or {}).get("resumed_from"))}
