"""Whole ``spectra fix --rescale-only --eval`` and ``spectra eval`` processes, this checkout against an
earlier commit, interleaved in one run (issue 28: "one open, one pass").

The earlier commit runs from a temporary ``git worktree`` with the same interpreter (its ``spectra``
and ``spectra_cli`` first on ``PYTHONPATH``), so both sides share the Python, torch and the machine
minute by minute; each repeat runs the two sides back to back, alternating which goes first.

    python bench/fix_eval_process.py --base BASE --adapter LORA --data test.csv --trigger badnet:mn \\
        --before 38d76c2 --repeat 5

Prints, per command, each side's median wall time and the ratio before/after. Pause other work first.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(src: Path, args: list[str], out: Path) -> float:
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{src / 'cli'}", "OMP_NUM_THREADS": "2"}
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "from spectra_cli.app import main; main()", *args, "-o", str(out),
                           "--quiet"], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{src}: {' '.join(args[:1])} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return wall


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True)
    p.add_argument("--adapter", required=True)
    p.add_argument("--data", required=True, help="evaluation data (a CSV with text,label)")
    p.add_argument("--trigger", required=True)
    p.add_argument("--before", default="38d76c2", help="the earlier commit")
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    commands = {
        "fix --rescale-only --eval": ["fix", a.base, "--adapter", a.adapter, "--rescale-only", "--eval", a.data,
                                      "--trigger", a.trigger, "--device", "cpu", "--no-cache"],
        "eval": ["eval", a.base, a.adapter, "--data", a.data, "--trigger", a.trigger, "--device", "cpu"],
    }
    with tempfile.TemporaryDirectory(prefix="spectra-bench-") as tmp:
        old = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), a.before], check=True,
                       capture_output=True)
        try:
            sides = {"before": old, "after": ROOT}
            walls: dict[tuple[str, str], list[float]] = {}
            for i in range(a.repeat):
                for name, args in commands.items():
                    order = list(sides.items()) if i % 2 == 0 else list(sides.items())[::-1]
                    for side, src in order:
                        w = _run(src, args, Path(tmp) / f"out-{side}")
                        walls.setdefault((name, side), []).append(w)
                        print(f"  {i + 1}/{a.repeat} {name:27s} {side:6s} {w:6.2f} s", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)
    print(f"\nmedian wall of {a.repeat} interleaved whole processes ({a.before} = before, this checkout = after):")
    for name in commands:
        b, f = statistics.median(walls[(name, "before")]), statistics.median(walls[(name, "after")])
        print(f"  {name:27s} before {b:6.2f} s   after {f:6.2f} s   before/after {b / f:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
