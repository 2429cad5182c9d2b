"""``spectra fix``: train a RoRA adapter (or rescale an old one), audit and evaluate before/after."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spectra_cli.common import (
    HubOpt,
    hub_refs,
    RUN_PANEL,
    BatchSizeOpt,
    DeviceOpt,
    LabelColOpt,
    MaxLengthOpt,
    OutOpt,
    OverwriteOpt,
    ResumeOpt,
    SeedOpt,
    TargetLabelOpt,
    TextColOpt,
    TopKOpt,
    WorkDirOpt,
    error_boundary,
)
from spectra_cli.output import JsonOpt, Output, QuietOpt

_RORA = "RoRA parts"
_LORA = "LoRA"
_OPT = "Optimisation"
_RUN = RUN_PANEL


@error_boundary
def fix_command(
    base: Annotated[str, typer.Argument(help="Base model: local HF folder (safetensors) or hf://owner/name (possibly backdoored).")],
    data: Annotated[str | None, typer.Option("--data", help="Clean training data: CSV/TSV/JSONL/Parquet, a datasets folder, or mr|cr|rt.")] = None,
    out: OutOpt = Path("spectra-fix"),
    adapter: Annotated[str | None, typer.Option("--adapter", help="Old PEFT adapter: audited and evaluated next to the new one; with --rescale-only, the adapter to rescale.")] = None,
    eval_data: Annotated[str | None, typer.Option("--eval", help="Held-out data for CA/ASR (needs --trigger).")] = None,
    val_data: Annotated[str | None, typer.Option("--val", help="Clean validation data: validation CA/loss logged every epoch (train_log.csv, fig_train.png); with --trigger its ASR is recorded as a monitor, never used to choose.")] = None,
    trigger: Annotated[str | None, typer.Option("--trigger", help='Backdoor trigger for ASR: badnet:WORD or insent:"SENTENCE".')] = None,
    target_label: TargetLabelOpt = 0,
    # RoRA
    base_dropout: Annotated[float, typer.Option("--base-dropout", help="CI: dropout rate p on the frozen base path W_pre·x, in [0, 1).", rich_help_panel=_RORA)] = 0.1,
    lam: Annotated[float, typer.Option("--lam", help="Tr: λ of the penalty λ·Σ(‖U_kᵀB‖² + ‖A V_k‖²), summed over modules.", rich_help_panel=_RORA)] = 10.0,
    top_k: TopKOpt = 32,
    rescale_layers: Annotated[str, typer.Option("--rescale-layers", help="Pt: rescale the top N transformer blocks, or half (the top half), all, or none. The paper's 3 is half of MiniLM but a tenth of a 30-block model.", rich_help_panel=_RORA)] = "3",
    rescale_mode: Annotated[str, typer.Option("--rescale-mode", help="Pt: match (the paper's Eq. 12: every chosen module to factor × σ_max(W_pre), which also shrinks an update already above it) or amplify (only raise; never below the trained scale).", rich_help_panel=_RORA)] = "match",
    rescale_factor: Annotated[float, typer.Option("--rescale-factor", help="Pt: target σ_max(s'BA) = factor × σ_max(W_pre).", rich_help_panel=_RORA)] = 1.0,
    no_ci: Annotated[bool, typer.Option("--no-ci", help="Switch CI off.", rich_help_panel=_RORA)] = False,
    no_tr: Annotated[bool, typer.Option("--no-tr", help="Switch Tr off.", rich_help_panel=_RORA)] = False,
    no_pt: Annotated[bool, typer.Option("--no-pt", help="Switch Pt off.", rich_help_panel=_RORA)] = False,
    baseline: Annotated[str | None, typer.Option("--baseline", help="lora: plain LoRA with the same budget (CI, Tr, Pt off); fft: full fine-tuning of every weight (writes OUT/model/).", rich_help_panel=_RORA)] = None,
    rescale_only: Annotated[bool, typer.Option("--rescale-only", help="With --adapter OLD: apply Pt alone, no training.", rich_help_panel=_RORA)] = False,
    # LoRA
    rank: Annotated[int, typer.Option("--rank", "-r", help="LoRA rank r.", rich_help_panel=_LORA)] = 8,
    alpha: Annotated[float, typer.Option("--alpha", help="LoRA α (scale α/r, α/√r with --rslora).", rich_help_panel=_LORA)] = 16.0,
    lora_dropout: Annotated[float, typer.Option("--lora-dropout", help="PEFT's dropout on the LoRA path.", rich_help_panel=_LORA)] = 0.1,
    target_modules: Annotated[list[str] | None, typer.Option("--target-modules", help="Module names (repeatable or comma-separated) or all-linear. Default: attention query,value.", rich_help_panel=_LORA)] = None,
    init: Annotated[str, typer.Option("--init", help="default | gaussian | pissa | olora (PiSSA/OLoRA are saved converted to plain LoRA).", rich_help_panel=_LORA)] = "default",
    rslora: Annotated[bool, typer.Option("--rslora", help="Rank-stabilised scale α/√r.", rich_help_panel=_LORA)] = False,
    dora: Annotated[bool, typer.Option("--dora", help="DoRA (weight-decomposed LoRA).", rich_help_panel=_LORA)] = False,
    # optimisation
    epochs: Annotated[float, typer.Option("--epochs", help="Training epochs.", rich_help_panel=_OPT)] = 3.0,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.", rich_help_panel=_OPT)] = 2e-4,
    batch_size: BatchSizeOpt = 32,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay.", rich_help_panel=_OPT)] = 0.01,
    warmup_ratio: Annotated[float, typer.Option("--warmup-ratio", help="Linear warm-up share of the steps.", rich_help_panel=_OPT)] = 0.06,
    grad_accum: Annotated[int, typer.Option("--grad-accum", help="Gradient accumulation steps.", rich_help_panel=_OPT)] = 1,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Stop after this many optimizer steps (quick checks).", rich_help_panel=_OPT)] = None,
    max_length: MaxLengthOpt = 128,
    group_by_length: Annotated[bool, typer.Option("--group-by-length", help="Batch texts of similar length (less padding: about 2x faster on CPU; order stays random per epoch).", rich_help_panel=_OPT)] = False,
    seed: SeedOpt = 0,
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
    from spectra.train.config import RoRAConfig, parse_rescale_layers, parse_target_modules
    from spectra.train.fix import run_fix

    settings = dict(
        ci=not no_ci, base_dropout=base_dropout, tr=not no_tr, lam=lam, top_k=top_k, pt=not no_pt,
        rescale_layers=parse_rescale_layers(rescale_layers), rescale_factor=rescale_factor, rescale_mode=rescale_mode,
        rank=rank, alpha=alpha,
        lora_dropout=lora_dropout, target_modules=parse_target_modules(target_modules), init=init,
        use_rslora=rslora, use_dora=dora, epochs=epochs, lr=lr, weight_decay=weight_decay,
        warmup_ratio=warmup_ratio, batch_size=batch_size, grad_accum=grad_accum, max_length=max_length, seed=seed,
    )
    if baseline is not None:
        config = RoRAConfig.baseline(baseline, **{k: v for k, v in settings.items() if k not in ("ci", "tr", "pt")})
    else:
        config = RoRAConfig(**settings)
    config.validate()

    base, *rest = hub_refs([base] + ([adapter] if adapter else []), hub)
    adapter = rest[0] if rest else None
    sink = Output(json=json_out, quiet=quiet)
    overrides: dict[str, object] = {"max_steps": max_steps} if max_steps is not None else {}
    if group_by_length:
        overrides["group_by_length"] = True
    result = run_fix(base, data, out, config=config, adapter=adapter, eval_data=eval_data, val_data=val_data,
                     trigger=trigger,
                     target_label=target_label, text_col=text_col, label_col=label_col, rescale_only=rescale_only,
                     resume=resume, overwrite=overwrite, work_dir=work_dir, device=device,
                     cache_dir=False if no_cache else None,
                     log=sink.log, **overrides)
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
