"""``spectra canary``: plant a known backdoor in a copy of the base, train the user's recipe, measure."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from spectra_cli.common import (
    DeviceOpt,
    HubOpt,
    LabelColOpt,
    OverwriteOpt,
    ResumeOpt,
    TextColOpt,
    error_boundary,
    hub_refs,
)
from spectra.canary import CanarySettings
from spectra_cli.output import JsonOpt, Output, QuietOpt
from spectra_cli.settings_options import FROM_OPTIONS, settings_options


@error_boundary
@settings_options(CanarySettings, param="settings")
def canary_command(
    base: Annotated[str, typer.Argument(help="Base model: local HF folder (safetensors) or hf://owner/name.")],
    data: Annotated[str, typer.Option("--data", help="Your clean labelled data: CSV/TSV/JSONL/Parquet, a datasets folder, or mr|cr|rt.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: calibration.json, canary.json, report.md, fix/.")] = Path("spectra-canary"),
    adapter: Annotated[str | None, typer.Option("--adapter", help="Your adapter: its adapter_config.json gives r, α, targets, rsLoRA, DoRA (lr, epochs, batch stay the flags').")] = None,
    settings: CanarySettings = FROM_OPTIONS,  # your recipe: --rank, --alpha, --epochs, --lr, --quick, ...
    text_col: TextColOpt = None,
    label_col: LabelColOpt = None,
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
    from dataclasses import asdict

    from spectra.canary import run_canary
    from spectra.train.options import RunOptions

    base, *rest = hub_refs([base] + ([adapter] if adapter else []), hub)
    if rest:  # the adapter's LoRA recipe; the optimisation settings stay the flags'
        settings = CanarySettings.from_adapter(rest[0], **{k: v for k, v in asdict(settings).items()
                                                           if k not in ("notes", "recipe_from")})
    sink = Output(json=json_out, quiet=quiet)
    result = run_canary(base, data, out, settings, text_col=text_col, label_col=label_col,
                        run=RunOptions(device=device, overwrite=overwrite, resume=resume, log=sink.log))
    r = result["result"]
    from spectra.report.tables import fmt_interval

    gamma = result["crossing_gamma"]
    where = ("no crossing (the model collapsed at every scale)" if math.isnan(gamma) else
             f"does not give way up to γ = {result['working_gamma_max']:g}" if math.isinf(gamma) else
             f"gives way at γ = {gamma:.3g}")
    verdict = ("[yellow]cannot be decided[/yellow] — " + result["undecided"] if result["survives"] is None else
               "[red]survives[/red]" if result["survives"] else "[green]is removed[/green]")
    sink.line(f"canary {verdict}: ASR {100 * r['asr']:.1f}% {fmt_interval(r.get('asr_ci'))} (floor "
              f"{100 * r['asr_floor']:.1f}%), CA {100 * r['ca']:.1f}%; {where}. report: [bold]{out / 'report.md'}[/bold], "
              f"calibration: [bold]{out / 'calibration.json'}[/bold]")
    sink.result(command="canary", out=str(out), calibration=str(out / "calibration.json"),
                **{k: result.get(k) for k in ("survives", "undecided", "result", "crossing_gamma", "search_gamma",
                                              "canary", "seconds")})
    sink.finish()
