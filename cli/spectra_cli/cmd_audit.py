"""``spectra audit``: per-module spectral audit of one or more adapters against a base."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spectra_cli.common import (
    AllowPickleOpt,
    DeviceOpt,
    DtypeOpt,
    OutOpt,
    OverwriteOpt,
    TopKOpt,
    console,
    error_boundary,
)


@error_boundary
def audit_command(
    base: Annotated[str, typer.Argument(help="Base model: local HF folder (safetensors) or hub id.")],
    adapters: Annotated[list[Path], typer.Argument(help="PEFT LoRA folder(s) or fine-tuned model folder(s); several are compared side by side.")],
    out: OutOpt = Path("spectra-audit"),
    top_k: TopKOpt = 32,
    top_j: Annotated[int, typer.Option("--top-j", min=1, help="Also report max |cos| over ΔW's top-j vectors.")] = 1,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    exact: Annotated[bool, typer.Option("--exact", help="Full SVD of every base weight (the reference path).")] = False,
    modules: Annotated[list[str] | None, typer.Option("--modules", help="Regex on module names or exact module type; repeatable.")] = None,
    max_ratio: Annotated[float | None, typer.Option("--max-ratio", help="Policy gate: exit 2 when some module's σ_pre/σ_Δ exceeds this.")] = None,
    max_cos: Annotated[float | None, typer.Option("--max-cos", help="Policy gate: exit 2 when some module's max |cos| exceeds this.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the base-spectrum cache.")] = False,
    overwrite: OverwriteOpt = False,
    allow_pickle: AllowPickleOpt = False,
) -> None:
    """Audit adapters spectrally: σ_pre/σ_Δ (Figure 1) and alignment with W_pre's top-k (Figure 2).

    Examples:

      spectra audit ./base ./lora-adapter -o audit/

      spectra audit ./base ./lora ./rora -o compare/ --max-ratio 100   # exit 2 if any module is 100x weaker
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from spectra.audit import audit
    from spectra.io.output import check_output_dir

    check_output_dir(out, overwrite)
    con = console()
    with Progress(TextColumn("[bold]auditing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=con, transient=True) as bar:
        task = bar.add_task("audit", total=None)
        report = audit(base, [str(a) for a in adapters], top_k=top_k, top_j=top_j, device=device, dtype=dtype,
                       exact=exact, modules=modules, cache_dir=False if no_cache else None,
                       allow_pickle=allow_pickle,
                       progress=lambda done, total: bar.update(task, completed=done, total=total))
    report.write(out, overwrite=overwrite)
    _print_summary(con, report)
    con.print(f"report: [bold]{out / 'report.md'}[/bold]")
    broken = report.violations(max_ratio, max_cos)
    if len(broken):
        con.print(f"[red]policy: {len(broken)} module(s) break --max-ratio/--max-cos[/red]")
        for _, row in broken.head(10).iterrows():
            con.print(f"  {row['adapter']} {row['module']}: ratio {row['ratio']:.3g}, "
                      f"cos {max(row['cos_max_left'], row['cos_max_right']):.3f}")
        raise typer.Exit(2)


def _print_summary(con: object, report: object) -> None:
    from rich.table import Table

    table = Table(title="spectral audit", show_lines=False)
    for col in ("adapter", "modules", "σ_pre/σ_Δ median", "σ_pre/σ_Δ min", "max|cos| median L/R", "overlap median"):
        table.add_column(col)
    for row in report.summary().to_dict("records"):  # type: ignore[attr-defined]
        table.add_row(row["adapter"], str(row["modules"]), f"{row['ratio_median']:.3g}", f"{row['ratio_min']:.3g}",
                      f"{row['cos_left_median']:.2f} / {row['cos_right_median']:.2f}", f"{row['overlap_median']:.3f}")
    con.print(table)  # type: ignore[attr-defined]
