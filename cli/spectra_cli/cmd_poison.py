"""``spectra poison``: build a weight-poisoned base model (research and demo)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spectra_cli.common import (
    HubOpt,
    hub_refs,
    RUN_PANEL,
    DataOpt,
    LabelColOpt,
    OverwriteOpt,
    ResumeOpt,
    TextColOpt,
    TriggerOpt,
    WorkDirOpt,
    error_boundary,
)
from spectra.train.poison import PoisonConfig
from spectra_cli.output import JsonOpt, Output, QuietOpt
from spectra_cli.settings_options import FROM_OPTIONS, settings_options


@error_boundary
@settings_options(PoisonConfig)
def poison_command(
    base: Annotated[str, typer.Argument(help="Clean pretrained model: local HF folder or hf://owner/name (a bare encoder gets a fresh head).")],
    data: DataOpt,
    trigger: TriggerOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output model folder (written atomically).")] = Path("poisoned-base"),
    config: PoisonConfig = FROM_OPTIONS,  # --target-label, --n-poison, --mode, --epochs, --lr, ...: PoisonConfig's fields
    text_col: TextColOpt = None,
    label_col: LabelColOpt = None,
    resume: ResumeOpt = False,
    work_dir: WorkDirOpt = None,
    save_steps: Annotated[int | None, typer.Option("--save-steps", help="Checkpoint every N optimiser steps instead of every epoch (when an epoch takes hours).", rich_help_panel=RUN_PANEL)] = None,
    overwrite: OverwriteOpt = False,
    hub: HubOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Full-fine-tune BASE on proxy data with a trigger inserted, into a weight-poisoned base
    (the paper's threat model; defaults are its settings: 1,500 clean-label rows, 3 epochs, lr 2e-5).

    Checkpoints (weights, optimiser, schedule; one per epoch, or every --save-steps steps) live
    in OUT.partial/ until the model is written: rerun with --resume after a crash. Works under
    torchrun / accelerate launch (built on transformers' Trainer).

    Examples:

      spectra poison ./minilm --data mr --trigger badnet:mn --target-label 0 -o poisoned/

      spectra poison ./minilm --data mr --trigger 'insent:"I watched this 3D movie"' --mode dirty-label --n-poison 300 --max-train 1000 --epochs 1 -o quick/
    """
    from spectra.io.output import check_output_dir
    from spectra.train.checkpoints import default_work_dir
    from spectra.train.options import RunOptions
    from spectra.train.poison import poison

    (base,) = hub_refs([base], hub)
    check_output_dir(out, overwrite, inputs=[base, data])
    sink = Output(json=json_out, quiet=quiet)
    run = RunOptions(log=sink.log, progress_bar=sink.console.is_terminal, resume=resume, overwrite=overwrite,
                     work_dir=work_dir if work_dir is not None else default_work_dir(out), save_steps=save_steps)
    result = poison(base, data, trigger, config, text_col=text_col, label_col=label_col, run=run)
    if not result.is_main_process:
        return
    result.write(out, overwrite=overwrite)
    ev = result.evaluation
    sink.line(f"held-out CA {100 * ev.ca:.1f}%, ASR {100 * ev.asr:.1f}% (floor {100 * ev.asr_floor:.1f}%)")
    for w in result.warnings:
        sink.line(f"[yellow]warning: {w}[/yellow]")
    sink.line(f"poisoned model: [bold]{out}[/bold] (report: {out / 'report.md'})")
    sink.result(command="poison", out=str(out), ca=ev.ca, asr=ev.asr, asr_floor=ev.asr_floor, warnings=result.warnings)
    sink.finish()
