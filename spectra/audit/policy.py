"""Audit policies: which measured values break a rule, at what severity, and when the gate fails.

A policy holds one setting per rule (:data:`RULES`): a threshold, optional thresholds per
module type (``q_proj`` may differ from ``down_proj``), and a severity (``note``,
``warning``, ``error``: SARIF's levels). A module whose value exceeds its threshold is a
:class:`Finding`; the gate fails (exit code 1) when a finding is at or above ``fail_on``.

Policies come from a TOML file — ``spectra.toml``, or the ``[tool.spectra]`` table of a
``pyproject.toml`` — and from the CLI (``--max-ratio``, ``--max-cos``, ``--fail-on``), the
CLI winning where both set a value::

    fail-on = "error"

    [rules.ratio]              # σ_pre/σ_Δ: the update is this many times weaker than the base layer
    max = 100
    severity = "error"
    [rules.ratio.module-types] # thresholds per module type (the audit's module_type column)
    down_proj = 200

    [rules.cos]                # max |cos| of ΔW's leading singular vectors with W_pre's top-k
    max = 0.5
    severity = "warning"
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spectra.errors import SpectraError

SEVERITIES = ("note", "warning", "error")


@dataclass(frozen=True)
class Rule:
    """A policy rule: what it measures (a function of an audit row) and what breaking it means.

    ``level``: ``module`` rules judge each module's row; the ``adapter`` rule judges each
    adapter's forgetting verdict. ``evidence``: the feature of ``docs/forgetting.md`` whose
    measured AUROC the rule's description quotes (:meth:`description`)."""

    id: str
    name: str
    summary: str
    measure: Callable[[dict[str, Any]], float]
    default_severity: str
    level: str = "module"
    evidence: str | None = None

    def description(self) -> str:
        """The summary and, where the study measured it, how well the rule's number predicts that
        a backdoor survives (generated from ``spectra/forgetting_model.json``)."""
        from spectra.forgetting import evidence_line

        line = evidence_line(self.evidence) if self.evidence else None
        return f"{self.summary}. {line}" if line else self.summary


# the texts say what is measured; what the study found about each one comes from its numbers
# (docs/forgetting.md): alignment and overlap did not tell surviving backdoors from removed ones,
# so they are notes, not risks, by default
RULES: dict[str, Rule] = {r.id: r for r in (
    Rule("ratio", "WeakUpdate", "σ_max(W_pre) / σ_max(s·ΔW) above the threshold: the adapter's update is weak against "
         "the base layer (Luong & Chen 2026, Figure 1; Proposition 4.2 relates the scale needed to override a "
         "backdoor to it)", lambda row: float(row["ratio"]), "error", evidence="log_ratio_min"),
    Rule("cos", "AlignedUpdate", "max |cos| of ΔW's leading singular vectors with W_pre's top-k above the threshold: "
         "the update's leading directions lie in the base layer's dominant subspaces (Figure 2)",
         lambda row: _max_or_nan(row["cos_max_left"], row["cos_max_right"]), "note", evidence="cos_median"),
    Rule("overlap", "OverlappingUpdate", "share of ΔW's energy inside W_pre's top-k subspaces above the threshold "
         "(what RoRA's Tr penalty drives to zero)", lambda row: _max_or_nan(row["overlap"]), "note",
         evidence="overlap_median"),
    Rule("forgetting", "BackdoorLikelySurvives", "the adapter's forgetting verdict (docs/forgetting.md) estimates "
         "P(a backdoor planted in the base survives this adapter) above the threshold", lambda row: math.nan,
         "warning", level="adapter"),
    Rule("unaudited", "AdapterNotAudited", "a fleet scan could not audit the adapter (corrupt, hostile, made for "
         "another base, or its worker was lost): the gate cannot vouch for it", lambda row: math.nan, "error",
         level="adapter"),
)}
#: the ``module`` of a forgetting finding read from a canary's sign (no validated probability)
CANARY_SIGN = "(adapter; canary sign)"
#: the ``module`` of one the canary could not place: inside the range where it gave way
CANARY_CLOSE_CALL = "(adapter; canary close call)"


def forgetting_value(block: Mapping[str, Any]) -> tuple[float, str] | None:
    """What the ``forgetting`` rule reads from an adapter's verdict, and how: its P(survives), or —
    under canary evidence without a validated probability — the canary's sign as 1 (survives) or 0
    (overridden), so that a calibration gates; None when the verdict has no estimate. A close call
    (inside the range where the canary gave way) reads as 1: the gate does not pass an adapter
    the canary cannot place."""
    canary = block.get("evidence") == "canary" and block.get("survives") is not None
    if canary and block.get("close_call"):  # a probability near ½ would pass it under a policy's max
        return 1.0, CANARY_CLOSE_CALL
    if block.get("p_survives") is not None:
        return float(block["p_survives"]), "(adapter)"
    if canary:
        return float(bool(block["survives"])), CANARY_SIGN
    return None


#: the rules in force when no policy file sets them: the forgetting verdict as a warning (visible in
#: SARIF; fails only --fail-on warning), which judges only adapters with an estimate — a validated
#: weights-only model or a canary's calibration — and nothing while neither exists
DEFAULT_RULES = {"forgetting": ("warning", 0.5), "unaudited": ("error", 0.0)}


def _max_or_nan(*values: Any) -> float:
    """The largest value, NaN when any is NaN or missing (``max(0.1, nan)`` is 0.1: a NaN must not hide)."""
    vals = [float("nan") if v is None else float(v) for v in values]
    return float("nan") if any(math.isnan(v) for v in vals) else max(vals)


@dataclass
class RuleSetting:
    """One rule's threshold (global and per module type) and severity; ``max=None`` disables it."""

    max: float | None = None
    severity: str = "error"
    module_types: dict[str, float] = field(default_factory=dict)

    def threshold(self, module_type: str) -> float | None:
        return self.module_types.get(module_type, self.max)


@dataclass
class Finding:
    """A module that breaks a rule."""

    rule: str
    severity: str
    adapter: str
    module: str
    module_type: str
    value: float
    threshold: float

    def message(self) -> str:
        what = {"ratio": "σ_pre/σ_Δ", "cos": "max |cos| with W_pre's top-k", "overlap": "top-k overlap",
                "forgetting": "P(a planted backdoor survives)", "unaudited": "not audited"}[self.rule]
        if self.rule == "unaudited":
            return f"{self.adapter}: not audited ({self.module})"
        if self.rule == "forgetting" and self.module == CANARY_SIGN:
            return (f"{self.adapter}: weaker than its base's canary where the canary gave way, so a backdoor planted "
                    "like the canary would likely survive it (the canary's sign; no probability) (forgetting)")
        if self.rule == "forgetting" and self.module == CANARY_CLOSE_CALL:
            return (f"{self.adapter}: a close call against its base's canary (inside the range where the canary "
                    "gave way), so the gate cannot vouch that it would override a backdoor planted like the canary "
                    "(forgetting)")
        value = f"{self.value:.4g}" + (" (the update is zero)" if self.rule == "ratio" and math.isinf(self.value) else "")
        return f"{self.adapter} {self.module}: {what} = {value} > {self.threshold:.4g} ({self.rule})"

    def to_dict(self) -> dict[str, Any]:
        """The finding for strict JSON: a non-finite value (∞: a zero update's ratio) becomes
        ``null`` with ``value_note`` saying what it was, since JSON has no ∞."""
        out = asdict(self)
        if not math.isfinite(self.value):
            out["value"] = None
            out["value_note"] = ("infinite: the update is zero (σ_Δ = 0)" if self.rule == "ratio" and self.value > 0
                                 else f"not finite ({self.value})")
        return out


@dataclass
class Policy:
    """Rule settings, the severity at which the gate fails, and where they came from."""

    rules: dict[str, RuleSetting] = field(default_factory=dict)
    fail_on: str = "error"
    sources: list[str] = field(default_factory=list)
    #: rules in force because no policy set them (:data:`DEFAULT_RULES`), not because a user asked
    defaults: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.fail_on not in SEVERITIES:
            raise SpectraError(f"--fail-on {self.fail_on!r}: use one of {', '.join(SEVERITIES)}")

    @property
    def active(self) -> bool:
        return any(s.max is not None or s.module_types for s in self.rules.values())

    def idle_rules(self, rows: Any, blocks: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[str, bool]]:
        """The user's rules that could judge nothing in this audit, each with why: a per-module-type
        threshold whose type no audited module has (a misspelt ``qurey`` must not pass silently), a
        ``forgetting`` rule where no adapter had a validated estimate. Per-type keys that match
        nothing are named too, since a fleet policy may name types another architecture has. Each
        value: (why, whether the rule judged nothing at all)."""
        from spectra.report.audit_rows import as_rows

        seen = {str(r.get("module_type", "")) for r in as_rows(rows)}
        out = {}
        for rule_id, s in self.rules.items():
            if rule_id in self.defaults:
                continue
            missing = sorted(set(s.module_types) - seen)
            if RULES[rule_id].level == "module" and missing:
                judged = s.max is not None or bool(set(s.module_types) & seen)
                out[rule_id] = (f"rules.{rule_id}.module-types {missing} match no audited module (types here: "
                                f"{', '.join(sorted(seen)) or 'none'})" + ("" if judged else ", so it judged nothing"),
                                not judged)
            if rule_id == "forgetting" and s.max is not None and \
                    not any(forgetting_value(b) is not None for b in blocks.values()):
                out[rule_id] = ("rules.forgetting: no adapter had a validated forgetting estimate, so it judged "
                                "nothing", True)
        return out

    def notices(self, rows: Any, blocks: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str]]:
        """``(kind, text)`` lines to print after an audit or a scan: each rule that judged nothing in
        ``rows`` / ``blocks`` (:meth:`idle_rules`), then the notice when no rule could fail the gate."""
        lines = [("warning", why) for why, _ in self.idle_rules(rows, blocks).values()]
        inactive = self.inactive_notice(rows, blocks)
        return lines + ([inactive] if inactive else [])

    def inactive_notice(self, rows: Any = (), blocks: Mapping[str, Mapping[str, Any]] | None = None
                        ) -> tuple[str, str] | None:
        """``(kind, text)`` to print after an audit when no active rule can fail the gate (none at
        or above ``fail_on``, or none that judged anything in ``rows`` / ``blocks``), else ``None``:
        a ``warning`` when a policy file was read (a gate that can only pass), a ``note`` when no
        policy was given at all."""
        floor = SEVERITIES.index(self.fail_on)
        idle = {k for k, (_, nothing) in self.idle_rules(rows, blocks).items() if nothing} if blocks is not None \
            else set()
        # the default rules count only where they judged something here: "unaudited" fires only in
        # fleet scans, and the forgetting verdict only where an adapter has an estimate — when one has
        # (a canary's calibration, a validated model), the default rule can fail this gate
        judged_by_default = blocks is not None and any(forgetting_value(b) is not None for b in blocks.values())
        if any((s.max is not None or s.module_types) and SEVERITIES.index(s.severity) >= floor
               for rid, s in self.rules.items()
               if rid not in idle and (rid not in self.defaults or (rid == "forgetting" and judged_by_default))):
            return None
        files = [src for src in self.sources if not src.startswith("--")]
        if files:
            return "warning", (f"{', '.join(files)}: sets no rule that can fail the gate at --fail-on {self.fail_on}, "
                               "so nothing is gated (exit 0 means 'audited', not 'approved')")
        return "note", (f"no policy rule can fail the gate at --fail-on {self.fail_on} (no --policy, spectra.toml, "
                        "[tool.spectra] or --max-*): findings are reported, nothing is gated")

    def findings(self, rows: Any) -> list[Finding]:
        """Every (adapter, module) of an audit that breaks an active rule (``rows``: the audit's
        rows, or its table as a DataFrame)."""
        from spectra.report.audit_rows import as_rows

        out = []
        for row in as_rows(rows):
            for rule_id, setting in self.rules.items():
                if RULES[rule_id].level != "module":
                    continue
                limit = setting.threshold(str(row.get("module_type", "")))
                if limit is None:
                    continue
                value = RULES[rule_id].measure(row)
                if math.isnan(value) and rule_id != "ratio" and row.get("sigma_delta") == 0 and \
                        (row.get("sigma_pre") or 0) > 0:
                    continue  # a zero update has no direction to align: nothing for cos/overlap to judge
                if math.isnan(value):  # NaN > limit is False: a rule that cannot be measured must not pass
                    raise SpectraError(f"{row['adapter']} {row['module']}: the {rule_id} rule's measure is NaN, so the "
                                       "gate cannot judge it (an update that overflows or a degenerate base weight)")
                if value > limit:
                    out.append(Finding(rule_id, setting.severity, str(row["adapter"]), str(row["module"]),
                                       str(row.get("module_type", "")), value, float(limit)))
        return out

    def forgetting_findings(self, blocks: Mapping[str, Mapping[str, Any]]) -> list[Finding]:
        """An adapter whose forgetting verdict is above the ``forgetting`` rule's threshold: its
        P(survives) where it has one, or its canary's sign (:func:`forgetting_value`)."""
        setting = self.rules.get("forgetting")
        if setting is None or setting.max is None:
            return []
        out = []
        for label, block in blocks.items():
            read = forgetting_value(block)
            if read is not None and read[0] > setting.max:
                out.append(Finding("forgetting", setting.severity, label, read[1], "adapter", read[0],
                                   float(setting.max)))
        return out

    def failing(self, findings: list[Finding]) -> list[Finding]:
        """The findings at or above ``fail_on`` (what makes the gate exit 1)."""
        floor = SEVERITIES.index(self.fail_on)
        return [f for f in findings if SEVERITIES.index(f.severity) >= floor]

    def to_dict(self) -> dict[str, Any]:
        return {"fail_on": self.fail_on, "sources": list(self.sources),
                "rules": {k: asdict(v) for k, v in self.rules.items()}}


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """A policy from ``spectra.toml`` (top-level keys) or a ``pyproject.toml`` (``[tool.spectra]``)."""
    from spectra.io.files import regular_file

    p = regular_file(Path(path), "policy file")
    tomllib = _toml()
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SpectraError(f"{p}: not a readable TOML file ({exc})") from None
    if p.name == "pyproject.toml":
        doc = doc.get("tool", {}).get("spectra")
        if doc is None:
            raise SpectraError(f"{p}: no [tool.spectra] table")
    return _from_dict(doc, str(p))


def _from_dict(doc: Any, where: str) -> Policy:
    if not isinstance(doc, dict):
        raise SpectraError(f"{where}: the policy must be a table")
    unknown = set(doc) - {"fail-on", "rules"}
    if unknown:
        raise SpectraError(f"{where}: unknown policy key(s) {sorted(unknown)} (known: fail-on, rules)")
    rules: dict[str, RuleSetting] = {}
    for rule_id, body in (doc.get("rules") or {}).items():
        if rule_id not in RULES:
            raise SpectraError(f"{where}: unknown rule {rule_id!r} (known: {', '.join(RULES)})")
        if not isinstance(body, dict) or set(body) - {"max", "severity", "module-types"}:
            raise SpectraError(f"{where}: rules.{rule_id} takes max, severity and module-types")
        severity = body.get("severity", RULES[rule_id].default_severity)
        if severity not in SEVERITIES:
            raise SpectraError(f"{where}: rules.{rule_id}.severity {severity!r}: use one of {', '.join(SEVERITIES)}")
        types = body.get("module-types") or {}
        if not isinstance(types, dict):
            raise SpectraError(f"{where}: rules.{rule_id}.module-types must map module types to numbers")
        rules[rule_id] = RuleSetting(max=_number(body.get("max"), f"{where}: rules.{rule_id}.max"),
                                     severity=severity,
                                     module_types={str(k): _number(v, f"{where}: rules.{rule_id}.module-types.{k}")
                                                   for k, v in types.items()})
    return Policy(rules=rules, fail_on=str(doc.get("fail-on", "error")), sources=[where])


def _number(value: Any, where: str) -> float | None:
    """A rule threshold: a finite number (NaN would switch the rule off: NaN > x is never true)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpectraError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, int) and abs(value) > 1e300:  # TOML integers are unbounded; float() would overflow
        raise SpectraError(f"{where}: {str(value)[:20]}… is too large to be a threshold")
    if not math.isfinite(value):
        raise SpectraError(f"{where}: {value!r} is not a finite number (a NaN or infinite threshold would never fire)")
    return float(value)


def resolve_policy(path: str | os.PathLike[str] | None = None, *, max_ratio: float | None = None,
                   max_cos: float | None = None, fail_on: str | None = None,
                   search_from: str | os.PathLike[str] | None = None) -> Policy:
    """The policy in force: ``path`` if given, else ``spectra.toml`` or a ``pyproject.toml`` with
    ``[tool.spectra]`` in ``search_from`` (the working folder), then the CLI's values on top."""
    policy = Policy()
    if path is not None:
        policy = load_policy(path)
    elif search_from is not None:
        here = Path(search_from)
        # a spectra.toml that is there but is not a readable file (a folder, a dangling link) is an
        # error, not "no policy": the gate must not fall back to passing everything
        if os.path.lexists(here / "spectra.toml"):
            policy = load_policy(here / "spectra.toml")
        elif (here / "pyproject.toml").is_file() and _has_tool_table(here / "pyproject.toml"):
            policy = load_policy(here / "pyproject.toml")
    for rule_id, value in (("ratio", max_ratio), ("cos", max_cos)):
        if value is not None:
            # --max-ratio/--max-cos fail the gate, as they always did, unless a file set the severity
            setting = policy.rules.get(rule_id) or RuleSetting(severity="error")
            setting.max = _number(value, f"--max-{rule_id}")
            policy.rules[rule_id] = setting
            policy.sources.append(f"--max-{rule_id}")
    if fail_on is not None:
        policy.fail_on = fail_on
        policy.__post_init__()
        policy.sources.append("--fail-on")
    for rule_id, (severity, limit) in DEFAULT_RULES.items():
        if rule_id not in policy.rules:
            policy.rules[rule_id] = RuleSetting(max=limit, severity=severity)
            policy.defaults.add(rule_id)
    return policy


def _has_tool_table(pyproject: Path) -> bool:
    """Whether ``pyproject`` sets ``tool.spectra`` — parsed, so ``[ tool.spectra ]``, dotted keys and
    inline tables count. One that does not parse counts when it names spectra at all: then
    :func:`load_policy` says why it cannot be read, instead of the gate running with no policy."""
    tomllib = _toml()
    text = pyproject.read_text(encoding="utf-8", errors="replace")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return "spectra" in text
    tool = doc.get("tool")
    return isinstance(tool, dict) and "spectra" in tool


def _toml() -> Any:
    """The TOML reader: the standard library's from Python 3.11, ``tomli`` before."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib
