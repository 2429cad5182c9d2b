"""``spectra audit``: per-module spectral audit of one or more adapters against a base."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from spectra.audit.settings import AuditSettings
from spectra_cli.common import (
    EXIT_FINDINGS,
    EXIT_OK,
    HubOpt,
    OutOpt,
    OverwriteOpt,
    RevisionOpt,
    error_boundary,
    hub_refs,
    progress,
)
from spectra_cli.output import JsonOpt, Output, QuietOpt
from spectra_cli.settings_options import FROM_OPTIONS, settings_options


@error_boundary
@settings_options(AuditSettings, param="settings")
def audit_command(
    base: Annotated[str, typer.Argument(help="Base model: local HF folder (safetensors) or hf://owner/name.")],
    adapters: Annotated[list[str], typer.Argument(help="PEFT LoRA folder(s), fine-tuned model folder(s) or hf://owner/name; several are compared side by side; NAME=PATH names one in the reports.")],
    out: OutOpt = Path("spectra-audit"),
    settings: AuditSettings = FROM_OPTIONS,  # --top-k, --top-j, --device, --dtype, --exact, --modules, ...
    max_ratio: Annotated[float | None, typer.Option("--max-ratio", help="Policy rule 'ratio': a finding when some module's σ_pre/σ_Δ exceeds this (severity error unless --policy says otherwise).")] = None,
    max_cos: Annotated[float | None, typer.Option("--max-cos", help="Policy rule 'cos': a finding when some module's max |cos| exceeds this (severity error unless --policy says otherwise).")] = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="Policy file: spectra.toml, or a pyproject.toml with \\[tool.spectra] (default: ./spectra.toml or ./pyproject.toml when they hold one).")] = None,
    fail_on: Annotated[str | None, typer.Option("--fail-on", help="Exit 1 on findings of this severity or above: note | warning | error (default: the policy's, else error).")] = None,
    revision: RevisionOpt = None,
    adapter_revision: Annotated[str | None, typer.Option("--adapter-revision", help="Hub revision (branch, tag or commit) of hub-id ADAPTERS.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the base-spectrum cache.")] = False,
    no_figures: Annotated[bool, typer.Option("--no-figures", help="Skip fig_ratio.png and fig_alignment.png (and matplotlib): for CI gates that read audit.json / audit.sarif.")] = False,
    calibration: Annotated[Path | None, typer.Option("--calibration", help="A spectra canary calibration.json measured on this BASE: the forgetting verdict places each adapter against the canary's crossing (evidence: canary).")] = None,
    overwrite: OverwriteOpt = False,
    hub: HubOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Audit adapters spectrally: σ_pre/σ_Δ (Figure 1) and alignment with W_pre's top-k (Figure 2).

    Writes audit.csv, audit.json, audit.sarif (policy findings, SARIF 2.1.0), two figures and
    report.md. Exit codes, as scanners use them: 0 audited, policy holds; 1 audited, a policy
    was broken (findings at or above --fail-on); 2 spectra could not do its job (bad input,
    usage error, internal error); 3 nothing was audited (no module matched --modules).

    Examples:

      spectra audit ./base ./lora-adapter -o audit/

      spectra audit ./base ./lora ./rora -o compare/ --max-ratio 100   # exit 1 if any module is 100x weaker

      spectra audit hf://meta-llama/Llama-3.2-1B hf://org/my-lora --revision main --policy spectra.toml -o audit/

      spectra audit ./base before=./lora after=./rora -o compare/     # names in the reports

      spectra audit ./base ./lora -o audit/ --json | jq .findings   # one JSON document on stdout
    """
    from spectra.report.figure_worker import FigureWorker

    # started before anything else, so that it imports matplotlib beside torch's import
    with FigureWorker() if not no_figures else contextlib.nullcontext() as worker:
        from spectra.audit import audit
        from spectra.io.output import check_output_dir
        from spectra.audit.policy import resolve_policy

        names, paths = split_names(adapters)
        base, *paths = hub_refs([base, *paths], hub)
        check_output_dir(out, overwrite, inputs=[base, *paths])
        gate = resolve_policy(policy, max_ratio=max_ratio, max_cos=max_cos, fail_on=fail_on, search_from=Path.cwd())
        sink = Output(json=json_out, quiet=quiet)
        cal = None
        if calibration is not None:  # a bad file is refused before minutes of audit, not after
            from spectra.canary import load_calibration

            cal = load_calibration(calibration)
        with progress("auditing modules", sink.console) as tick:
            report = audit(base, paths, settings, names=names, cache_dir=False if no_cache else None,
                           revision=revision, adapter_revision=adapter_revision, progress=tick)
        if cal is not None:
            report.set_calibration(cal, str(calibration))
        failing = report.apply_policy(gate)
        # audit.sarif is on disk before a non-zero exit
        report.write(out, overwrite=overwrite, figures=not no_figures, figure_worker=worker)
        _print_summary(sink, report)
        verdicts = report.forgetting()
        for label, block in verdicts.items():  # said on the terminal too: a silent gap read as "no risk"
            p = block.get("p_survives")
            why = f" — {block['reason']}" if block.get("reason") else ""
            sink.line(f"forgetting · {label} ({block['evidence']}): "
                      + (f"P(survives) {p:.2f}, " if p is not None else "") + f"{block['estimate']}{why}", markup=False)
        sink.line(f"report: [bold]{out / 'report.md'}[/bold]; findings: [bold]{out / 'audit.sarif'}[/bold]")
        if report.findings:
            colour = "red" if failing else "yellow"
            sink.line(f"[{colour}]policy: {len(report.findings)} finding(s), {len(failing)} at or above "
                      f"{gate.fail_on}[/{colour}]")
            for f in report.findings[:10]:
                sink.line(f"  [{f.severity}] {f.message()}", markup=False)
        for kind, text in report.notices:
            typer.echo(f"{kind}: {text}", err=True)
        sink.result(command="audit", out=str(out), summary=report.summary_rows(), fail_on=gate.fail_on,
                    findings=[f.to_dict() for f in report.findings], failing=len(failing),
                    forgetting={label: {k: v for k, v in b.items() if k != "features"} for label, b in verdicts.items()},
                    notices=[{"kind": kind, "text": text} for kind, text in report.notices])
        code = EXIT_FINDINGS if report.exit_code else EXIT_OK  # decided once, in apply_policy; SARIF records the same
        sink.finish(code)
        if code:
            raise typer.Exit(code)


def split_names(args: list[str]) -> tuple[list[str] | None, list[str]]:
    """``NAME=PATH`` arguments → (names, paths); a plain path is named by the library (its folder).

    An argument that exists as a path is a path even when it holds ``=``."""
    import re

    names, paths = [], []
    for arg in args:
        name, sep, path = arg.partition("=")
        if sep and re.fullmatch(r"[\w.+-]{1,64}", name) and path and not Path(arg).exists():
            names.append(name)
            paths.append(path)
        else:
            names.append(None)
            paths.append(arg)
    if not any(n is not None for n in names):
        return None, paths
    return names, paths  # type: ignore[return-value]


def _print_summary(sink: Output, report: object) -> None:
    sink.table("spectral audit", ("adapter", "modules", "σ_pre/σ_Δ median", "σ_pre/σ_Δ min", "max|cos| median L/R",
                                  "overlap median"),
               [(row["adapter"], str(row["modules"]), f"{row['ratio_median']:.3g}", f"{row['ratio_min']:.3g}",
                 f"{row['cos_left_median']:.2f} / {row['cos_right_median']:.2f}", f"{row['overlap_median']:.3f}")
                for row in report.summary_rows()])  # type: ignore[attr-defined]
