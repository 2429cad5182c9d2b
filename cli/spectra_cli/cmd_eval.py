"""``spectra eval``: CA, ASR, Δ with confidence intervals, the ASR floor and a collapse flag."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from spectra_cli.common import (
    HubOpt,
    hub_refs,
    AllowPickleOpt,
    BatchSizeOpt,
    DataOpt,
    DeviceOpt,
    HeadOpt,
    LabelColOpt,
    MaxLengthOpt,
    OutOpt,
    OverwriteOpt,
    SeedOpt,
    TargetLabelOpt,
    TextColOpt,
    TriggerOpt,
    error_boundary,
)
from spectra_cli.output import JsonOpt, Output, QuietOpt


@error_boundary
def eval_command(
    model: Annotated[str, typer.Argument(help="Classifier: local HF model folder (safetensors) or hf://owner/name.")],
    data: DataOpt,
    trigger: TriggerOpt,
    adapter: Annotated[str | None, typer.Argument(help="Optional PEFT LoRA adapter folder (or hf://owner/name) to apply.")] = None,
    target_label: TargetLabelOpt = 0,
    out: OutOpt = Path("spectra-eval"),
    text_col: TextColOpt = None,
    label_col: LabelColOpt = None,
    scale: Annotated[float, typer.Option("--scale", help="Adapter strength γ: every LoRA scaling × γ (1 = as trained, 0 = no LoRA update); see --head.")] = 1.0,
    head: HeadOpt = "trained",
    split_test: Annotated[float | None, typer.Option("--split-test", help="Evaluate only on the test side of a stratified split of this fraction (same seed as poison/fix).")] = None,
    batch_size: BatchSizeOpt = 64,
    max_length: MaxLengthOpt = 128,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
    hub: HubOpt = False,
    allow_pickle: AllowPickleOpt = False,
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
    result = run_eval(model, adapter, data, trig, target_label, scale=scale, head=head, text_col=text_col,
                      label_col=label_col, split_test=split_test, seed=seed, batch_size=batch_size,
                      max_length=max_length, device=device, allow_pickle=allow_pickle,
                      progress=sink.console.is_terminal)
    result.write(out, overwrite=overwrite)
    _print_summary(sink, result)
    sink.line(f"wrote [bold]{out / 'eval.json'}[/bold] and [bold]{out / 'report.md'}[/bold]")
    sink.result(command="eval", out=str(out), **{k: result.to_dict().get(k) for k in (
        "ca", "ca_ci", "asr", "asr_ci", "delta", "delta_ci", "asr_floor", "asr_floor_ci", "collapsed", "n_clean",
        "n_triggered", "warnings")})
    sink.finish()

def _print_summary(sink: Output, r: Any) -> None:
    def pct(x: float) -> str:
        return f"{100 * x:.1f}%"

    def ci(c: Any) -> str:
        return f"[{100 * c[0]:.1f}, {100 * c[1]:.1f}]"

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
