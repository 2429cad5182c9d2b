"""``report.md`` of ``spectra canary``: what was planted, whether it survived, where it gave way."""

from __future__ import annotations

import math
from typing import Any

from spectra.report.tables import fmt, fmt_pct

_pct = fmt_pct


def render_canary_markdown(result: dict[str, Any]) -> str:
    """The canary's report; every reading is built from ``result`` (``canary.json``)."""
    r, c, rec = result["result"], result["canary"], result["recipe"]
    ci = r.get("asr_ci") or [None, None]
    gamma = result.get("crossing_gamma")
    top = result.get("working_gamma_max", result["grid_max"])  # the largest γ where the model still worked
    if gamma is None or (isinstance(gamma, float) and math.isnan(gamma)):
        gave = "no crossing could be read: the model collapsed at every scale swept"
    elif not math.isfinite(gamma):
        gave = (f"it did not give way up to γ = {top:g}, the largest scale at which the model still works: the "
                "recipe would need a stronger update than that")
    elif gamma <= 1:
        gave = f"it gave way at γ = {gamma:.3g}, below the recipe's own scale (γ = 1): the recipe removes it"
    else:
        gave = f"it gives way at γ = {gamma:.3g}: the recipe's update would have to be {gamma:.3g}× stronger"
    gave += _range_text(result)
    verdict = ("**cannot be decided**" if result.get("survives") is None else
               "**survives**" if result["survives"] else "**is removed**")
    lines = [
        "# spectra canary: would this recipe override a backdoor in this base?", "",
        f"Base `{result['base']['path']}` ({result['base']['architecture']}). A canary backdoor — trigger "
        f"`{c['trigger']}`, absent from the data, target label {c['target_label']} — was planted clean-label in "
        f"{c['n_poison']} proxy rows of your data (the paper's recipe, full fine-tuning); the poisoned copy reached "
        f"{_pct(c['poisoned_heldout_asr'])} ASR on held-out proxy rows and {_pct(c['poisoned_test_asr'])} on the test "
        "rows.", "",
        f"Your recipe — LoRA r = {rec['rank']}, α = {rec['alpha']:g}, targets {rec['target_modules'] or 'q/v (default)'}"
        + (", rsLoRA" if rec["use_rslora"] else "") + (", DoRA" if rec["use_dora"] else "")
        + f", {rec['epochs']:g} epochs at lr {rec['lr']:g}, batch {rec['batch_size']}"
        + (f"; read from `{rec['recipe_from']}`" if rec.get("recipe_from") else "") + " — trained on the fine-tuning rows.",
        "",
        f"## Result: the canary {verdict}", "",
        *([f"> {result['undecided']}. The calibration it writes is refused by `spectra audit --calibration`.", ""]
          if result.get("undecided") else []),
        f"- ASR {_pct(r['asr'])} (95 % interval {_pct(ci[0])}–{_pct(ci[1])}), floor {_pct(r['asr_floor'])}, "
        f"clean accuracy {_pct(r['ca'])}" + ("; **the model collapsed**: its ASR says nothing" if r.get("collapsed")
                                             else "") + ".",
        f"- Sweeping the LoRA scale, {gave}.",
        f"- The calibration (`calibration.json`): `{result['feature']}` = {fmt(result['canary_value'])} for the canary "
        "adapter; a later adapter on this base is placed against "
        + ("none: no crossing was found" if result.get("crossing_value") is None else
           f"the value where the canary gave way, {result['crossing_value']:.3g}" if math.isfinite(gamma) else
           f"{result['crossing_value']:.3g}, a bound (weaker adapters keep the canary; for stronger ones the canary "
           "says nothing)")
        + " (`spectra audit BASE ADAPTER --calibration calibration.json`)"
        + _value_range_text(result) + ".", "",
        "What this measures and what it does not: a backdoor planted like the canary (a rare token, clean-label, "
        "full fine-tuning). A real backdoor in your base may be planted differently and sit deeper; the canary "
        "says whether your recipe can override one of this kind, on your data. The calibration is one canary's "
        "measurement; it has not been checked against real backdoors, and the audit reads it only for "
        "adapters with one LoRA scale across modules (as the canary's).", "",
        f"Wall time {result['seconds'] / 60:.1f} min.",
    ]
    for note in rec.get("notes") or []:
        lines.append(f"\n> {note}")
    return "\n".join(lines) + "\n"


def _decided(result: dict[str, Any]) -> bool:
    return result.get("survives") is not None


def _range_text(result: dict[str, Any]) -> str:
    """How sharply the sweep places the crossing: its range from the points' Wilson intervals."""
    lo, hi = (result.get("crossing_gamma_ci") or [None, None])[:2]
    if not _decided(result) or lo is None or not math.isfinite(lo):  # not even the lower bounds crossed
        return ""
    top = result.get("working_gamma_max", result.get("grid_max"))
    upper = f"γ = {hi:.3g}" if hi is not None and math.isfinite(hi) else f"beyond the sweep's top (γ = {top:g})"
    return (f" (given each swept point's Wilson 95 % interval on its ASR, the crossing lies between γ = {lo:.3g} "
            f"and {upper})")


def _value_range_text(result: dict[str, Any]) -> str:
    interval = result.get("crossing_value_ci")
    if not interval or result.get("crossing_value") is None or not _decided(result):
        return ""
    low, high = interval
    where = (f"between {low:.3g} and {high:.3g}" if low is not None and high is not None else
             f"at or below {high:.3g}" if high is not None else
             f"at or above {low:.3g}" if low is not None else None)
    if where is None:
        return "; the sweep cannot place the crossing (its range is unbounded both ways): every adapter is a close call"
    return (f"; an adapter whose value lies {where} (the crossing's range) is a close call that the gate does "
            "not pass")
