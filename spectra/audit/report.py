"""``AuditReport``: what :func:`spectra.audit.audit` returns — one row per (adapter, module),
the settings, inputs, versions and timings that reproduce it, the policy findings — and
how it is written to disk (``audit.csv``, ``audit.json``, ``audit.sarif``, the figures,
``report.md``).

Kept apart from the computation in :mod:`spectra.audit`, which re-exports it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spectra.errors import SpectraError
from spectra.report.audit_rows import finite_values, median

if TYPE_CHECKING:  # pandas (0.24 s) is imported only when a library user asks for ``table``
    import pandas as pd

#: Columns every audit table carries, in this order (a public contract: pipelines parse them).
COLUMNS = [
    "adapter", "module", "layer", "module_type", "shape", "rank", "scale", "update_kind",
    "sigma_pre", "sigma_delta", "ratio", "cos_max_left", "cos_max_right", "overlap",
    "overlap_left", "overlap_right", "cos_random_left", "cos_random_right",
    "sigma_pre_k", "k", "frobenius_delta", "base_key", "spectrum_method",
]

#: One sentence per number, printed in every report.
DEFINITIONS = {
    "module_type": "the module's role: the last part of its name (query, q_proj, c_attn, classifier …); BERT's "
                   "three `dense` matrices per block are told apart as attention.output.dense, intermediate.dense, "
                   "output.dense (pooler.dense outside the blocks).",
    "sigma_pre": "σ_max(W_pre), the largest singular value of the base layer's weight (out × in orientation).",
    "sigma_delta": "σ_max(s·ΔW) with ΔW = B·A and s the scale PEFT applies (α/r, α/√r with rsLoRA, rank/alpha patterns resolved); for full, DoRA and modules_to_save updates ΔW is the dense difference of weights.",
    "ratio": "sigma_pre / sigma_delta (∞ when ΔW = 0). Above 1 the update is weaker than the base layer; RoRA's rescaling targets 1.",
    "cos_max_left": "max over W_pre's top-k left singular vectors of |cos| with ΔW's leading left singular vector (output space).",
    "cos_max_right": "the same for right singular vectors (input space).",
    "overlap": "mean of overlap_left and overlap_right: the share of ΔW's energy inside W_pre's top-k subspaces; RoRA's Tr penalty drives it to 0.",
    "overlap_left": "‖U_kᵀ ΔW‖²_F / ‖ΔW‖²_F with U_k the top-k left singular vectors of W_pre.",
    "overlap_right": "‖ΔW V_k‖²_F / ‖ΔW‖²_F with V_k the top-k right singular vectors of W_pre.",
    "cos_random_left": "expected max |cos| of a random direction in the output dimension against k orthonormal vectors: the chance level for cos_max_left (and k/out is the chance level of overlap_left).",
    "cos_random_right": "the same in the input dimension, for cos_max_right.",
    "sigma_pre_k": "σ_k(W_pre), the k-th singular value: the edge of the subspace the cosines are measured against.",
    "k": "the subspace size used for this module: --top-k, or min(out, in) for a layer narrower than that (e.g. a 2-way classifier head, whose top-k subspace is then its whole output space: overlap_left is 1 by construction, and cos_max_left is the largest coordinate of a unit vector in that basis, ≥ 1/√2 for 2 classes, against a chance level cos_random_left of about 0.90).",
    "frobenius_delta": "‖s·ΔW‖_F.",
    "rank": "LoRA rank r (min(out, in) for dense updates).",
    "scale": "s, the factor PEFT multiplies B·A by (1 for dense updates).",
    "spectrum_method": "how W_pre's top-k was computed: 'randomized-certified' (block Krylov) or 'gram-certified' (eigenpairs of the short side's Gram matrix), each with residuals that passed the certificate (σ within 1e-4 relative, vectors within the gap-based angle bound); 'exact' (torch.linalg.svd: --exact, when the cost model finds it cheapest, or the fallback when the certificate failed); 'cache:<method>' when reused from the content-keyed cache.",
}


@dataclass
class AuditReport:
    """The result of :func:`audit`: one row per (adapter, module) plus everything needed to
    reproduce it.

    ``rows`` are plain dicts in :data:`COLUMNS` order, and :meth:`write` makes every output
    from them; ``table`` is the same rows as a pandas DataFrame, built on first use, so the
    ``spectra audit`` command never imports pandas.
    """

    rows: list[dict[str, Any]]
    settings: dict[str, Any]
    inputs: dict[str, Any]
    versions: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)
    policy: Any = None  # spectra.audit.policy.Policy, set by apply_policy
    findings: list[Any] = field(default_factory=list)  # spectra.audit.policy.Finding
    #: (kind, text) lines the policy has to say after this audit (rules that judged nothing), set by apply_policy
    notices: list[tuple[str, str]] = field(default_factory=list)
    #: the findings at or above the policy's ``fail_on``: decided once, by :meth:`apply_policy`, and
    #: read by the CLI's exit code and SARIF's alike
    failing: list[Any] = field(default_factory=list)
    #: a ``spectra canary`` calibration of this base (``spectra audit --calibration``), else None
    calibration: Any = None
    _table: Any = field(default=None, init=False, repr=False, compare=False)
    _columns: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def columns(self) -> list[str]:
        """The table's columns: :data:`COLUMNS`, then any extra an update kind added (found once)."""
        if self._columns is None:
            from spectra.report.audit_rows import columns_of

            self._columns = columns_of(self.rows, COLUMNS)
        return self._columns

    @property
    def exit_code(self) -> int:
        """1 when a finding fails the gate (:attr:`failing`), else 0 — as the CLI exits and SARIF records."""
        return 1 if self.failing else 0

    @property
    def table(self) -> pd.DataFrame:
        """The rows as a pandas DataFrame (``layer`` as nullable integers), built once."""
        if self._table is None:
            from spectra.report.audit_rows import frame

            self._table = frame(self.rows, self.columns)
        return self._table

    def apply_policy(self, policy: Any) -> list[Any]:
        """Check every module against ``policy`` (:class:`spectra.audit.policy.Policy`), and every
        adapter's forgetting verdict against its ``forgetting`` rule; keep the findings for the
        report and SARIF; return those that fail the gate (≥ ``fail_on``)."""
        self.policy = policy
        blocks = self.forgetting()
        self.findings = policy.findings(self.rows) + policy.forgetting_findings(blocks)
        self.failing = policy.failing(self.findings)
        self.notices = policy.notices(self.rows, blocks)  # read from the same verdicts, computed once
        return self.failing

    def set_calibration(self, calibration: dict[str, Any], where: str = "calibration") -> None:
        """Use a ``spectra canary`` calibration for the forgetting verdict; it must have been
        measured on this very base (the weight files' hashes), else :class:`SpectraError`."""
        from spectra.forgetting import FULL_FINGERPRINT, weights_fingerprint

        theirs = str((calibration.get("base") or {}).get("fingerprint") or "")
        if not theirs.startswith(FULL_FINGERPRINT):
            raise SpectraError(f"{where}: its base fingerprint samples the weight files (a calibration from before "
                               "0.3), which a base modified in the middle passes; run spectra canary again")
        mine = weights_fingerprint((self.inputs.get("base") or {}).get("path"))
        if mine is None:
            raise SpectraError(f"{where}: this base's weight files could not be hashed (no local folder with weights), "
                               "so it cannot be matched with the base the canary was planted in")
        if mine != theirs:
            raise SpectraError(f"{where}: measured on another base — the full hashes of the weight files differ from "
                               f"those of the base the canary was planted in ({(calibration.get('base') or {}).get('path')}); "
                               "a canary calibrates only that base")
        self.calibration = calibration

    def forgetting(self) -> dict[str, dict[str, Any]]:
        """Per adapter, the ``forgetting`` block (:func:`spectra.forgetting.verdict`): will a
        backdoor planted as in the paper survive it, on which evidence, within which scope."""
        from spectra.forgetting import adapter_verdict

        arch = (self.inputs.get("base") or {}).get("architecture")
        return {label: adapter_verdict([r for r in self.rows if r["adapter"] == label], arch, self.calibration)
                for label in self.adapters}

    @property
    def definitions(self) -> dict[str, str]:
        """One sentence per column (what reports print beside the numbers)."""
        return DEFINITIONS

    @property
    def adapters(self) -> list[str]:
        """Adapter labels in the order they were audited."""
        return list(dict.fromkeys(row["adapter"] for row in self.rows))

    def summary_rows(self) -> list[dict[str, Any]]:
        """Per-adapter medians and extremes of the headline numbers, as plain dicts: modules,
        ratio_median, ratio_min (an infinite ratio left out), cos_left_median,
        cos_right_median, cos_max, overlap_median."""
        return summary_rows(self.rows)

    def summary(self) -> pd.DataFrame:
        """:meth:`summary_rows` as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.summary_rows())

    def violations(self, max_ratio: float | None = None, max_cos: float | None = None) -> pd.DataFrame:
        """Rows breaking a policy: ratio above ``max_ratio`` or a cosine above ``max_cos`` — the
        rows behind the findings of the policy ``--max-ratio``/``--max-cos`` make."""
        from spectra.audit.policy import resolve_policy

        hit = {(f.adapter, f.module) for f in resolve_policy(max_ratio=max_ratio, max_cos=max_cos).findings(self.rows)}
        return self.table[[(str(a), str(m)) in hit for a, m in zip(self.table["adapter"], self.table["module"])]]

    def figures(self) -> dict[str, Any]:
        """``{"fig_ratio": Figure, "fig_alignment": Figure}`` (matplotlib, not yet saved)."""
        from spectra.report.audit_figures import figures

        return figures(self.rows, self.settings["top_k"])

    def to_json(self) -> dict[str, Any]:
        """``{"modules": [...], "settings": ..., "inputs": ..., "versions": ..., ...}``; NaN and
        ∞ (the ratio of a zero update) are ``null``, as JSON has neither."""
        from spectra.report.audit_rows import json_rows

        summary = self.summary_rows()
        return {"modules": json_rows(self.rows, self.columns), "settings": self.settings, "inputs": self.inputs,
                "versions": self.versions, "timings": self.timings, "definitions": DEFINITIONS,
                "summary": json_rows(summary, list(summary[0]) if summary else []),
                "policy": self.policy.to_dict() if self.policy is not None else None,
                "findings": [f.to_dict() for f in self.findings], "forgetting": self.forgetting()}

    def write(self, out: str | os.PathLike[str], overwrite: bool = False, figures: bool = True,
              figure_worker: Any = None) -> Path:
        """Write audit.csv, audit.json, audit.sarif, fig_ratio.png, fig_alignment.png and report.md
        (``figures=False`` skips the two PNGs: importing matplotlib and drawing them measured 0.6 s
        of SmolLM2's 5.8 s audit, which a CI gate that only reads the JSON/SARIF need not pay).

        ``figure_worker``: a :class:`spectra.report.figure_worker.FigureWorker` started before the
        audit, which draws the figures while the other files are written; when it cannot, they
        are drawn here, so the files are the same either way."""
        from spectra._version import __version__
        from spectra.io.output import atomic_output_dir
        from spectra.audit.policy import RULES, Policy
        from spectra.provenance import strict_json
        from spectra.report.audit_markdown import render_audit_markdown
        from spectra.report.audit_rows import write_csv
        from spectra.report.figure_worker import draw_figures
        from spectra.report.sarif import render_sarif

        policy = self.policy if self.policy is not None else Policy()
        adapters = {label: info.get("path", label) for label, info in (self.inputs.get("adapters") or {}).items()}
        sarif = render_sarif(self.findings, RULES, policy, adapters, __version__, self.exit_code)
        top_k = self.settings["top_k"]
        with atomic_output_dir(out, overwrite=overwrite) as tmp:
            handed = figures and figure_worker is not None and figure_worker.send(self.rows, top_k, tmp)
            try:
                (tmp / "audit.sarif").write_text(strict_json(sarif) + "\n", encoding="utf-8")
                write_csv(self.rows, self.columns, tmp / "audit.csv")
                (tmp / "audit.json").write_text(strict_json(self.to_json()), encoding="utf-8")
                (tmp / "report.md").write_text(render_audit_markdown(self, figures), encoding="utf-8")
            except BaseException:
                if handed:  # stopped before the folder it writes into is removed
                    figure_worker.close()
                raise
            if figures and not (handed and figure_worker.wait()):
                draw_figures(self.rows, top_k, tmp)
        return Path(out)


def summary_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per-adapter medians and extremes of the headline numbers, adapters in first-seen order;
    an infinite ratio (ΔW = 0) is left out of the ratio statistics."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["adapter"], []).append(row)
    out = []
    for adapter, group in groups.items():
        ratios = finite_values(group, "ratio")
        cosines = finite_values(group, "cos_max_left") + finite_values(group, "cos_max_right")
        out.append({
            "adapter": adapter,
            "modules": len(group),
            "ratio_median": median(ratios),
            "ratio_min": min(ratios) if ratios else math.nan,
            "cos_left_median": median(finite_values(group, "cos_max_left")),
            "cos_right_median": median(finite_values(group, "cos_max_right")),
            "cos_max": max(cosines) if cosines else math.nan,
            "overlap_median": median(finite_values(group, "overlap")),
        })
    return out
