"""The audit: ``compute`` (``audit()`` → :class:`AuditReport`, ``module_row``, the base's top-k),
``report`` (:class:`AuditReport`: rows, summary, the policy applied, the files it writes) and
``policy`` (the gate's rules, findings and policy files) — the layout of :mod:`spectra.threshold`.

``from spectra.audit import audit`` works as before; names resolve lazily, so importing the
policy (which the CLI does before any work) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spectra._lazy import lazy_exports

_PUBLIC = {
    "audit": "spectra.audit.compute",
    "AuditSettings": "spectra.audit.settings",
    "module_row": "spectra.audit.compute",
    "AuditReport": "spectra.audit.report",
    "COLUMNS": "spectra.audit.report",
    "DEFINITIONS": "spectra.audit.report",
    "summary_rows": "spectra.audit.report",
    "Policy": "spectra.audit.policy",
    "Finding": "spectra.audit.policy",
    "RULES": "spectra.audit.policy",
    "load_policy": "spectra.audit.policy",
    "resolve_policy": "spectra.audit.policy",
}
#: the helpers the fleet engine and the tests reach (not public API)
_INTERNAL = {"_resolve": "spectra.audit.compute", "_base_spectra": "spectra.audit.compute"}

if TYPE_CHECKING:  # pragma: no cover
    from spectra.audit.compute import audit, module_row
    from spectra.audit.policy import RULES, Finding, Policy, load_policy, resolve_policy
    from spectra.audit.report import COLUMNS, DEFINITIONS, AuditReport, summary_rows
    from spectra.audit.settings import AuditSettings

__getattr__, _ = lazy_exports(__name__, {**_PUBLIC, **_INTERNAL})
__all__ = sorted(_PUBLIC)
