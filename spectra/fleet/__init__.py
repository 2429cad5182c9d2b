"""Fleets: ``spectra scan`` audits many adapters — base spectra once per base, on Ray or in-process."""
