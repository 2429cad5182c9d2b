"""The reproduction study's recipe, plan and execution: what ``spectra demo`` runs a documented
subset of (``recipe``, ``plan``, ``execute``, ``records``, ``sweep``, ``baselines``, ``tables``,
``figures``), and the evidence plan of users' recipes (``evidence``). The verdicts, the paper's
tables and the pages are research code in the checkout's ``reproduction/``, not installed.
"""
