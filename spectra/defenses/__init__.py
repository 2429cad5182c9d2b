"""Baseline defences the study compares RoRA with: ONION (an inference-time word filter,
:mod:`spectra.defenses.onion`) and PEFT's intruder-dimension reduction of a trained LoRA
adapter (:mod:`spectra.defenses.intruder`)."""
