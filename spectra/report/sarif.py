"""``audit.sarif``: the audit's policy findings as SARIF 2.1.0, the format code-scanning tools
(GitHub's ``upload-sarif``, GitLab, DefectDojo) read.

One run, one rule per policy rule (with its threshold and default level), one result per
(adapter, module) that breaks a rule: its level (note / warning / error), a message with the
measured value, the adapter's weights file as the physical location and the module's name as
the logical location, and the numbers in ``properties``. Written even when nothing breaks a
rule (an empty ``results``), so a pipeline step that uploads it always finds a file.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFO_URI = "https://github.com/spectra-lora/spectra"


def _uri(path: str | os.PathLike[str]) -> str:
    """A repository-relative URI where the file lies under the working folder, else a file:// URI."""
    p = Path(path).resolve()
    try:
        return p.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return p.as_uri()


def render_sarif(findings: list[Any], rules: dict[str, Any], policy: Any, adapters: dict[str, str],
                 version: str, exit_code: int, command_line: str = "spectra audit") -> dict[str, Any]:
    """The SARIF log (a dict ready for ``json.dumps(..., allow_nan=False)``: every number finite).

    Args:
        findings: :class:`spectra.audit.policy.Finding` objects.
        rules: :data:`spectra.audit.policy.RULES`.
        policy: the :class:`spectra.audit.policy.Policy` in force.
        adapters: adapter label → adapter folder.
        version: spectra's version.
        exit_code: what the gate exits with (recorded in the invocation).
    """
    rule_ids = list(rules)
    driver_rules = []
    for rule_id in rule_ids:
        rule = rules[rule_id]
        setting = policy.rules.get(rule_id)
        props: dict[str, Any] = {"tags": ["lora", "backdoor", "spectral"]}
        if setting is not None:
            props.update(threshold=setting.max, moduleTypeThresholds=dict(setting.module_types))
        driver_rules.append({
            "id": rule_id, "name": rule.name,
            "shortDescription": {"text": rule.summary.split(":")[0]},
            "fullDescription": {"text": rule.description()},
            "defaultConfiguration": {"level": setting.severity if setting is not None else rule.default_severity,
                                     "enabled": setting is not None and (setting.max is not None
                                                                         or bool(setting.module_types))},
            "properties": props,
        })
    results = []
    for f in findings:
        folder = Path(adapters.get(f.adapter, f.adapter))
        weights = next((folder / n for n in ("adapter_model.safetensors", "model.safetensors.index.json",
                                             "model.safetensors") if (folder / n).exists()), folder)
        results.append({
            "ruleId": f.rule, "ruleIndex": rule_ids.index(f.rule), "level": f.severity,
            "message": {"text": f.message()},
            "locations": [{
                # a region: GitHub's ingestion expects one; the whole (binary) weights file is meant
                "physicalLocation": {"artifactLocation": {"uri": _uri(weights)}, "region": {"startLine": 1}},
                "logicalLocations": [{"fullyQualifiedName": f.module, "name": f.module.rsplit(".", 1)[-1],
                                      "kind": "module"}],
            }],
            "partialFingerprints": {"adapterModule/v1": f"{f.adapter}:{f.module}:{f.rule}"},
            "properties": {"value": f.value if math.isfinite(f.value) else None, "threshold": f.threshold,
                           "adapter": f.adapter, "moduleType": f.module_type,
                           **({"valueNote": f.to_dict()["value_note"]} if not math.isfinite(f.value) else {})},
        })
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "spectra", "version": version, "informationUri": INFO_URI,
                                "rules": driver_rules}},
            "invocations": [{"executionSuccessful": True, "exitCode": exit_code, "commandLine": command_line}],
            "results": results,
            "properties": {"policy": policy.to_dict()},
        }],
    }
