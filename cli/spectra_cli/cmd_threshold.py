"""``spectra threshold``: the scale at which an adapter overrides a backdoor, estimated and measured."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from spectra_cli.common import (
    HubOpt,
    hub_refs,
    progress,
    DataOpt,
    OutOpt,
    OverwriteOpt,
    TargetLabelOpt,
    TriggerOpt,
    error_boundary,
)
from spectra.threshold.settings import ThresholdSettings
from spectra_cli.output import JsonOpt, Output, QuietOpt
from spectra_cli.settings_options import FROM_OPTIONS, settings_options


@error_boundary
@settings_options(ThresholdSettings, param="settings")
def threshold_command(
    base: Annotated[str, typer.Argument(help="Base (possibly backdoored) classifier: local HF folder or hf://owner/name.")],
    adapter: Annotated[str, typer.Argument(help="PEFT LoRA adapter folder trained on that base (or hf://owner/name).")],
    data: DataOpt,
    trigger: TriggerOpt,
    target_label: TargetLabelOpt = 0,
    out: OutOpt = Path("spectra-threshold"),
    settings: ThresholdSettings = FROM_OPTIONS,  # --grid, --head, --module, --batch-size, ...: its fields
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
    from spectra.threshold import threshold

    base, adapter = hub_refs([base, adapter], hub)
    check_output_dir(out, overwrite, inputs=[base, adapter, data])
    sink = Output(json=json_out, quiet=quiet)
    with progress("sweeping γ", sink.console) as tick:
        report = threshold(base, adapter, data, trigger, target_label, settings, progress=tick)
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
    share = s["share_rho_eff_nonpositive"]
    sink.line((f"ρ_eff ≤ 0 for {100 * share:.1f}% of samples; " if not math.isnan(share) else "ρ_eff undefined; ") +
              f"threshold γ (ASR < 50%): predicted {fmt(report.predicted_threshold_gamma)}, "  # type: ignore[attr-defined]
              f"measured {fmt(report.measured_threshold_gamma)} "  # type: ignore[attr-defined]
              f"({fmt(report.measured_threshold_gamma_clean)} counting only models that still work)")  # type: ignore[attr-defined]
    sink.result(command="threshold", summary=s,
                predicted_threshold_gamma=report.predicted_threshold_gamma,  # type: ignore[attr-defined]
                measured_threshold_gamma=report.measured_threshold_gamma,  # type: ignore[attr-defined]
                measured_threshold_gamma_clean=report.measured_threshold_gamma_clean)  # type: ignore[attr-defined]
