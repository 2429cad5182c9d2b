"""Moved to :mod:`spectra.audit.report` in 0.3; this alias is kept for one release (CHANGELOG)."""

from spectra.audit.report import COLUMNS, DEFINITIONS, AuditReport, summary_rows  # noqa: F401
