"""Moved to :mod:`spectra.audit.policy` in 0.3; this alias is kept for one release (CHANGELOG)."""

from spectra.audit.policy import *  # noqa: F401,F403
