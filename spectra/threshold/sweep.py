"""The transformer path: run a classifier with a PEFT adapter at each LoRA-scale multiplier
of a grid, score every grid point, and estimate the threshold from the margins."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from spectra.errors import SpectraError
from spectra.settings import with_legacy
from spectra.threshold.margins import ThresholdResult, margins, quantile, threshold_from_margins
from spectra.threshold.modules import ModuleChoice, choose_module, module_sigmas
from spectra.threshold.report import ThresholdReport
from spectra.threshold.settings import DEFAULT_GRID, ThresholdSettings, parse_grid

__all__ = ["DEFAULT_GRID", "parse_grid", "threshold"]  # the first two live in spectra.threshold.settings

def threshold(
    base: str | os.PathLike[str],
    adapter: str | os.PathLike[str],
    data: Any,
    trigger: Any,
    target_label: int = 0,
    settings: ThresholdSettings | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    **legacy: Any,
) -> ThresholdReport:
    """Estimate the scale at which ADAPTER overrides BASE's backdoor, and check it by a sweep.

    Args:
        base, adapter: a local HF model folder (or hub id) and a PEFT LoRA folder.
        data: labelled text (a spec for :func:`spectra.data.load_labelled` or a ``LabelledData``).
        trigger: a trigger spec (``badnet:mn``, ``insent:"…"``) or a parsed ``Trigger``.
        target_label: the backdoor's target label.
        settings: :class:`~spectra.threshold.settings.ThresholdSettings` (default: its defaults):
            ``grid``, the multipliers γ to measure CA(γ) and ASR(γ) at (0 and 1 are always
            measured); ``module``, which adapted module's σ's normalise the ρ's (default: the
            head, else nearest the output); ``max_samples`` (keep about this many non-target
            samples, a stratified subsample of all rows); ``split_test`` (evaluate on the test
            side of ``split(data, split_test, seed)`` only); ``head``: ``trained`` (the paper's
            sweep: γ multiplies the LoRA scale, a trained classification head is used as
            trained) or ``scaled`` (the head is extrapolated with γ too,
            :func:`spectra.eval.scaling.scaled_adapter`), recorded in the report; ``batch_size``,
            ``max_length``, ``seed``, ``device``, the data's ``text_col``/``label_col``;
            ``search_rows``, the rows of the cheap crossing search (:mod:`spectra.threshold.search`).
            Until 0.4 these are still taken as keywords (``grid=…``), with a ``DeprecationWarning``.

    Returns:
        :class:`ThresholdReport` (call ``.write(out)``).
    """
    import time
    import warnings

    from spectra.data import load_labelled, parse_trigger, split, trigger_rng
    from spectra.device import resolve_device
    from spectra.errors import SpectraWarning
    from spectra.eval.inference import count_over_length, predict_logits
    from spectra.eval.pipeline import refuse_untrained_head
    from spectra.eval.scaling import scaled_adapter
    from spectra.io import load_adapter, open_base
    from spectra.io.model import load_classifier
    from spectra.provenance import describe_path, library_versions

    t_start = time.perf_counter()
    s = with_legacy(ThresholdSettings, settings, legacy, "threshold")
    grid, module, batch_size, max_length, seed = s.grid, s.module, s.batch_size, s.max_length, s.seed
    max_samples, split_test, device, head, search_rows = s.max_samples, s.split_test, s.device, s.head, s.search_rows
    text_col, label_col = s.text_col, s.label_col
    timings: dict[str, float] = {}
    ks = sorted(set(parse_grid(grid)) | {0.0, 1.0})
    trig = parse_trigger(trigger) if isinstance(trigger, str) else trigger
    labelled = data if hasattr(data, "labels") and hasattr(data, "texts") else load_labelled(data, text_col, label_col)
    full_source = labelled.to_dict() if hasattr(labelled, "to_dict") else {"source": str(data)}
    labelled.require_target(target_label)
    notes: list[str] = []
    if split_test is not None:
        _, labelled = split(labelled, split_test, seed)
        notes.append(f"evaluated on the test side of a stratified split (test size {split_test}, seed {seed}): "
                     f"{len(labelled):,} rows")
        labelled.require_target(target_label)
    if max_samples is not None:
        labelled, note = _subsample(labelled, target_label, max_samples, seed, split)
        if note:
            notes.append(note)
    texts, labels = list(labelled.texts), list(labelled.labels)
    nt_idx = [i for i, y in enumerate(labels) if y != target_label]
    nt_labels = torch.tensor([labels[i] for i in nt_idx], dtype=torch.long)
    # text i's twin comes from trigger_rng(seed, i), exactly as spectra.eval.metrics.evaluate builds it
    trig_texts = [trig.insert(texts[i], trigger_rng(seed, i)) for i in nt_idx]

    # σ's of the chosen module, streamed from the checkpoints
    t0 = time.perf_counter()
    with open_base(base) as ckpt:
        with load_adapter(adapter, ckpt) as ad:
            chosen, why, sigma_pre, sigma_delta = _module_with_an_update(ad.modules, module, ckpt)
            choice = ModuleChoice(name=chosen.name, module_type=chosen.module_type, layer=chosen.layer,
                                  update_kind=chosen.update_kind, shape=tuple(chosen.shape), rank=int(chosen.rank),
                                  scale=float(chosen.scale), sigma_pre=sigma_pre, sigma_delta=sigma_delta, why=why)
            adapter_kinds = sorted({m.update_kind for m in ad.modules})
            n_modules = len(ad.modules)
    timings["spectra"] = time.perf_counter() - t0
    if "dora" in adapter_kinds:
        notes.append("the adapter uses DoRA, whose magnitude renormalisation is not linear in the LoRA scale; "
                     "γ multiplies the LoRA scaling only")

    dev = resolve_device(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SpectraWarning)
        model, tokenizer = load_classifier(base, adapter, num_labels=labelled.num_classes, device=dev)
    # margins of a random head measure nothing (eval refuses it too; threshold has no use for one)
    refuse_untrained_head(model, base, adapter, allowed=False)
    for w in caught:  # DoRA scaling and other loader notes: the report says so
        if issubclass(w.category, SpectraWarning):
            notes.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    def logits(batch_texts: list[str]) -> Tensor:
        return predict_logits(model, tokenizer, batch_texts, batch_size=batch_size, max_length=max_length,
                              progress=False).detach().to("cpu", torch.float64)

    t0 = time.perf_counter()
    total = len(ks)
    per_k: dict[float, tuple[Tensor, Tensor]] = {}
    for i, k in enumerate(ks):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SpectraWarning)  # DoRA's note is already in ``notes``
            with scaled_adapter(model, k, head=head):
                per_k[k] = (logits(texts), logits(trig_texts))
        if progress is not None:
            progress(i + 1, total)
    timings["sweep"] = time.perf_counter() - t0

    # the cheap estimate: an adaptive search on a subsample (spectra.threshold_search)
    from spectra.threshold.search import margins_function, search_crossing, subsample_rows, target_margins

    t0 = time.perf_counter()
    picked = subsample_rows(len(trig_texts), search_rows, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpectraWarning)
        search = search_crossing(margins_function(model, logits, [trig_texts[i] for i in picked], target_label,
                                                  head=head), len(picked))
    timings["search"] = time.perf_counter() - t0
    margins_by_gamma = {k: target_margins(per_k[k][1], target_label).tolist() for k in ks}

    y_all = torch.tensor(labels, dtype=torch.long)
    nt = torch.tensor(nt_idx, dtype=torch.long)
    clean0, trig0 = per_k[0.0]
    clean1, trig1 = per_k[1.0]
    result = threshold_from_margins(
        margins(clean0[nt], nt_labels, target_label), margins(trig0, nt_labels, target_label),
        margins(clean1[nt], nt_labels, target_label), margins(trig1, nt_labels, target_label),
        sigma_pre=sigma_pre, sigma_delta=sigma_delta, scale=choice.scale, index=nt,
    )
    checks = {"m0_equals_base": _check_base_margins(model, logits, texts, trig_texts, clean0, trig0, head)}
    if head == "scaled":
        notes.append("the classification head was extrapolated with γ (head = scaled: W_base + γ·(W_saved − W_base)); "
                     "the paper's sweep multiplies the LoRA scale only")
    longer = count_over_length(tokenizer, trig_texts, max_length)
    checks["triggered_longer_than_max_length"] = longer
    if longer:
        notes.append(f"{longer:,} of {len(trig_texts):,} triggered texts are longer than --max-length {max_length} "
                     "tokens: where the trigger landed past the cut the model never sees it (raise --max-length)")
    if checks["m0_equals_base"].get("ok") is False:
        notes.append(f"M_0 differs from the base model's margins by up to {checks['m0_equals_base']['max_abs_diff']:.3g}: "
                     "scaled_adapter(model, 0) did not reproduce the base; the estimates are suspect")

    sweep = []
    predicted = result.predicted_asr(ks).tolist()
    for k, pred in zip(ks, predicted):
        c, t = per_k[k]
        sweep.append(_sweep_row(k, c, t, y_all, nt, nt_labels, target_label, pred, result))
    versions = library_versions()
    settings = {"grid": ks, "target_label": target_label, "trigger": getattr(trig, "spec", str(trigger)),
                "module": module, "head": head, "search_rows": search_rows, "batch_size": batch_size, "max_length": max_length, "seed": seed,
                "max_samples": max_samples, "split_test": split_test, "device": str(dev),
                "text_col": text_col, "label_col": label_col}
    inputs = {"base": describe_path(base), "adapter": {**(describe_path(adapter) or {}), "modules": n_modules,
                                                    "update_kinds": adapter_kinds},
              "data": full_source, "evaluated_rows": len(texts), "non_target_rows": len(nt_idx),
              "label_names": list(labelled.label_names)}
    timings["total"] = time.perf_counter() - t_start
    return ThresholdReport(result=result, sweep=sweep, module=choice, settings=settings, inputs=inputs,
                           versions=versions, checks=checks, notes=notes, timings=timings, search=search,
                           margins_by_gamma=margins_by_gamma)


def _subsample(data: Any, target_label: int, max_samples: int, seed: int, split: Callable[..., Any]) -> tuple[Any, str]:
    if max_samples < 1:
        raise SpectraError(f"--max-samples must be ≥ 1, got {max_samples}")
    n_nt = sum(1 for y in data.labels if y != target_label)
    if n_nt <= max_samples:
        return data, ""
    total = int(round(len(data) * max_samples / n_nt))
    if total >= len(data):
        return data, ""
    _, sub = split(data, max(total, 1), seed)
    kept = sum(1 for y in sub.labels if y != target_label)
    return sub, (f"subsampled to {len(sub):,} rows ({kept:,} non-target; --max-samples {max_samples}), "
                 f"stratified, seed {seed}")


def _wilson(k: int, n: int) -> list[float] | None:
    from spectra.data import wilson_interval

    return [float(v) for v in wilson_interval(k, n)] if n else None


def _sweep_row(k: float, clean: Tensor, trig: Tensor, y_all: Tensor, nt: Tensor, nt_labels: Tensor,
               target: int, predicted: float, result: ThresholdResult) -> dict[str, Any]:
    """One grid point: CA, ASR, floor and collapse by :func:`spectra.eval.metrics.score`, the
    linear prediction at k, and how far the measured triggered margins are from it."""
    from spectra.eval.metrics import score

    s = score(clean.argmax(dim=1), trig.argmax(dim=1), y_all, nt, target, int(clean.shape[1]))
    m_trig = margins(trig, nt_labels, target)
    linear = result.M0_trig + k * result.D_trig
    return {
        "gamma": float(k),
        "k": float(k),  # the 0.1 name of gamma, kept for one release
        "ca": s.ca,
        "asr": s.asr,
        "asr_floor": s.asr_floor,
        "majority_share": s.majority_share,
        "predicted_asr": float(predicted),
        "ca_ci": _wilson(s.n_correct, s.n_clean),
        "asr_ci": _wilson(s.n_hits, s.n_triggered),
        "asr_floor_ci": _wilson(s.n_floor_hits, s.n_triggered),
        "n": s.n_clean, "n_non_target": s.n_triggered,
        "collapsed": s.collapsed,
        "top_class_share": max(s.predicted_share) if s.predicted_share else float("nan"),
        "median_margin_trig": quantile(m_trig, 0.5) if s.n_triggered else float("nan"),
        "median_abs_nonlinearity": quantile((m_trig - linear).abs(), 0.5) if s.n_triggered else float("nan"),
    }


def _check_base_margins(model: Any, logits: Callable[[list[str]], Tensor], texts: list[str], trig_texts: list[str],
                        clean0: Tensor, trig0: Tensor, head: str = "trained", limit: int = 64) -> dict[str, Any]:
    """Compare γ = 0 logits, on a few rows, with PEFT switching the same parts off by its own
    flags: every LoRA layer disabled (head as trained), or the whole adapter
    (``disable_adapter``) when the head was scaled too."""
    sub_c, sub_t = texts[:limit], trig_texts[:limit]
    if head == "scaled":
        disable = getattr(model, "disable_adapter", None)
        if disable is None:
            return {"ok": None, "why": "the model has no disable_adapter(); not checked"}
        how = "logits under scaled_adapter(model, 0, head='scaled') vs the same model with PEFT's disable_adapter()"
        with disable():
            base_c, base_t = logits(sub_c), logits(sub_t)
    else:
        from peft.tuners.lora import LoraLayer

        layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
        how = "logits under scaled_adapter(model, 0) vs the same model with every PEFT LoRA layer disabled"
        saved = [(m, m.disable_adapters) for m in layers]
        try:
            for m, _ in saved:
                m.enable_adapters(False)
            base_c, base_t = logits(sub_c), logits(sub_t)
        finally:
            for m, was_disabled in saved:
                m.enable_adapters(not was_disabled)
    diff = max(float((base_c - clean0[: len(sub_c)]).abs().max()) if sub_c else 0.0,
               float((base_t - trig0[: len(sub_t)]).abs().max()) if sub_t else 0.0)
    scale = max(float(base_c.abs().max()) if sub_c else 1.0, 1.0)
    return {"ok": diff <= 1e-4 * scale, "max_abs_diff": diff, "rows_checked": len(sub_c) + len(sub_t), "how": how}


def _module_with_an_update(modules: list[Any], pattern: str | None, ckpt: Any) -> tuple[Any, str, float, float]:
    """:func:`choose_module`'s pick with its σ's, passing over modules whose update is zero (an
    untouched ``modules_to_save`` head): ρ's normalised by σ_Δ = 0 are undefined, and a report
    built on them read "Proposition 4.2 applies sample by sample" over NaNs. A ``--module`` the
    user named is not replaced by one it does not match: when none of its matches has an update, that
    is an error."""
    remaining, skipped = list(modules), []
    while True:
        try:
            chosen, why = choose_module(remaining, pattern)
        except SpectraError:
            if not skipped:
                raise
            raise SpectraError(f"--module {pattern}: every module it matches ({', '.join(skipped[:4])}) has a zero "
                               "update or base weight, so ρ's normalised by them are undefined; name a module the "
                               "adapter changes") from None
        sigma_pre, sigma_delta = module_sigmas(chosen, ckpt)
        if sigma_delta > 0 and sigma_pre > 0:
            if skipped:
                why += f" ({', '.join(skipped)} passed over: σ_max of its update or base weight is 0)"
            return chosen, why, sigma_pre, sigma_delta
        skipped.append(chosen.name)
        remaining.remove(chosen)
        if pattern and chosen.name == pattern:  # an exact name is the user's pick: no other module replaces it
            raise SpectraError(f"--module {pattern}: σ_max(W_pre) = {sigma_pre:g} and σ_max(s·ΔW) = {sigma_delta:g}, "
                               "so ρ's normalised by them are undefined; name a module the adapter changes")
        if not remaining:
            raise SpectraError(f"every module the adapter saves has a zero update or a zero base weight "
                               f"({', '.join(skipped[:4])}{', ...' if len(skipped) > 4 else ''}): nothing to measure")
