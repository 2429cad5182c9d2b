"""``spectra scan``: audit a fleet of adapters (folders, manifests, hub ids) on Ray or in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spectra.fleet.settings import ScanSettings
from spectra_cli.common import error_boundary, progress
from spectra_cli.output import JsonOpt, Output, QuietOpt
from spectra_cli.settings_options import FROM_OPTIONS, settings_options


@error_boundary
@settings_options(ScanSettings, param="settings")
def scan_command(
    sources: Annotated[list[str], typer.Argument(help="Folder trees (every adapter_config.json below), manifests (.csv/.jsonl/.parquet with an adapter column; optional base, revision, id) or hf://owner/name.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: adapters/ and modules/ (Parquet parts), fleet.sarif, report.md.")] = Path("spectra-scan"),
    settings: ScanSettings = FROM_OPTIONS,  # --base, --top-k, --engine, --workers, --address, --max-errors
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted scan in OUT: audit only adapters without a row.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing OUT.")] = False,
    policy: Annotated[Path | None, typer.Option("--policy", help="Policy file (as spectra audit's).")] = None,
    fail_on: Annotated[str | None, typer.Option("--fail-on", help="note | warning | error (default: the policy's, else error).")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Audit a fleet of LoRA adapters: each base's spectra once, adapters streamed, nothing lost.

    A corrupt, hostile or mismatched adapter is an error row with its reason and the scan goes
    on; it is also an 'unaudited' finding (severity error), so the gate never passes over it.
    Ctrl-C or a killed worker leaves every finished row in OUT; --resume audits the rest. Exit
    codes as spectra audit's, for the fleet: 0 no finding at --fail-on, 1 findings, 2 the scan
    could not run, 3 nothing audited.

    Examples:

      spectra scan ./adapters -o scan/ --base ./base-model

      spectra scan fleet.csv -o scan/ --resume

      spectra scan ./adapters -o scan/ --address auto --workers 8      # an existing Ray cluster
    """
    from spectra._version import __version__
    from spectra.audit.policy import resolve_policy
    from spectra.fleet.report import scan_notices, write_reports
    from spectra.fleet.scan import scan

    gate = resolve_policy(policy, fail_on=fail_on, search_from=Path.cwd())
    sink = Output(json=json_out, quiet=quiet)
    with progress("adapters", sink.console) as tick:
        result = scan(sources, out, settings, resume=resume, overwrite=overwrite, progress=tick, log=sink.log)
    verdict = write_reports(result.out, gate, __version__)
    findings, failing = verdict.findings, verdict.failing
    for kind, text in scan_notices(result.out, gate):
        typer.echo(f"{kind}: {text}", err=True)
    rate = result.audited / result.seconds if result.seconds else 0.0
    sink.line(f"scan: {result.audited:,} audited, {result.errors:,} error rows, {result.duplicates:,} duplicates, "
              f"{result.skipped:,} done before; {rate:.1f} adapters/s ({result.engine}); {len(findings):,} finding(s), "
              f"{len(failing):,} at or above {gate.fail_on}. report: [bold]{result.out / 'report.md'}[/bold]")
    code = verdict.exit_code  # decided once, in the library: fleet.sarif records the same
    sink.result(command="scan", out=str(result.out), audited=result.audited, errors=result.errors,
                duplicates=result.duplicates, skipped=result.skipped, engine=result.engine,
                adapters_per_s=rate, findings=len(findings), failing=len(failing), fail_on=gate.fail_on)
    sink.finish(code)
    if code:
        raise typer.Exit(code)
