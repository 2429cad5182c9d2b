"""``spectra canary``: plant a known backdoor in a copy of the base, train the user's recipe, measure."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spectra.measured import CANARY_QUICK_MIN
from spectra_cli.common import (
    BatchSizeOpt,
    DeviceOpt,
    HubOpt,
    LabelColOpt,
    MaxLengthOpt,
    OverwriteOpt,
    ResumeOpt,
    SeedOpt,
    TargetLabelOpt,
    TextColOpt,
    error_boundary,
    hub_refs,
)
from spectra_cli.output import JsonOpt, Output, QuietOpt


@error_boundary
def canary_command(
    base: Annotated[str, typer.Argument(help="Base model: local HF folder (safetensors) or hf://owner/name.")],
    data: Annotated[str, typer.Option("--data", help="Your clean labelled data: CSV/TSV/JSONL/Parquet, a datasets folder, or mr|cr|rt.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: calibration.json, canary.json, report.md, fix/.")] = Path("spectra-canary"),
    adapter: Annotated[str | None, typer.Option("--adapter", help="Your adapter: its adapter_config.json gives r, α, targets, rsLoRA, DoRA (lr, epochs, batch stay the flags').")] = None,
    rank: Annotated[int, typer.Option("--rank", "-r", help="LoRA rank r (without --adapter).")] = 8,
    alpha: Annotated[float, typer.Option("--alpha", help="LoRA α (without --adapter).")] = 16.0,
    target_modules: Annotated[list[str] | None, typer.Option("--target-modules", help="Module names or all-linear (without --adapter). Default: attention query,value.")] = None,
    rslora: Annotated[bool, typer.Option("--rslora", help="Rank-stabilised scale α/√r (without --adapter).")] = False,
    dora: Annotated[bool, typer.Option("--dora", help="DoRA (without --adapter).")] = False,
    epochs: Annotated[float, typer.Option("--epochs", help="Your training epochs.")] = 3.0,
    lr: Annotated[float, typer.Option("--lr", help="Your learning rate.")] = 2e-4,
    batch_size: BatchSizeOpt = 32,
    max_length: MaxLengthOpt = 128,
    target_label: TargetLabelOpt = 0,
    quick: Annotated[bool, typer.Option("--quick", help=f"Subsample the data (1,200 proxy / 500 train / 250 test rows, length 64): {CANARY_QUICK_MIN:g} min on 2 CPU cores for MiniLM, measured cold.")] = False,
    text_col: TextColOpt = None,
    label_col: LabelColOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    hub: HubOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Would your LoRA recipe override a backdoor in this base, when you do not know its trigger?

    Plants a canary backdoor (a fresh rare-token trigger, the paper's clean-label recipe) in a cached
    copy of BASE using part of your data, fine-tunes your recipe on another part, and reports whether
    the canary survives (ASR with its interval, floor, collapse) and the LoRA scale γ at which it gives
    way. OUT/calibration.json makes later audits on this base specific to it:
    spectra audit BASE ADAPTER --calibration OUT/calibration.json. Resumable (--resume).

    Examples:

      spectra canary ./base --data reviews.csv --adapter ./my-lora --epochs 3 --lr 2e-4 -o canary/

      spectra canary ./base --data cr --rank 16 --target-modules all-linear --quick -o canary-quick/
    """
    from spectra.canary import CanarySettings, run_canary
    from spectra.train.config import parse_target_modules

    base, *rest = hub_refs([base] + ([adapter] if adapter else []), hub)
    common = dict(epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length, seed=seed,
                  target_label=target_label, quick=quick)
    if rest:
        settings = CanarySettings.from_adapter(rest[0], **common)
    else:
        settings = CanarySettings(rank=rank, alpha=alpha, target_modules=parse_target_modules(target_modules),
                                  use_rslora=rslora, use_dora=dora, **common)
    sink = Output(json=json_out, quiet=quiet)
    result = run_canary(base, data, out, settings, text_col=text_col, label_col=label_col, device=device,
                        overwrite=overwrite, resume=resume, log=sink.log)
    r = result["result"]
    sink.line(f"canary {'[red]survives[/red]' if result['survives'] else '[green]is removed[/green]'}: "
              f"ASR {100 * r['asr']:.1f}% (floor {100 * r['asr_floor']:.1f}%), CA {100 * r['ca']:.1f}%; gives way at "
              f"γ = {result['crossing_gamma']:.3g}. report: [bold]{out / 'report.md'}[/bold], calibration: "
              f"[bold]{out / 'calibration.json'}[/bold]")
    sink.result(command="canary", out=str(out), calibration=str(out / "calibration.json"),
                **{k: result[k] for k in ("survives", "result", "crossing_gamma", "search_gamma", "canary", "seconds")})
    sink.finish()
