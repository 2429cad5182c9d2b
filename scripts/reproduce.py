"""The reproduction study: run it (in pieces, resumable), see where it stands, render the page.

    python scripts/reproduce.py run --workers 2          # every pending run, two 1-thread workers
    python scripts/reproduce.py run --tier 1             # only tier 1 (core rows, 3 seeds)
    python scripts/reproduce.py run --only 'badnet.*lora'  # runs whose id matches a regex
    python scripts/reproduce.py status                   # done / pending per tier, wall time so far
    python scripts/reproduce.py run --plan evidence      # users' recipes: the forgetting verdict's evidence
    python scripts/reproduce.py run --plan ablation      # {CI} × {Tr} × lr {2e-4, 2e-3}, paired seeds and bases
    python scripts/reproduce.py render                   # docs/reproduction.md + figures/ + README's study block
    python scripts/reproduce.py pt-grid --work W         # every adapter on disk under Pt by depth and mode
    python scripts/reproduce.py forgetting               # docs/forgetting.md, docs/study/forgetting.csv, the audit's model
    python scripts/reproduce.py render --demo runs/demo-quick   # … and the README's demo block from that run

Results: one JSON per run in ``docs/study/results/`` (committed: the page and figures are
drawn from them alone). Work (poisoned bases, adapters, checkpoints): ``runs/study/``
(not committed; ``--work`` moves it). The recipe, the plan and each run's execution are
library code in :mod:`spectra.study`.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the research package (reproduction/) is not installed: it lives in the checkout
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "docs" / "study" / "results"
WORK = ROOT / "runs" / "study"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _select(args: argparse.Namespace):  # noqa: ANN202 - a predicate over Run
    pattern = re.compile(args.only) if args.only else None
    tiers = set(args.tier or [])
    return lambda run: (not tiers or run.tier in tiers) and (pattern is None or bool(pattern.search(run.id)))


def _plan(args: argparse.Namespace, study):  # noqa: ANN001,ANN202 - a Study, a list of Run
    """The runs ``--plan`` names: the reproduction study, or the forgetting-evidence adapters."""
    from reproduction.ablation import ablation_plan
    from spectra.study.evidence import evidence_plan
    from spectra.study.plan import study_plan

    return {"study": lambda: study_plan(study.recipe.lr_grid), "evidence": evidence_plan,
            "ablation": ablation_plan}[args.plan]()


def cmd_run(args: argparse.Namespace) -> int:
    if args.workers > 1:  # one process per worker, one thread each: both cores on independent runs
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        argv = [sys.executable, __file__, "run", "--workers", "1", "--results", str(args.results),
                "--work", str(args.work), "--plan", args.plan] + sum((["--tier", str(t)] for t in args.tier or []), []) + \
               (["--only", args.only] if args.only else [])
        procs = []
        for i in range(args.workers):
            procs.append(subprocess.Popen(argv, env=env))
            time.sleep(20)  # the first worker claims the first run before the second looks
        return max(p.wait() for p in procs)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    from spectra.study.execute import Study
    from reproduction.runner import run_plan

    study = Study(args.results, args.work, log=log)
    ran = run_plan(study, _plan(args, study), select=_select(args), log=log)
    log(f"worker {os.getpid()} done: {ran} run(s)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from spectra.study.execute import Study
    from spectra.study.plan import estimate_hours
    from reproduction.runner import held
    from spectra.study.tables import run_seconds

    study = Study(args.results, args.work, log=log)
    plan = _plan(args, study)
    docs = {r.id: json.loads(study.path(r).read_text()) for r in plan if study.done(r)}
    for tier in sorted({r.tier for r in plan}):
        runs = [r for r in plan if r.tier == tier]
        done = [r for r in runs if r.id in docs]
        wall = sum(run_seconds(docs[r.id]) for r in done)
        log(f"tier {tier}: {len(done)}/{len(runs)} done, {wall / 3600:.1f} h of run time")
    pending = [r for r in plan if r.id not in docs]
    # a seed-0 run that reuses its lr pick (same_as) trained nothing itself: not a measurement
    steps = {r.id: study.progress(r) for r in pending}
    hours, total = estimate_hours(pending, [(r, run_seconds(docs[r.id]), bool(docs[r.id].get("resumed")))
                                            for r in plan if r.id in docs and not docs[r.id].get("same_as")],
                                  done_share={i: s[0] / s[1] for i, s in steps.items() if s and s[1]})
    for r in pending:
        state = "running" if held(study.work / "locks", r) else "ready" if study.ready(r) else "waiting"
        est, at = hours[r.id], steps[r.id]
        where = f"  (checkpoint at step {at[0]:,} of {at[1]:,})" if at else ""
        print(f"  {state:8s} {'~%.1f h' % est if est is not None else '?':>7s}  {r.id}{where}")
    log(total + " (medians of the finished runs of the same kind, less what checkpoints hold; two workers share it)")
    return 0


def cmd_forgetting(args: argparse.Namespace) -> int:
    from reproduction.forgetting_page import render

    render(args.results, ROOT / "docs" / "study" / "forgetting.csv", ROOT / "docs" / "forgetting.md",
           ROOT / "figures" / "forgetting_calibration.png", ROOT / "spectra" / "forgetting_model.json", log=log,
           readme=ROOT / "README.md")
    return 0


def cmd_canary_evidence(args: argparse.Namespace) -> int:
    from reproduction.canary_evidence import run_canary_evidence

    from reproduction.canary_evidence import RECIPE_SETS

    written = run_canary_evidence(args.model, args.results, args.work / "canary-evidence",
                                  recipes=RECIPE_SETS[args.recipes], log=log)
    log(f"canary evidence on {args.model}: {len(written)} runs written to {args.results}")
    return 0


def cmd_intruders(args: argparse.Namespace) -> int:
    from reproduction.intruders import annotate

    n = annotate(args.results, args.work, log=log)
    log(f"intruders: {n} results gained PEFT's intruder count")
    return 0


def cmd_pt_grid(args: argparse.Namespace) -> int:
    from reproduction.pt_grid import run_grid

    n = run_grid(args.results, args.work, args.out, only=args.only, log=log)
    log(f"Pt grid: {n} adapters evaluated at every depth and mode, written to {args.out}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from reproduction.render import render_study

    render_study(args.results, args.doc, args.figures, log=log, readme=args.readme)
    if args.demo:
        publish_demo(args.demo, args.readme, args.figures)
    return 0


def publish_demo(run: Path, readme: Path, figures: Path) -> None:
    """Copy a finished ``spectra demo`` run's report into docs/ (its figures into
    ``figures/``, links rewritten) and rewrite the README's demo block from its demo.json."""
    import json
    import re
    import shutil

    from spectra.report.demo_markdown import readme_demo_summary
    from spectra.report.readme_blocks import update_file_blocks

    summary = json.loads((run / "demo.json").read_text(encoding="utf-8"))
    quick = bool(summary["settings"].get("quick"))
    stem, doc = ("demo_quick", ROOT / "docs" / "demo-quick-report.md") if quick else \
        ("demo", ROOT / "docs" / "demo-report.md")
    text = (run / "report.md").read_text(encoding="utf-8")
    rel = Path("..") / figures.relative_to(ROOT)

    def copy(match: re.Match[str]) -> str:
        src = run / match.group(2)
        name = f"{stem}_" + ("train_" + ("rora" if "rora" in match.group(2) else "lora") + ".png"
                             if src.name == "fig_train.png" else src.name.removeprefix("fig_"))
        shutil.copyfile(src, figures / name)
        return f"![{match.group(1)}]({rel / name})"

    text = re.sub(r"!\[([^\]]*)\]\(([^)]+\.png)\)", copy, text)
    text = text.replace("[audit/report.md](audit/report.md)", "`audit/report.md` in the run's folder")
    total = (summary.get("timings_s") or {}).get("total")
    head = (f"> A copy of `{run}/report.md`, written by `spectra demo{' --quick' if quick else ''} -o {run}` "
            f"({total / 60:.1f} min in-process on 2 CPU cores; figures copied to `figures/`) and published by "
            f"`python scripts/reproduce.py render --demo {run}`. Every reading is generated from the run's numbers.\n\n")
    doc.write_text(head + text, encoding="utf-8")
    block = "demo-quick" if quick else "demo-full"
    link = str(doc.relative_to(ROOT))
    if update_file_blocks(readme, {block: readme_demo_summary(summary, link)}):
        log(f"published {run} as {link} and rewrote the README's {block} block")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("run", "status", "render", "forgetting"):
        s = sub.add_parser(name)
        s.add_argument("--results", type=Path, default=RESULTS)
        s.add_argument("--work", type=Path, default=WORK)
        s.add_argument("--plan", choices=("study", "evidence", "ablation"), default="study",
                       help="the reproduction study, the users' recipes that label the forgetting verdict, or the "
                            "matched-lr ablation of CI and Tr")
        if name == "run":
            s.add_argument("--workers", type=int, default=1)
            s.add_argument("--tier", type=int, action="append")
            s.add_argument("--only", default=None, help="regex over run ids")
        if name == "render":
            s.add_argument("--doc", type=Path, default=ROOT / "docs" / "reproduction.md")
            s.add_argument("--figures", type=Path, default=ROOT / "figures")
            s.add_argument("--readme", type=Path, default=ROOT / "README.md",
                           help="README whose generated blocks (study-summary, demo-*) are rewritten")
            s.add_argument("--demo", type=Path, default=None,
                           help="a finished `spectra demo` output folder: rewrite the README's demo block from it")
    s = sub.add_parser("canary-evidence", help="users' recipes against a planted quick canary (labels a second "
                                               "architecture cheaply; reproduction.canary_evidence)")
    s.add_argument("--model", choices=("minilm", "smollm2"), default="smollm2")
    s.add_argument("--recipes", choices=("default", "long"), default="default",
                   help="the users' spread, or longer and hotter budgets that may remove the canary")
    s.add_argument("--results", type=Path, default=RESULTS)
    s.add_argument("--work", type=Path, default=WORK)
    s = sub.add_parser("intruders", help="PEFT's intruder-dimension count for every finetune result whose adapter "
                                         "and base are on disk (a baseline of docs/forgetting.md)")
    s.add_argument("--results", type=Path, default=RESULTS)
    s.add_argument("--work", type=Path, default=WORK)
    s = sub.add_parser("pt-grid", help="every MiniLM adapter on disk under Pt at depth {1, 3, half, all} × mode "
                                       "{match, amplify} (reproduction.pt_grid; the ablation's Pt rows)")
    s.add_argument("--results", type=Path, default=RESULTS)
    s.add_argument("--work", type=Path, default=WORK)
    s.add_argument("--out", type=Path, default=ROOT / "docs" / "study" / "pt_grid")
    s.add_argument("--only", default=None, help="regex over run ids")
    args = p.parse_args(argv)
    return {"run": cmd_run, "status": cmd_status, "render": cmd_render, "forgetting": cmd_forgetting,
            "canary-evidence": cmd_canary_evidence, "intruders": cmd_intruders,
            "pt-grid": cmd_pt_grid}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
