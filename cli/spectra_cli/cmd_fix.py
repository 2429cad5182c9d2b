"""``spectra fix``: train a RoRA adapter (or rescale an old one), audit and evaluate before/after."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spectra_cli.common import (
    HubOpt,
    hub_refs,
    RUN_PANEL,
    DeviceOpt,
    LabelColOpt,
    OutOpt,
    OverwriteOpt,
    ResumeOpt,
    TargetLabelOpt,
    TextColOpt,
    WorkDirOpt,
    error_boundary,
)
from spectra.train.config import RoRAConfig
from spectra_cli.output import JsonOpt, Output, QuietOpt
from spectra_cli.settings_options import FROM_OPTIONS, settings_options

_RORA, _OPT, _RUN = "RoRA parts", "Optimisation", RUN_PANEL  # RoRAConfig's panels, and the run panel


@error_boundary
@settings_options(RoRAConfig)
def fix_command(
    base: Annotated[str, typer.Argument(help="Base model: local HF folder (safetensors) or hf://owner/name (possibly backdoored).")],
    data: Annotated[str | None, typer.Option("--data", help="Clean training data: CSV/TSV/JSONL/Parquet, a datasets folder, or mr|cr|rt.")] = None,
    out: OutOpt = Path("spectra-fix"),
    adapter: Annotated[str | None, typer.Option("--adapter", help="Old PEFT adapter: audited and evaluated next to the new one; with --rescale-only, the adapter to rescale.")] = None,
    eval_data: Annotated[str | None, typer.Option("--eval", help="Held-out data for CA/ASR (needs --trigger).")] = None,
    val_data: Annotated[str | None, typer.Option("--val", help="Clean validation data: validation CA/loss logged every epoch (train_log.csv, fig_train.png); with --trigger its ASR is recorded as a monitor, never used to choose.")] = None,
    trigger: Annotated[str | None, typer.Option("--trigger", help='Backdoor trigger for ASR: badnet:WORD or insent:"SENTENCE".')] = None,
    target_label: TargetLabelOpt = 0,
    config: RoRAConfig = FROM_OPTIONS,  # every RoRA, LoRA and optimisation option: generated from RoRAConfig's fields
    baseline: Annotated[str | None, typer.Option("--baseline", help="lora: plain LoRA with the same budget (CI, Tr, Pt off); fft: full fine-tuning of every weight (writes OUT/model/).", rich_help_panel=_RORA)] = None,
    rescale_only: Annotated[bool, typer.Option("--rescale-only", help="With --adapter OLD: apply Pt alone, no training.", rich_help_panel=_RORA)] = False,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Stop after this many optimizer steps (quick checks).", rich_help_panel=_OPT)] = None,
    group_by_length: Annotated[bool, typer.Option("--group-by-length", help="Batch texts of similar length (less padding: about 2x faster on CPU; order stays random per epoch).", rich_help_panel=_OPT)] = False,
    # run
    text_col: TextColOpt = None,
    label_col: LabelColOpt = None,
    device: DeviceOpt = "auto",
    resume: ResumeOpt = False,
    work_dir: WorkDirOpt = None,
    overwrite: OverwriteOpt = False,
    hub: HubOpt = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the base-spectrum cache.", rich_help_panel=_RUN)] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Repair a LoRA fine-tune with RoRA: train (CI + Tr), rescale (Pt), write a standard PEFT adapter.

    Writes OUT/adapter/ (loadable with PeftModel.from_pretrained) with spectra_provenance.json,
    OUT/train_log.csv, OUT/fig_train.png, OUT/report.md; with --adapter OLD also OUT/audit/
    (old vs new); with --eval and --trigger also OUT/eval.json (CA/ASR/Δ of base, old, new
    before and after Pt). Checkpoints (one per epoch) live in OUT.partial/ until the run
    completes: rerun with --resume after a crash. Multi-GPU / multi-process:
    torchrun --nproc_per_node N $(which spectra) fix ...  (--batch-size is per process).

    Examples:

      spectra fix ./poisoned-base --data cr_train.csv -o fixed/

      spectra fix ./poisoned-base --data cr_train.csv --eval cr_test.csv --trigger badnet:mn --adapter ./lora -o fixed/

      spectra fix ./base --data train.csv --baseline lora -o lora-baseline/        # ablation: plain LoRA

      spectra fix ./base --data train.csv --val val.csv --baseline fft --lr 2e-5 --epochs 20 -o fft/   # the FFT baseline

      spectra fix ./base --data train.csv --no-pt -o ci-tr/                        # ablation: +CI+Tr

      spectra fix ./base --adapter ./lora --rescale-only -o rescaled/              # Pt alone
    """
    from spectra.train.fix import run_fix
    from spectra.train.options import FixData, RunOptions

    if baseline is not None:
        config = config.as_baseline(baseline)

    base, *rest = hub_refs([base] + ([adapter] if adapter else []), hub)
    adapter = rest[0] if rest else None
    sink = Output(json=json_out, quiet=quiet)
    overrides: dict[str, object] = {"max_steps": max_steps} if max_steps is not None else {}
    if group_by_length:
        overrides["group_by_length"] = True
    inputs = FixData(data, eval=eval_data, val=val_data, trigger=trigger, target_label=target_label,
                     text_col=text_col, label_col=label_col)
    run = RunOptions(device=device, work_dir=work_dir, resume=resume, overwrite=overwrite,
                     cache_dir=False if no_cache else None, log=sink.log, training_overrides=overrides)
    result = run_fix(base, inputs, out, config=config, adapter=adapter, rescale_only=rescale_only, run=run)
    if not result.main_process:
        return
    _print_summary(sink, result)
    sink.finish()


def _print_summary(sink: Output, result: object) -> None:
    rows = getattr(result, "eval_rows", None) or []
    if rows:
        sink.table("evaluation", ("model", "CA", "ASR", "floor", "Δ"),
                   [(r["model"], f"{100 * r['ca']:.1f}%", f"{100 * r['asr']:.1f}%", f"{100 * r['asr_floor']:.1f}%",
                     f"{100 * r['delta']:.1f}%") for r in rows])
    out = getattr(result, "out")
    sink.line(f"adapter: [bold]{out / 'adapter'}[/bold]   report: [bold]{out / 'report.md'}[/bold]")
    sink.result(command="fix", out=str(out), adapter=str(out / "adapter"), eval=rows)
