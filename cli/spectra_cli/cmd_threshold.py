"""``spectra threshold``: the scale at which an adapter overrides a backdoor, estimated and measured."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spectra_cli.common import (
    HubOpt,
    hub_refs,
    progress,
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
def threshold_command(
    base: Annotated[str, typer.Argument(help="Base (possibly backdoored) classifier: local HF folder or hf://owner/name.")],
    adapter: Annotated[str, typer.Argument(help="PEFT LoRA adapter folder trained on that base (or hf://owner/name).")],
    data: DataOpt,
    trigger: TriggerOpt,
    target_label: TargetLabelOpt = 0,
    out: OutOpt = Path("spectra-threshold"),
    grid: Annotated[str, typer.Option("--grid", help="Multipliers γ of every LoRA module's scale to measure (1 = as trained, 0 = no LoRA update).")] = "0,0.5,1,2,4,8,16,32,64",
    head: HeadOpt = "trained",
    module: Annotated[str | None, typer.Option("--module", help="Module whose σ_pre, σ_Δ normalise the ρ's (name or regex; default: the head if trained, else nearest the output).")] = None,
    text_col: TextColOpt = None,
    label_col: LabelColOpt = None,
    batch_size: BatchSizeOpt = 32,
    max_length: MaxLengthOpt = 128,
    seed: SeedOpt = 0,
    max_samples: Annotated[int | None, typer.Option("--max-samples", min=1, help="Keep about N non-target samples (stratified subsample) for speed.")] = None,
    split_test: Annotated[float | None, typer.Option("--split-test", help="Evaluate only on the test side of a stratified split of this fraction (same seed as poison/fix).")] = None,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
    hub: HubOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Estimate ρ_bd, ρ_cl, ρ_tr and the scale s* past which the adapter forgets the backdoor
    (Proposition 4.2), and check it against a measured CA/ASR sweep of the LoRA scale multiplier γ (Figure 3).

    Examples:

      spectra threshold ./poisoned-base ./lora --data mr --trigger badnet:mn -o thr/

      spectra threshold ./base ./lora --data cr.csv --trigger 'insent:"I watched this 3D movie"' --grid 0,1,4,16,64 --max-samples 300 -o thr/
    """
    from spectra.io.output import check_output_dir
    from spectra.threshold import parse_grid, threshold

    base, adapter = hub_refs([base, adapter], hub)
    check_output_dir(out, overwrite, inputs=[base, adapter, data])
    ks = parse_grid(grid)
    sink = Output(json=json_out, quiet=quiet)
    with progress("sweeping γ", sink.console) as tick:
        report = threshold(base, adapter, data, trigger, target_label, grid=ks, module=module, text_col=text_col,
                           label_col=label_col, batch_size=batch_size, max_length=max_length, seed=seed,
                           max_samples=max_samples, split_test=split_test, device=device, head=head,
                           progress=tick)
    report.write(out, overwrite=overwrite)
    _print_summary(sink, report)
    sink.line(f"report: [bold]{out / 'report.md'}[/bold]")
    sink.result(out=str(out))
    sink.finish()


def _print_summary(sink: Output, report: object) -> None:
    from spectra.report.tables import fmt

    s = report.result.summary()  # type: ignore[attr-defined]
    sink.table("backdoor-override threshold", ("", "worst", "median", "p90"),
               [(name, *(fmt(float(s[name][q])) for q in ("worst", "median", "p90")))
                for name in ("gamma_star_bound", "gamma_star_flip")])
    sink.line(f"ρ_eff ≤ 0 for {100 * s['share_rho_eff_nonpositive']:.1f}% of samples; "
              f"threshold γ (ASR < 50%): predicted {fmt(report.predicted_threshold_gamma)}, "  # type: ignore[attr-defined]
              f"measured {fmt(report.measured_threshold_gamma)} "  # type: ignore[attr-defined]
              f"({fmt(report.measured_threshold_gamma_clean)} counting only models that still work)")  # type: ignore[attr-defined]
    sink.result(command="threshold", summary=s,
                predicted_threshold_gamma=report.predicted_threshold_gamma,  # type: ignore[attr-defined]
                measured_threshold_gamma=report.measured_threshold_gamma,  # type: ignore[attr-defined]
                measured_threshold_gamma_clean=report.measured_threshold_gamma_clean)  # type: ignore[attr-defined]
