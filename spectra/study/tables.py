"""From the study's JSON results to rows: mean ± std over seeds (and over poisoned bases),
collapse counts, ASR floors — the numbers every table and verdict of the page is built from.

Nothing here trains or reads a model: :func:`load_results` reads ``<results>/*.json`` and
:class:`Results` answers "what did method M measure on attack A" as a :class:`Cell`.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spectra.report.tables import sweep_gamma
from spectra.study.plan import BASE_SEEDS, SEEDS
from spectra.threshold.report import KEY_ALIASES

#: page rows → (run kind, method, where the evaluation sits in the run's JSON)
ROWS: dict[str, tuple[str, str, str]] = {
    "poisoned base": ("base", "", "downstream_test"),
    "FFT": ("finetune", "fft", "eval.new"),
    "LoRA": ("finetune", "lora", "eval.new"),
    "Pt alone (LoRA + Pt)": ("finetune", "lora", "pt_alone.eval"),
    "+CI": ("finetune", "lora+ci", "eval.new"),
    "Tr alone": ("finetune", "lora+tr", "eval.new"),
    "+CI+Tr": ("finetune", "rora", "eval.new-before-rescale"),
    "+CI+Tr+Pt (RoRA)": ("finetune", "rora", "eval.new"),
    "PiSSA": ("finetune", "pissa", "eval.new"),
    "DoRA": ("finetune", "dora", "eval.new"),
    "OLoRA": ("finetune", "olora", "eval.new"),
    "PiSSA + RoRA": ("finetune", "pissa+rora", "eval.new"),
    "DoRA + RoRA": ("finetune", "dora+rora", "eval.new"),
    "OLoRA + RoRA": ("finetune", "olora+rora", "eval.new"),
    "ONION (on LoRA)": ("onion", "lora", "eval"),
    "PEFT intruder reduction (on LoRA)": ("intruder", "lora", "eval"),
}


def _get(doc: dict[str, Any], path: str) -> Any:
    cur: Any = doc
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        # the eval rows are keyed "new", "new-before-rescale": split only on the first dot level
        if part in cur:
            cur = cur[part]
        else:
            return None
    return cur


def _eval_at(doc: dict[str, Any], where: str) -> dict[str, Any] | None:
    head, _, rest = where.partition(".")
    if not rest:
        return doc.get(head)
    node = doc.get(head)
    if node is None:
        return None
    if rest in node:  # eval.new-before-rescale
        return node[rest]
    return _get(node, rest)


def below_asr_bar(doc: dict[str, Any]) -> bool:
    """Whether a poisoned base's held-out ASR is not above the paper's 95 % (A.1: every base is
    configured so that its ASR exceeds it)."""
    from spectra.train.poison import ASR_WARNING

    asr = (doc.get("proxy_heldout") or {}).get("asr")
    return asr is not None and asr <= ASR_WARNING


def rescale_effect(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None:
    """A RoRA-family run's Pt: (its rescale summary, the evaluation before Pt, after Pt), or None
    where the run has no rescale or lacks either evaluation."""
    mult, ev = doc.get("rescale") or {}, doc.get("eval") or {}
    if mult.get("multipliers") and ev.get("new-before-rescale") and ev.get("new"):
        return mult, ev["new-before-rescale"], ev["new"]
    return None


def run_seconds(doc: dict[str, Any]) -> float:
    """The compute a result stands for: its process's wall, or for a base the walls of every
    poisoning stage where those are longer (stages kept from an earlier run cost that run)."""
    return max(float(doc.get("wall_s") or 0), float(doc.get("poison_wall_s") or 0))


def run_converged(doc: dict[str, Any]) -> bool | None:
    """Whether a run's validation CA had stopped improving, by the study's rule
    (:func:`spectra.train.validation.converged`) applied to the curve stored with the run, so
    that every table and verdict reads the same answer; the flag stored beside it is a copy
    written by the code of its day. None for a run without a curve (a base, ONION, the
    intruder reduction)."""
    from spectra.train.validation import converged

    curve = [e["val_ca"] for e in doc.get("epochs") or [] if e.get("val_ca") is not None]
    return converged(curve) if curve else doc.get("converged")


def t975(df: float) -> float:
    """The two-sided 95 % Student-t critical value for ``df`` degrees of freedom, exact for a
    fractional df as Welch's gives (infinite without a degree of freedom)."""
    from spectra.data.stats import t_quantile

    return t_quantile(0.975, df) if df > 0 else math.inf


@dataclass
class Cell:
    """One metric set of one row over several runs."""

    values: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    #: each run's convergence flag (None where the run has none: a base, ONION, intruder reduction)
    converged: list[bool | None] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def not_converged(self) -> int:
        """Runs behind the cell whose validation CA was still improving when training ended."""
        return sum(1 for c in self.converged if c is False)

    def stat(self, key: str, scale: float = 100.0) -> tuple[float, float]:
        vals = [scale * float(v[key]) for v in self.values if v.get(key) is not None]
        if not vals:
            return math.nan, math.nan
        return statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0

    def mean(self, key: str, scale: float = 100.0) -> float:
        return self.stat(key, scale)[0]

    def interval(self, key: str, scale: float = 100.0) -> tuple[float, float]:
        """The Student-t 95 % interval of the mean (n − 1 degrees of freedom; a point for n = 1)."""
        m, s = self.stat(key, scale)
        n = sum(1 for v in self.values if v.get(key) is not None)
        if n < 2:
            return m, m
        half = t975(n - 1) * s / math.sqrt(n)
        return m - half, m + half

    @property
    def collapsed(self) -> int:
        return sum(1 for v in self.values if v.get("collapsed"))

    def fmt(self, key: str) -> str:
        """``mean [95 % Student-t interval]`` (n ≥ 2; three seeds give t(2) = 4.30, so the
        interval is wide and says so), the value alone for one run."""
        m, _ = self.stat(key)
        if math.isnan(m):
            return "—"
        if self.n == 1:
            return f"{m:.1f}"
        lo, hi = self.interval(key)
        return f"{m:.1f} [{lo:.1f}, {hi:.1f}]"


#: result keys written before the multiplier k was renamed γ (0.2) → their names now
RENAMED = {**KEY_ALIASES,  # threshold.json's own 0.1 names, and the study records' others
           "measured_crossing_k": "measured_crossing_gamma", "search_threshold_k": "search_threshold_gamma",
           "margins_by_k": "margins_by_gamma"}


def load_results(folder: str | Path) -> dict[str, dict[str, Any]]:
    """Every ``<id>.json`` in ``folder`` (no file: an empty study), with the keys of results
    written under the old name of the multiplier (k) also available under their new one (γ)."""
    out = {}
    for path in sorted(Path(folder).glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        for old, new in RENAMED.items():
            if old in doc and new not in doc:
                doc[new] = doc[old]
        for row in doc.get("sweep") or []:
            if "k" in row and "gamma" not in row:
                row["gamma"] = row["k"]
        out[doc.get("id", path.stem)] = doc
    return out


def study_docs(docs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The reproduction study's own results: the forgetting evidence's users' recipes (runs with a
    ``variant``) share the results folder but have a page of their own (docs/forgetting.md)."""
    return {k: v for k, v in docs.items() if not (v.get("run") or {}).get("variant")}


class Results:
    """Query the study's results by attack, row, base seed and fine-tuning seed."""

    def __init__(self, docs: dict[str, dict[str, Any]]) -> None:
        self.docs = docs

    def runs(self, kind: str, attack: str | None = None, method: str | None = None, model: str = "minilm",
             base_seeds: Iterable[int] | None = None, seeds: Iterable[int] | None = None,
             picked: bool = True) -> list[dict[str, Any]]:
        """Runs of ``kind``; ``picked`` keeps study runs (rate picked), not the rate-grid runs."""
        bs = set(base_seeds) if base_seeds is not None else None
        ss = set(seeds) if seeds is not None else None
        out = []
        for doc in self.docs.values():
            run = doc.get("run", {})
            if run.get("kind") != kind or run.get("model", "minilm") != model:
                continue
            if attack is not None and run.get("attack") != attack:
                continue
            if method is not None and kind != "base" and run.get("method") != method:
                continue
            if bs is not None and run.get("base_seed") not in bs:
                continue
            if ss is not None and kind != "base" and run.get("seed") not in ss:
                continue
            if picked and kind == "finetune" and run.get("lr") is not None:
                continue
            out.append(doc)
        return sorted(out, key=lambda d: (d["run"].get("base_seed", 0), d["run"].get("seed", 0)))

    def cell(self, row: str, attack: str, base_seeds: Iterable[int] = (0,), seeds: Iterable[int] | None = None,
             model: str = "minilm") -> Cell:
        kind, method, where = ROWS[row]
        cell = Cell()
        for doc in self.runs(kind, attack, method or None, model, base_seeds, seeds):
            ev = _eval_at(doc, where)
            if ev is not None:
                cell.values.append(ev)
                cell.ids.append(doc["id"])
                cell.converged.append(run_converged(doc))
        return cell

    def row_cell(self, row: str, attack: str, model: str = "minilm") -> Cell:
        """The cell a Table 2 row shows: the poisoned base over the poisoned bases (its own seed
        is its poisoning seed), every other row over fine-tuning seeds 0–2 on base 0."""
        bases = BASE_SEEDS if row == "poisoned base" else (0,)
        return self.cell(row, attack, base_seeds=bases, seeds=SEEDS, model=model)

    def picks(self, family: str) -> dict[float, dict[str, Any]]:
        """The learning-rate grid runs of ``family`` (BadNet, base 0, seed 0), by rate."""
        out = {}
        for doc in self.docs.values():
            run = doc.get("run", {})
            if run.get("kind") == "finetune" and run.get("method") == family and run.get("lr") is not None \
                    and (run.get("attack"), run.get("base_seed"), run.get("seed"), run.get("model", "minilm")) \
                    == ("badnet", 0, 0, "minilm"):  # the matched-lr ablation's other rate runs are not picks
                out[float(run["lr"])] = doc
        return dict(sorted(out.items()))

    def sweeps(self, attack: str | None = None, method: str | None = None, model: str = "minilm") -> list[dict[str, Any]]:
        return self.runs("sweep", attack, method, model)

    def finetune(self, attack: str, method: str, base_seed: int = 0, seed: int = 0,
                 model: str = "minilm") -> dict[str, Any] | None:
        found = self.runs("finetune", attack, method, model, [base_seed], [seed])
        return found[0] if found else None


def within(pred: float, measured: float, factor: float = 2.0) -> bool | None:
    """Whether ``pred`` lies within ``factor``× of ``measured`` (None when either is not finite)."""
    if pred is None or measured is None:
        return None
    if not (math.isfinite(pred) and math.isfinite(measured)) or pred <= 0 or measured <= 0:
        return None
    return measured / factor <= pred <= measured * factor


def collapsed_gammas(sweeps: list[dict[str, Any]]) -> set[float]:
    """The multipliers γ at which at least one of these sweeps' models collapsed."""
    return {sweep_gamma(r) for s in sweeps for r in s["sweep"] if r.get("collapsed")}
