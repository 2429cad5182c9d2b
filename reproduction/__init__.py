"""The reproduction study's research tooling: what judges and publishes the study, not what
users run. Not installed with spectra (the wheel holds ``spectra*`` and ``spectra_cli*`` only);
its entry point is ``scripts/reproduce.py``, run from a checkout.

- ``paper``: the paper's tables; ``verdicts``, ``effects``: the claims judged from the results;
  ``render``: ``docs/reproduction.md`` and the README's study block;
- ``forgetting``, ``forgetting_stats``, ``forgetting_page``, ``forgetting_text``: the evidence
  table, its statistics and ``docs/forgetting.md`` (and ``spectra/forgetting_model.json``, the
  product's copy of the fitted model);
- ``ablation``, ``canary_evidence``: plans of runs beyond the study's; ``runner``: the workers.

The study's recipe, plan and execution (``spectra.study``) stay in the library: ``spectra demo``
runs a documented subset of them.
"""
