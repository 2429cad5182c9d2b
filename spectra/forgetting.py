"""Will this adapter override a backdoor planted in its base? The audit's forgetting verdict.

The estimate is ``weights-only``: a small logistic model on the audit's own features
(:func:`features`), fitted and validated on the labelled adapters of the study
(``docs/study/forgetting.csv``, ``docs/forgetting.md``: grouped cross-validation, baselines
beside it). It is given only inside its scope — the architectures it was validated on and the
range of each feature seen there — and only when the validation passed; anywhere else the
verdict says "no validated estimate" and why, never an extrapolation. A ``canary``
calibration (``spectra canary``) replaces it for the base it was measured on.

The fitted model lives in ``forgetting_model.json`` beside this module, written by
``python scripts/reproduce.py forgetting`` from the committed results.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from spectra.io.keys import SCALED_KINDS
from spectra.settings import ASR_WARNING

#: the audit features, each a number per adapter (see :func:`features` for the definitions)
FEATURES = ("log_ratio_min", "log_ratio_median", "log_ratio_max", "log_ratio_deep", "cos_max", "cos_median",
            "overlap_median", "overlap_max")
#: log10 of a ratio is capped here: a zero update (ratio ∞) is "as weak as it gets"
LOG_RATIO_CAP = 6.0
#: the label the verdict is fitted to and the canary reports: the backdoor survives when the
#: triggered non-target texts still go to the target at least this often (and no collapse)
SURVIVES_ASR = 0.5


def backdoor_survives(asr: float | None, collapsed: bool | None) -> bool:
    """Whether a backdoor survived an adapter: ASR ≥ :data:`SURVIVES_ASR` on a model that has not
    collapsed to one class (a collapsed model's ASR is its bias, not the trigger)."""
    return bool(asr is not None and asr >= SURVIVES_ASR and not collapsed)
MODEL_FILE = Path(__file__).with_name("forgetting_model.json")
#: what each feature means, for reports
DEFINITIONS = {
    "log_ratio_min": "log10 of the smallest σ_pre/σ_Δ over the adapted modules (the strongest module)",
    "log_ratio_median": "log10 of the median σ_pre/σ_Δ over the adapted modules",
    "log_ratio_max": "log10 of the largest σ_pre/σ_Δ (the weakest module)",
    "log_ratio_deep": "log10 of the median σ_pre/σ_Δ over the modules in the deeper half of the layers",
    "cos_max": "largest max|cos| (left or right) of ΔW's leading vectors with W_pre's top-k, over modules",
    "cos_median": "median over modules of max|cos| (left or right)",
    "overlap_median": "median share of ΔW's energy inside W_pre's top-k subspaces",
    "overlap_max": "largest such share over modules",
}


def architecture_key(config: Mapping[str, Any]) -> str:
    """What the verdict's scope names a base by: model type, depth and width (``bert-6L-384`` is
    all-MiniLM-L6-v2's shape; a BERT-large is another architecture for the evidence)."""
    layers = config.get("num_hidden_layers", config.get("n_layer"))
    width = config.get("hidden_size", config.get("n_embd"))
    return f"{config.get('model_type') or 'unknown'}-{layers}L-{width}"


def _log_ratio(value: float) -> float:
    if value is None or not value > 0:
        return math.nan
    return min(math.log10(value), LOG_RATIO_CAP) if math.isfinite(value) else LOG_RATIO_CAP


def features(modules: Iterable[Mapping[str, Any]], gamma: float = 1.0) -> dict[str, float]:
    """The forgetting features of one adapter from its audit rows (``ratio``, ``cos_max_left``,
    ``cos_max_right``, ``overlap``, ``layer``), with every LoRA scale multiplied by ``gamma``
    (σ_Δ scales with γ, so the ratio divides by it; the alignment measures are scale-free)."""
    rows = [m for m in modules if m.get("ratio") is not None]
    if not rows:
        return {name: math.nan for name in FEATURES}
    ratios = [float(m["ratio"]) / gamma for m in rows]
    # cos and overlap are undefined (NaN/None) for a zero update or a zero base weight: left out, as
    # the audit's summary leaves them out
    cos = [max(pair) for pair in ([c for c in (_finite(m.get("cos_max_left")), _finite(m.get("cos_max_right")))
                                   if not math.isnan(c)] for m in rows) if pair]
    overlap = [o for o in (_finite(m.get("overlap")) for m in rows) if not math.isnan(o)]
    layers = [m.get("layer") for m in rows]
    known = [int(x) for x in layers if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if known:
        cut = statistics.median(sorted(set(known)))
        deep = [r for r, x in zip(ratios, layers)
                if x is not None and not (isinstance(x, float) and math.isnan(x)) and int(x) >= cut]
    else:
        deep = ratios
    return {"log_ratio_min": _log_ratio(min(ratios)), "log_ratio_median": _log_ratio(statistics.median(ratios)),
            "log_ratio_max": _log_ratio(max(ratios)), "log_ratio_deep": _log_ratio(statistics.median(deep or ratios)),
            "cos_max": max(cos, default=math.nan), "cos_median": statistics.median(cos) if cos else math.nan,
            "overlap_median": statistics.median(overlap) if overlap else math.nan,
            "overlap_max": max(overlap, default=math.nan)}


def _finite(value: Any) -> float:
    """A measure as a float, NaN when it is missing or not finite."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def load_model(path: str | Path | None = None) -> dict[str, Any] | None:
    """The fitted weights-only model (``None`` when none has been fitted yet)."""
    p = Path(path) if path is not None else MODEL_FILE
    if not p.is_file():
        return None
    return json.loads(p.read_text(encoding="utf-8"))


def evidence_line(feature: str, model: Mapping[str, Any] | None = None) -> str | None:
    """What the study measured about one audit number, for rule texts: its AUROC for "the
    backdoor survives" on the labelled adapters (None before a model has been fitted)."""
    model = model if model is not None else load_model()
    got = ((model or {}).get("features_auroc") or {}).get(feature)
    if not got:
        return None
    a, lo, hi = got
    reading = ("tells them apart" if min(lo, 1 - hi) > 0.5 or lo > 0.7 else
               "does not tell them apart" if lo <= 0.5 <= hi or max(a, 1 - a) < 0.7 else "tells them apart weakly")
    return (f"On the study's {model['n_adapters']} MiniLM adapters (docs/forgetting.md) its per-adapter summary "
            f"{feature} {reading}: AUROC {a:.2f} [{lo:.2f}, {hi:.2f}] for a surviving backdoor")


def predict(model: Mapping[str, Any], feats: Mapping[str, float]) -> float:
    """P(the backdoor survives) of the logistic model for one adapter's features."""
    z = float(model["intercept"])
    for name, coef, mean, scale in zip(model["features"], model["coef"], model["mean"], model["scale"]):
        z += coef * (float(feats[name]) - mean) / scale
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


def out_of_scope(model: Mapping[str, Any], architecture: str | None, feats: Mapping[str, float],
                 one_scale: bool = True) -> list[str]:
    """Why an adapter lies outside the model's validated scope (empty: inside). ``one_scale``: its LoRA
    modules share one scale, as trained; Pt (``spectra fix``) and ``alpha_pattern`` give each module its
    own, and on such adapters the study measured the model near chance (the scope's ``one_scale``)."""
    scope = model.get("scope") or {}
    why = []
    evidence = scope.get("one_scale")
    if evidence is not None and not one_scale:
        auroc = evidence.get("auroc") or [None]
        measured = (f"; on the study's {evidence['n']} rescaled adapters and stages the model's AUROC was "
                    f"{auroc[0]:.2f} [{auroc[1]:.2f}, {auroc[2]:.2f}]" if auroc[0] is not None else "")
        why.append("its LoRA scales differ across modules (per-module rescaling, as Pt or an alpha_pattern writes); "
                   f"the model was fitted on adapters with one scale{measured}")
    archs = scope.get("architectures") or []
    if archs and architecture not in archs:
        why.append(f"architecture {architecture or 'unknown'} (validated on {', '.join(archs)})")
    for name, (lo, hi) in (scope.get("ranges") or {}).items():
        value = feats.get(name)
        if value is None or not math.isfinite(value):
            why.append(f"{name} is not finite")
        elif not lo <= value <= hi:
            why.append(f"{name} = {value:.3g} outside the validated range [{lo:.3g}, {hi:.3g}]")
    return why


#: the update kinds the evidence holds (a LoRA-family adapter); a full fine-tune is out of scope
LORA_KINDS = SCALED_KINDS


def adapter_verdict(rows: Iterable[Mapping[str, Any]], architecture: str | None,
                    calibration: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The forgetting block of one adapter from its audit rows: its LoRA modules' features
    (a ``modules_to_save`` head is left out, as in the evidence) and :func:`verdict`."""
    rows = list(rows)
    lora = [r for r in rows if r.get("update_kind") in LORA_KINDS]
    if not lora:
        kinds = sorted({str(r.get("update_kind")) for r in rows})
        return {"evidence": "none", "p_survives": None, "estimate": "no validated estimate",
                "reason": f"no LoRA module (update kinds: {', '.join(kinds)}); the evidence holds LoRA-family adapters",
                "features": {}}
    scales = [abs(float(r["scale"])) for r in lora if r.get("scale") is not None]
    one_scale = not scales or max(scales) <= min(scales) * (1 + 1e-6)
    return verdict(features(lora), architecture, calibration, one_scale=one_scale)


def verdict(feats: Mapping[str, float], architecture: str | None, calibration: Mapping[str, Any] | None = None,
            model: Mapping[str, Any] | None = None, one_scale: bool = True) -> dict[str, Any]:
    """The ``forgetting`` block of one adapter's audit.

    ``evidence`` is ``canary`` when a calibration file measured on this base is given (the
    adapter's strength is placed against the scale at which the canary gave way), else
    ``weights-only`` from the fitted model — or ``none`` with ``reason`` when there is no
    validated estimate (no model, a model that failed validation, or out of scope).
    """
    if calibration is not None:
        return calibrated_verdict(feats, calibration, one_scale=one_scale)
    model = model if model is not None else load_model()
    block: dict[str, Any] = {"evidence": "none", "p_survives": None, "estimate": "no validated estimate",
                             "features": {k: feats.get(k) for k in FEATURES}}
    if model is None:
        block["reason"] = "no weights-only model has been fitted (python scripts/reproduce.py forgetting)"
        return block
    block["validation"] = model.get("validation")
    why = out_of_scope(model, architecture, feats, one_scale)
    if not model.get("validated"):  # and, when it holds too, why this adapter would be outside the scope anyway
        block["reason"] = (f"the weights-only model did not pass its validation: {model.get('validation_note', '')}"
                           + ("; and the adapter is outside its scope: " + "; ".join(why) if why else ""))
        return block
    if why:
        block["reason"] = "outside the validated scope: " + "; ".join(why)
        return block
    p = predict(model, feats)
    block.update(evidence="weights-only", p_survives=p,
                 estimate="the backdoor would likely survive" if p >= 0.5 else "the backdoor would likely be overridden")
    return block


#: the prefix of :func:`weights_fingerprint`'s values: a calibration without it was tied to its base by
#: a sampled hash (before 0.3) and is refused
FULL_FINGERPRINT = "sha256-full:"


def weights_fingerprint(folder: str | os.PathLike[str] | None) -> str | None:
    """SHA-256 over every weight file of a base folder, each read in full: what ties a canary's
    calibration (and its cached poisoned copy) to the base it was planted in: the weight files the
    audit reads (:func:`spectra.io.checkpoint.find_weight_files`) and ``config.json``. The reports'
    per-file hashes sample files above 64 MiB (size, first and last MiB); a base whose middle
    differs — a backdoored copy of a clean one — would pass as the same base."""
    from spectra.io.checkpoint import find_weight_files
    from spectra.provenance import file_sha256

    if folder is None or not Path(folder).is_dir():
        return None
    found = find_weight_files(Path(folder), allow_pickle=True)  # the files the audit reads, shards included
    if not found:
        return None
    config = Path(folder) / "config.json"
    files = sorted(found[1]) + ([config] if config.is_file() else [])
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{file_sha256(path)}\n".encode())
    return FULL_FINGERPRINT + digest.hexdigest()


def base_fingerprint(described: dict[str, Any] | None) -> str | None:
    """One hash of a base folder's weight files (``describe_path``'s per-file hashes): what ties a
    calibration to the base it was measured on."""
    files = {k: v for k, v in ((described or {}).get("files") or {}).items() if k.endswith((".safetensors", ".bin"))}
    if not files:
        return None
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def undecided_reason(planted_asr: float | None, collapsed: bool | None) -> str | None:
    """Why a canary cannot decide whether a backdoor survives the recipe (None: it can): a plant
    below the paper's bar is not a backdoor of the strength the question is about, and a collapsed
    model's ASR is its bias. Either way "removed" would be a pass by accident."""
    if planted_asr is None or not planted_asr > ASR_WARNING:  # "exceeds 95 %", as the study's bases
        shown = "unknown" if planted_asr is None else f"{100 * planted_asr:.1f} %"
        return (f"the planted canary reached {shown} ASR on held-out proxy rows, not above the "
                f"{100 * ASR_WARNING:.0f} % bar: too weak a backdoor to say whether the recipe removes one")
    if collapsed:
        return "the fine-tuned model collapsed to one class: its ASR says nothing about the canary"
    return None


def _crossing_range(interval: Any, value: float) -> tuple[float, float, bool | None]:
    """(low, high, whether ``value`` lies inside) for a calibration's ``crossing_value_ci``; an
    unbounded end is ∓∞; (nan, nan, None) when the calibration has no range (before 0.3)."""
    if not isinstance(interval, (list, tuple)) or len(interval) != 2:
        return math.nan, math.nan, None
    low = -math.inf if interval[0] is None else float(interval[0])
    high = math.inf if interval[1] is None else float(interval[1])
    return low, high, low <= value <= high


def _bound(x: float) -> str:
    return "unbounded" if math.isinf(x) else f"{x:.3g}"


def calibrated_verdict(feats: dict[str, float], calibration: dict[str, Any], one_scale: bool = True) -> dict[str, Any]:
    """An adapter's verdict against its base's canary: above the feature value where the canary
    gave way, a backdoor planted like the canary would likely survive it.

    No verdict (``evidence`` ``none``, with the reason) from a canary that could not decide (a
    plant under the 95 % bar, a collapsed model: :func:`spectra.canary.undecided_reason`, also
    read from older files' numbers) or for an adapter whose LoRA scales differ across modules
    (the canary's have one; the study measured the feature near chance on such adapters). The
    margin's sign is the canary's measurement; a probability needs the weights-only model's
    slope, so ``p_survives`` is given only when that model was validated (``slope_validated``).

    ``close_call`` is True when the adapter's value lies inside the crossing's range from the
    sweep's Wilson intervals (``crossing_value_ci``; ``margin_log10_ci`` is the margin's range,
    null for an unbounded end): the canary cannot place it on either side, and the gate reads it
    as surviving. None for a calibration written before 0.3, which has no range."""
    feature, cross = calibration.get("feature"), calibration.get("crossing_value")
    value = feats.get(feature) if feature else None
    block: dict[str, Any] = {"evidence": "canary", "p_survives": None, "features": dict(feats),
                             "canary": {"crossing_gamma": calibration.get("crossing_gamma"), "crossing_value": cross,
                                        "trigger": (calibration.get("canary") or {}).get("trigger"),
                                        "created": calibration.get("created")}}
    planted = calibration.get("canary") or {}
    undecided = calibration.get("undecided") or undecided_reason(planted.get("poisoned_heldout_asr"),
                                                                 (calibration.get("result") or {}).get("collapsed"))
    if undecided:
        block.update(evidence="none", estimate="no validated estimate", reason=f"the canary cannot decide: {undecided}")
        return block
    if not one_scale:
        block.update(evidence="none", estimate="no validated estimate",
                     reason="its LoRA scales differ across modules (per-module rescaling, as Pt or an alpha_pattern "
                            "writes); the canary's adapter has one scale, and the feature does not transfer")
        return block
    if value is None or cross is None or not math.isfinite(value):
        block.update(evidence="none", estimate="no validated estimate",
                     reason="the canary never crossed (no feature value to compare with)" if cross is None else
                     f"{feature} is not finite for this adapter")
        return block
    margin = value - cross
    never = not math.isfinite(calibration.get("crossing_gamma") or math.inf)
    top = calibration.get("working_gamma_max", calibration.get("grid_max"))  # the largest γ the model worked at
    if never and margin <= 0:  # stronger than anything the canary was swept to: it says nothing here
        block.update(evidence="none", estimate="no validated estimate", margin_log10=margin,
                     reason=f"the canary never gave way up to γ = {top:g}, and this adapter "
                            f"is stronger than the canary at that scale ({feature} {value:.3g} against {cross:.3g})")
        return block
    slope = calibration.get("slope") if calibration.get("slope_validated") else None
    low, high, close = _crossing_range(calibration.get("crossing_value_ci"), value)
    block.update(margin_log10=margin, survives=margin > 0, close_call=close,
                 margin_log10_ci=None if close is None else [value - high, value - low],
                 estimate=("the backdoor would likely survive" if margin > 0 else "the backdoor would likely be overridden")
                 + (f" (the canary never gave way up to γ = {top:g})" if never else "")
                 + (f" — a close call: {feature} {value:.3g} lies inside the canary crossing's range, "
                    f"{_bound(low)} to {_bound(high)} (from the sweep's Wilson 95 % intervals), so the gate reads it "
                    "as surviving" if close else ""))
    if slope:
        block["p_survives"] = 1 / (1 + math.exp(-max(-60.0, min(60.0, slope * margin))))
    else:  # the audit uses no unvalidated model: the sign stands, a probability does not
        block["reason"] = ("no probability: the slope that would turn the margin into one comes from the "
                           "weights-only model, which was not validated when the canary ran")
    return block
