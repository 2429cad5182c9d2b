"""The per-base cost a fleet pays once: the certified top-k against a full SVD, over several
spectrum shapes (issue: "the per-base cost stays at the limit").

A synthetic LLaMA (hidden 2048, intermediate 5632, 8 layers, fp16, r = 16 all-linear, 56
modules; :mod:`spectra.testing.synthetic`) with singular values σ_k ∝ k^(−e) for e in
``--exponents`` (pretrained weights sit near 0.5; 1.0 is steep, 0.3 flat and hard to certify),
and one spiked spectrum (96 power-law spikes over Marchenko–Pastur noise). For each: a whole
``spectra audit --no-cache`` process, default against ``--exact``, side by side; the speed-up,
and the largest σ and cosine disagreement (targets: ≥ 12×, σ within 1e-4 relative, cosines
within 1e-3).

    python bench/spectrum_shapes.py [--exponents 0.3,0.5,0.7,1.0] [--no-spiked] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, csv_rows, machine_line, run_cli  # noqa: E402

from spectra.testing.accuracy import compare_rows  # noqa: E402
from spectra.testing.synthetic import Shape, find_or_build  # noqa: E402

TARGET = 12.0


def audit(base: Path, adapter: Path, out: Path, *extra: str) -> tuple[dict, list[dict]]:
    r = run_cli(["audit", str(base), str(adapter), "-o", str(out), "--no-cache", "--no-figures", "--overwrite", *extra])
    if r["rc"] != 0:
        raise RuntimeError(f"audit failed ({r['rc']}): {r['stderr'][-600:]}")
    return r, csv_rows(out / "audit.csv")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exponents", default="0.3,0.5,0.7,1.0")
    p.add_argument("--no-spiked", action="store_true")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    print(machine_line())
    shapes = [(f"power law e = {e}", Shape(layers=8, exponent=float(e))) for e in a.exponents.split(",")]
    if not a.no_spiked:
        shapes.append(("spiked: 96 spikes (e = 0.5) over noise", Shape(layers=8, spikes=96)))
    rows, failures = [], 0
    with tempfile.TemporaryDirectory(prefix="spectra-shapes-") as tmp:
        for name, shape in shapes:
            base, adapter, note = find_or_build(shape, DATA)
            for f in sorted(base.glob("*.safetensors")):  # into the page cache: both runs read it warm
                f.read_bytes()
            d, d_rows = audit(base, adapter, Path(tmp) / "d")
            x, x_rows = audit(base, adapter, Path(tmp) / "x", "--exact")
            acc = compare_rows(d_rows, x_rows)
            speed = x["wall_s"] / d["wall_s"]
            ok = speed >= TARGET and acc["sigma_rel"] <= 1e-4 and acc["cos_abs"] <= 1e-3
            failures += not ok
            rows.append({"spectrum": name, "default_s": d["wall_s"], "exact_s": x["wall_s"], "speedup": speed,
                         "sigma_rel": acc["sigma_rel"], "cos_abs": acc["cos_abs"], "ok": ok})
            print(f"{name:40s} default {d['wall_s']:6.1f} s  exact {x['wall_s']:6.1f} s  {speed:5.1f}×  "
                  f"σ {acc['sigma_rel']:.1e}  cos {acc['cos_abs']:.1e}  {'met' if ok else 'MISSED'}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    print(f"{len(rows) - failures} of {len(rows)} shapes meet ≥ {TARGET:g}× with σ ≤ 1e-4 and cos ≤ 1e-3")
    return 0


if __name__ == "__main__":
    sys.exit(main())
