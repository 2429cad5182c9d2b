"""``spectra demo``: the whole story on the real MiniLM model and real MR/CR data, on CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spectra.measured import DEMO_FULL_MIN, DEMO_QUICK_MIN, demo_cached_min
from spectra_cli.common import OverwriteOpt, SeedOpt, error_boundary
from spectra_cli.output import JsonOpt, Output, QuietOpt


@error_boundary
def demo_command(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default: spectra-demo, or the next free spectra-demo-N).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help=f"A {DEMO_QUICK_MIN:g}-minute subset of the same recipe (subsampled data, 5 epochs; measured on 2 CPU cores); its report says what that budget cannot decide.")] = False,
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """The reproduction study's recipe on one attack and seed: poison MiniLM clean-label on rt (BadNet) →
    LoRA and RoRA on CR (20 epochs) → audit → Figure 3 sweep → one report with readings from the numbers.

    Examples:

      spectra demo            # full run: {full} min on 2 CPU cores the first time, {cached} min once the poisoned base is cached

      spectra demo --quick    # {quick} min
    """
    from spectra.demo import run_demo

    sink = Output(json=json_out, quiet=quiet)
    final = run_demo(out, quick=quick, seed=seed, overwrite=overwrite, log=sink.log)
    _print_summary(sink, final)
    sink.finish()


def _pct(value: float | None) -> str:
    from spectra.report.tables import fmt_pct

    return fmt_pct(value, suffix="")


# the times come from one measured source (spectra.measured), never typed here
demo_command.__doc__ = (demo_command.__doc__ or "").format(full=f"{DEMO_FULL_MIN:g}", cached=f"{demo_cached_min():g}",
                                                            quick=f"{DEMO_QUICK_MIN:g}")


def _print_summary(sink: Output, final: Path) -> None:
    """The story in one screen: CA/ASR per model, predicted vs measured threshold, where the report is."""
    import json

    from spectra.report.demo_markdown import demo_readings
    from spectra.report.tables import fmt_multiplier

    summary = json.loads((final / "demo.json").read_text(encoding="utf-8"))
    poisoning = summary["poisoning"]
    how = poisoning["mode"] + (f" (fallback from {poisoning['fallback_from']})" if poisoning.get("fallback_from") else "")
    sink.table(f"CR test, trigger {summary['trigger']} → label {summary['target_label']}; base poisoned {how}",
               ("model", "CA %", "ASR %", "Δ", "ASR floor %", "collapsed"),
               [(row["model"], _pct(row["ca"]), _pct(row["asr"]), _pct(row["delta"]), _pct(row["asr_floor"]),
                 "[red]yes[/red]" if row.get("collapsed") else "") for row in summary["eval"]],
               right=("CA %", "ASR %", "Δ", "ASR floor %", "collapsed"))
    for name, t in summary["threshold"].items():
        # the 0.1 name is the fallback only (a .get default is evaluated even when the new key is there)
        measured = t["measured_crossing_gamma"] if "measured_crossing_gamma" in t else t["measured_threshold_gamma"]
        sink.line(f"{name}: ASR crosses 50% at γ = "
                  f"{'never on the grid' if measured is None else fmt_multiplier(measured)} (measured); predicted "
                  f"{fmt_multiplier(t['predicted_threshold_gamma'])} (Prop. 4.2 linear)"
                  + (f", {fmt_multiplier(t['search_threshold_gamma'])} (search)" if t.get("search_threshold_gamma") is not None else ""))
    for sentence in demo_readings(summary):
        sink.line(f"• {sentence}")
    sink.line(f"report: [bold]{final / 'report.md'}[/bold]")
    sink.result(command="demo", out=str(final), eval=summary["eval"], threshold=summary["threshold"],
                readings=demo_readings(summary))
