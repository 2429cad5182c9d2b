"""Fixtures for tests and benchmarks that other projects can use too: synthetic checkpoints
with known spectra (:mod:`spectra.testing.synthetic`) and accuracy checks of the spectral core
against exact references (:mod:`spectra.testing.accuracy`). Nothing here runs at import."""
