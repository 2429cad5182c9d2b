"""Running classifiers on text and scoring them: inference, the CA/ASR metrics, the
``spectra eval`` pipeline, and the LoRA-scale dial (:mod:`spectra.eval.scaling`)."""
