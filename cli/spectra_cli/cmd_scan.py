"""``spectra scan``: audit a fleet of adapters (folders, manifests, hub ids) on Ray or in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spectra_cli.common import EXIT_FINDINGS, EXIT_NOTHING, console, error_boundary, progress


@error_boundary
def scan_command(
    sources: Annotated[list[str], typer.Argument(help="Folder trees (every adapter_config.json below), manifests (.csv/.jsonl/.parquet with an adapter column; optional base, revision, id) or hf://owner/name.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: adapters/ and modules/ (Parquet parts), fleet.sarif, report.md.")] = Path("spectra-scan"),
    base: Annotated[str | None, typer.Option("--base", help="The base for adapters whose manifest row names none (else each adapter_config.json's base_model_name_or_path).")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Size of W_pre's top singular subspace.")] = 32,
    engine: Annotated[str, typer.Option("--engine", help="auto (Ray from 20 adapters when installed), ray, or local.")] = "auto",
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Ray workers per base (default: the CPUs Ray sees).")] = None,
    address: Annotated[str | None, typer.Option("--address", help="An existing Ray cluster (auto, or ray://host:port); default: an embedded one.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted scan in OUT: audit only adapters without a row.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing OUT.")] = False,
    max_errors: Annotated[int | None, typer.Option("--max-errors", min=0, help="Stop after more than N error rows (the rows so far are kept).")] = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="Policy file (as spectra audit's).")] = None,
    fail_on: Annotated[str | None, typer.Option("--fail-on", help="note | warning | error (default: the policy's, else error).")] = None,
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
    from spectra.fleet.report import write_reports
    from spectra.fleet.scan import scan
    from spectra.audit.policy import resolve_policy

    gate = resolve_policy(policy, fail_on=fail_on, search_from=Path.cwd())
    con = console()
    with progress("adapters", con) as tick:
        result = scan(sources, out, base=base, top_k=top_k, engine=engine, workers=workers, address=address,
                      resume=resume, overwrite=overwrite, max_errors=max_errors, progress=tick,
                      log=lambda m: con.print(m, markup=False, highlight=False))
    findings, failing = write_reports(result.out, gate, __version__)
    rate = result.audited / result.seconds if result.seconds else 0.0
    con.print(f"scan: {result.audited:,} audited, {result.errors:,} error rows, {result.duplicates:,} duplicates, "
              f"{result.skipped:,} done before; {rate:.1f} adapters/s ({result.engine}); {len(findings):,} finding(s), "
              f"{len(failing):,} at or above {gate.fail_on}. report: [bold]{result.out / 'report.md'}[/bold]")
    if result.audited == 0 and result.skipped == 0:
        raise typer.Exit(EXIT_NOTHING)
    if failing:
        raise typer.Exit(EXIT_FINDINGS)
