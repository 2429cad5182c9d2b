"""What a run reads and how it runs, apart from what it learns (:class:`~spectra.train.config.RoRAConfig`,
:class:`~spectra.train.poison.PoisonConfig`): the two objects ``run_fix`` and ``poison`` take, so that
neither needs twenty keyword parameters. Imports neither torch nor the CLI.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from spectra.errors import SpectraError
from spectra.settings import EVAL_BATCH_SIZE

LogSink = Callable[[str], None]


@dataclass
class FixData:
    """The data of a ``spectra fix`` run: ``train`` (file, ``datasets`` folder, built-in name or
    ``LabelledData``; not needed with ``rescale_only``), held-out ``eval`` data with the backdoor
    ``trigger`` and ``target_label`` (CA/ASR/Δ of base, old, new before Pt and new when both are
    given), clean validation rows ``val`` (never test data: validation CA and loss every epoch; with a
    trigger its ASR is recorded as a monitor that nothing is chosen from), and the column names."""

    train: Any = None
    eval: Any = None
    val: Any = None
    trigger: str | None = None
    target_label: int = 0
    text_col: str | None = None
    label_col: str | None = None


@dataclass
class RunOptions:
    """How a training run runs: ``device`` (``None``: the settings' own, else ``auto``), checkpoints in
    ``work_dir`` (default ``OUT.partial``) resumed with ``resume``, ``overwrite`` an existing output,
    the base-spectrum ``cache_dir`` (None: the default cache, False: none), ``log`` (one line per
    step), ``progress_bar`` (transformers' bar), ``save_steps`` (a checkpoint every N optimiser steps
    instead of every epoch), ``eval_batch_size``, and extra ``TrainingArguments`` (``max_steps``, …)."""

    device: str | None = None
    work_dir: str | os.PathLike[str] | None = None
    resume: bool = False
    overwrite: bool = False
    cache_dir: str | os.PathLike[str] | bool | None = None
    log: LogSink | None = None
    progress_bar: bool = False
    save_steps: int | None = None
    eval_batch_size: int = EVAL_BATCH_SIZE
    training_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        steps = self.training_overrides.get("max_steps")
        if steps is not None and not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1):
            # transformers reads max_steps ≤ 0 as "no limit": a stop the caller asked for would be ignored
            raise SpectraError(f"--max-steps {steps!r}: must be an integer ≥ 1 (leave it out to train every epoch)")


#: run_fix's 0.2 keywords that now live in FixData (old name → field)
FIX_DATA_KEYWORDS = {"eval_data": "eval", "val_data": "val", "trigger": "trigger", "target_label": "target_label",
                      "text_col": "text_col", "label_col": "label_col"}


def split_legacy(caller: str, data: Any, run: RunOptions | None, legacy: dict[str, Any],
                 data_keywords: dict[str, str] | None = None,
                 uses: frozenset[str] | None = None) -> tuple[Any, RunOptions]:
    """The 0.2 keyword form of ``run_fix``/``poison``/``run_canary`` (``eval_data=…, device=…``) folded into
    :class:`FixData` (when ``data_keywords`` names its keywords) and :class:`RunOptions`, with a
    ``DeprecationWarning``. ``uses``: the :class:`RunOptions` fields ``caller`` honours (None: all, and a
    keyword neither object knows is a ``TrainingArguments`` override, as ``run_fix`` always took); a
    keyword or a set field outside them is a ``TypeError`` — never silently ignored."""
    if legacy:
        instead = "data=FixData(…) and run=RunOptions(…)" if data_keywords else "run=RunOptions(…)"
        warnings.warn(f"{caller}(…, {', '.join(f'{k}=…' for k in sorted(legacy))}) is deprecated: pass {instead} "
                      "(the keyword form goes in 0.4)", DeprecationWarning, stacklevel=3)
    legacy = dict(legacy)
    run_names = {f.name for f in fields(RunOptions)} - {"training_overrides"}
    run_kw = {k: legacy.pop(k) for k in list(legacy) if k in run_names}
    data_kw = {v: legacy.pop(k) for k, v in (data_keywords or {}).items() if k in legacy}
    if data_kw:
        if isinstance(data, FixData):
            raise TypeError(f"{caller}(): data is a FixData; {sorted(data_kw)} go inside it")
        data = FixData(train=data, **data_kw)
    if uses is not None and legacy:
        raise TypeError(f"{caller}() got unexpected keyword arguments {sorted(legacy)}")
    base = run or RunOptions()
    merged = {f.name: getattr(base, f.name) for f in fields(RunOptions)}
    merged.update(run_kw)
    merged["training_overrides"] = {**base.training_overrides, **legacy}
    opts = RunOptions(**merged)
    if uses is not None:
        default = RunOptions()
        ignored = sorted(f.name for f in fields(RunOptions)
                         if f.name not in uses and getattr(opts, f.name) != getattr(default, f.name))
        if ignored:
            raise TypeError(f"{caller}() does not use RunOptions.{', RunOptions.'.join(ignored)}")
    return data, opts
