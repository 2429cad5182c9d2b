"""The fleet auditor's per-adapter cost: ΔW's statistics from r × r algebra against the QR path.

``spectra.fleet.engine.batched_rows`` computes ΔW's singular values, cosines and overlaps from
the Cholesky factors of the factors' Gram matrices (``spectral.projected_statistics``) and takes
the exact QR path (``lowrank_svd``) only where that Cholesky Q is not orthonormal. This prints the
milliseconds per SmolLM2-135M adapter (r = 8 all-linear, the fleet bench's adapters, base spectra
cached) for both paths, interleaved in one process on one thread, and their ratio:

    python bench/fleet_engine.py [--n 30] [--reps 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, machine_line  # noqa: E402
from fleet import make_fleet  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=30, help="adapters per repetition")
    p.add_argument("--reps", type=int, default=4)
    a = p.parse_args(argv)
    import torch

    import spectra.spectral as spectral
    from spectra.fleet.engine import BaseAuditor

    torch.set_num_threads(1)
    print(machine_line())
    folder = DATA / "fleet-smollm2-r8"
    base = make_fleet(folder, a.n + 1)
    auditor = BaseAuditor(str(base))
    auditor.audit("warm", str(folder / "a00000"))  # base spectra from the cache, frames stacked
    projected = spectral.projected_statistics

    def qr_only(B, A, scale, U, Vh):  # noqa: ANN001, ANN202 - every group takes the QR path
        return {}, torch.zeros(B.shape[0], dtype=torch.bool)

    ms: dict[str, list[float]] = {"projected": [], "qr": []}
    for _ in range(a.reps):
        for name, fn in (("projected", projected), ("qr", qr_only)):
            spectral.projected_statistics = fn  # batched_rows imports it from spectra.spectral per call
            t0 = time.perf_counter()
            for i in range(1, a.n + 1):
                auditor.audit(f"a{i}", str(folder / f"a{i:05d}"))
            ms[name].append((time.perf_counter() - t0) / a.n * 1000)
    spectral.projected_statistics = projected
    for name, values in ms.items():
        print(f"{name:10s} ms per adapter: " + " ".join(f"{v:.1f}" for v in values) + f"  (best {min(values):.1f})")
    print(f"QR path / projected path, best of {a.reps}: {min(ms['qr']) / min(ms['projected']):.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
