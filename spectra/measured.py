"""Wall times spectra tells its users (``--help``, the README, ``bench/README.md``), in one place.

Each number was measured by the run its comment names, on the project's 2-core CPU VM;
``tests/test_measured.py`` fails when the README or a help text states another one. Change
a number here (and in those texts) only from a new measurement.
"""

from __future__ import annotations

#: ``spectra demo`` cold, in-process minutes (docs/demo-report.md, its header), and the part
#: spent poisoning the base, which a second run takes from the cache
DEMO_FULL_MIN = 41.5
DEMO_FULL_POISON_MIN = 15.0
#: ``spectra demo --quick`` cold (docs/demo-quick-report.md)
DEMO_QUICK_MIN = 4.4
#: ``spectra canary BASE --data cr --quick`` on all-MiniLM-L6-v2, cold (poisoned copy not cached),
#: whole process, with two 1-thread study workers beside it (2026-12-07): minutes, peak RSS in GB
CANARY_QUICK_MIN = 5.3
CANARY_QUICK_RSS_GB = 1.7
#: ``make test``'s pytest run once the virtual environment exists: `CI=true bash .ci/run` in a fresh
#: clone with empty caches, 2026-12-07: pytest 85.5 s (632 passed, 2 skipped), 164 s with the set-up
TEST_SUITE_MIN = 1.5


def demo_cached_min() -> float:
    """The full demo with its poisoned base cached: the cold run less its poisoning."""
    return round(DEMO_FULL_MIN - DEMO_FULL_POISON_MIN, 1)
