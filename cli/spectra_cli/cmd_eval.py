"""``spectra eval``: CA, ASR, Δ with confidence intervals, the ASR floor and a collapse flag."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from spectra_cli.common import (
    HubOpt,
    hub_refs,
    DataOpt,
    OutOpt,
    OverwriteOpt,
    TargetLabelOpt,
    TriggerOpt,
    error_boundary,
    progress,
)
from spectra.eval.settings import EvalSettings
from spectra_cli.output import JsonOpt, Output, QuietOpt
from spectra_cli.settings_options import FROM_OPTIONS, settings_options


@error_boundary
@settings_options(EvalSettings, param="settings")
def eval_command(
    model: Annotated[str, typer.Argument(help="Classifier: local HF model folder (safetensors) or hf://owner/name.")],
    data: DataOpt,
    trigger: TriggerOpt,
    adapter: Annotated[str | None, typer.Argument(help="Optional PEFT LoRA adapter folder (or hf://owner/name) to apply.")] = None,
    target_label: TargetLabelOpt = 0,
    out: OutOpt = Path("spectra-eval"),
    settings: EvalSettings = FROM_OPTIONS,  # --scale, --head, --split-test, --batch-size, ...: its fields
    overwrite: OverwriteOpt = False,
    hub: HubOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Clean accuracy, attack success rate and Δ = CA − ASR, with 95% intervals, the ASR
    floor (non-target texts already predicted as the target without the trigger) and a
    collapse flag. Writes OUT/eval.json and OUT/report.md.

    Triggers: badnet:WORD, insent:"SENTENCE", options after @ (count=N, position=random|boundary|start|end).

    Examples:

      spectra eval ./poisoned-base --data mr --trigger badnet:mn --target-label 0 -o eval-base/

      spectra eval ./poisoned-base ./lora --data cr.csv --trigger 'insent:"I watched this 3D movie"' -o eval-lora/

      spectra eval ./base ./lora --data reviews.parquet --text-col body --label-col stars --trigger badnet:cf@count=2 --scale 4 -o eval-k4/
    """
    from spectra.data.triggers import parse_trigger
    from spectra.eval.pipeline import run_eval
    from spectra.io.output import check_output_dir

    model, *rest = hub_refs([model] + ([adapter] if adapter else []), hub)
    adapter = rest[0] if rest else None
    check_output_dir(out, overwrite, inputs=[model, adapter, data])
    trig = parse_trigger(trigger)  # a bad spec fails before any loading
    sink = Output(json=json_out, quiet=quiet)
    with progress("predictions (batches)", sink.console) as tick:  # a bar on a terminal, ETA lines in a log
        result = run_eval(model, adapter, data, trig, target_label, settings, progress=tick)
    result.write(out, overwrite=overwrite)
    _print_summary(sink, result)
    sink.line(f"wrote [bold]{out / 'eval.json'}[/bold] and [bold]{out / 'report.md'}[/bold]")
    sink.result(command="eval", out=str(out), **{k: result.to_dict().get(k) for k in (
        "ca", "ca_ci", "asr", "asr_ci", "delta", "delta_ci", "asr_floor", "asr_floor_ci", "collapsed", "n_clean",
        "n_triggered", "warnings")})
    sink.finish()

def _print_summary(sink: Output, r: Any) -> None:
    from spectra.report.tables import fmt_interval as ci
    from spectra.report.tables import fmt_pct as pct

    sink.table(f"spectra eval · {r.trigger} → {r.label_text(r.target_label)}", ("metric", "value", "95% interval", "n"),
               [("CA", pct(r.ca), ci(r.ca_ci), f"{r.n_clean:,}"),
                ("ASR", pct(r.asr), ci(r.asr_ci), f"{r.n_triggered:,}"),
                ("Δ = CA − ASR", f"{100 * r.delta:+.1f} pts", f"[{100 * r.delta_ci[0]:+.1f}, {100 * r.delta_ci[1]:+.1f}]", ""),
                ("ASR floor", pct(r.asr_floor), ci(r.asr_floor_ci), f"{r.n_triggered:,}"),
                ("collapsed", "yes" if r.collapsed else "no", "", "")],
               right=("value", "95% interval", "n"))
    from rich.markup import escape

    for w in r.warnings:
        sink.line(f"[yellow]warning:[/yellow] {escape(w)}")
