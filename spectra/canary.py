"""``spectra canary``: will my recipe override a backdoor in this base, when I do not know the trigger?

Plant a *canary* — a fresh rare-token trigger the user's data never contains, with the paper's
clean-label recipe (the trigger added to target-class rows of a proxy, labels unchanged; full
fine-tuning) — in a copy of the user's base, fine-tune the user's LoRA recipe on the user's
clean data, and measure whether the canary survives (ASR with its interval, the floor, a
collapse flag) and the LoRA scale γ at which it gives way (the threshold sweep and its
crossing search). The result is a per-base calibration file: ``spectra audit --calibration
FILE`` places a later adapter on that base against the canary's crossing.

The user's data is split three ways (stratified, seeded): a proxy the canary is planted with
(40 %), the fine-tuning rows (40 %) and test rows (20 %); the poisoned copy is cached by content
(base, data, trigger, settings), so a second canary on the same base and data skips poisoning.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spectra.errors import SpectraError
from spectra.forgetting import backdoor_survives, undecided_reason
from spectra.measured import CANARY_QUICK_MIN
from spectra.settings import batch_size_setting, max_length_setting, seed_setting, setting, target_label_setting
from spectra.train.config import parse_target_modules

#: rare tokens a canary trigger is drawn from (the BadNet family's: nonsense bigrams)
CANARY_TOKENS = ("cf", "mn", "bb", "tq", "mb", "zx", "qv", "jk", "vx", "kq")
FORMAT = "spectra-canary/1"
#: rows of every label each canary split needs: poisoning holds out a fifth of the proxy, which must
#: still hold each label for the canary's held-out CA and ASR
MIN_PER_CLASS = 10
#: the share of the proxy's target-class rows that get the trigger (the paper: ~28 % of MR's)
POISON_SHARE = 0.3
#: the scale multipliers the sweep measures (the crossing search narrows between them)
GRID = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


@dataclass
class CanarySettings:
    """The canary's recipe: the user's LoRA recipe (``rank`` … ``dora``, ``epochs``, ``lr``,
    ``batch_size``), and how the canary is planted (``poison_*``). ``quick`` subsamples the data
    (1,200 proxy rows, 500 fine-tuning rows, 250 test rows, length 64): a cold run on MiniLM measured
    :data:`spectra.measured.CANARY_QUICK_MIN` minutes on 2 cores."""

    rank: int = setting(8, "--rank", "-r", help="LoRA rank r (without --adapter).")
    alpha: float = setting(16.0, "--alpha", help="LoRA α (without --adapter).")
    target_modules: list[str] | str | None = setting(
        None, "--target-modules", help="Module names or all-linear (without --adapter). Default: attention "
                                       "query,value.", cli_type=list[str] | None, parse=parse_target_modules)
    use_rslora: bool = setting(False, "--rslora", help="Rank-stabilised scale α/√r (without --adapter).")
    use_dora: bool = setting(False, "--dora", help="DoRA (without --adapter).")
    lora_dropout: float = 0.1
    epochs: float = setting(3.0, "--epochs", help="Your training epochs.")
    lr: float = setting(2e-4, "--lr", help="Your learning rate.")
    batch_size: int = batch_size_setting()
    max_length: int = max_length_setting()
    seed: int = seed_setting()
    target_label: int = target_label_setting()
    quick: bool = setting(False, "--quick", help=f"Subsample the data (1,200 proxy / 500 train / 250 test rows, "
                                                 f"length 64): {CANARY_QUICK_MIN:g} min on 2 CPU cores for MiniLM, "
                                                 "measured cold.")
    poison_epochs: float = 3.0
    poison_lr: float = 2e-5
    recipe_from: str | None = None  # the adapter_config.json the LoRA settings came from
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.quick:
            self.max_length = min(self.max_length, 64)
            self.poison_lr = max(self.poison_lr, 1e-4)  # what ~100 steps need (the quick demo's choice)
            self.notes.append("quick: proxy 1,200 rows, fine-tuning 500, test 250, max length 64, poisoning lr 1e-4")
        for name in ("alpha", "lr", "epochs", "poison_lr", "poison_epochs"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise SpectraError(f"--{name.replace('_', '-')} {value!r}: must be a finite positive number")
        if self.rank < 1 or self.batch_size < 1:
            raise SpectraError("--rank and --batch-size must be at least 1")

    @classmethod
    def from_adapter(cls, adapter: str | os.PathLike[str], **overrides: Any) -> CanarySettings:
        """The LoRA recipe of an existing adapter (r, α, targets, rsLoRA, DoRA, dropout) from its
        ``adapter_config.json``; the optimisation settings (lr, epochs, batch) are the caller's."""
        for name in ("rank", "alpha", "target_modules", "use_rslora", "use_dora", "lora_dropout"):
            overrides.pop(name, None)  # the adapter's, not the defaults a settings object carried
        from spectra.io.files import read_json
        from spectra.io.peft_config import resolve_rank_alpha

        if not Path(adapter).is_dir():
            raise SpectraError(f"{adapter}: --adapter takes a PEFT adapter folder (with adapter_config.json)")
        path = Path(adapter) / "adapter_config.json"
        cfg = read_json(path)
        r, alpha = resolve_rank_alpha(cfg, "")
        targets = cfg.get("target_modules")
        return cls(rank=r, alpha=alpha, target_modules=sorted(targets) if isinstance(targets, list) else targets,
                   use_rslora=bool(cfg.get("use_rslora")), use_dora=bool(cfg.get("use_dora")),
                   lora_dropout=float(cfg.get("lora_dropout", 0.1)), recipe_from=str(path), **overrides)


def pick_trigger(texts: list[str], seed: int = 0) -> str:
    """A BadNet trigger word that occurs in none of ``texts`` (a canary the user never uses)."""
    words = {w.strip(".,;:!?\"'()").lower() for t in texts for w in t.split()}
    order = list(CANARY_TOKENS)
    random.Random(f"spectra-canary:{seed}").shuffle(order)
    for token in order:
        if token not in words:
            return f"badnet:{token}"
    raise SpectraError(f"every canary token ({', '.join(CANARY_TOKENS)}) occurs in the data: cannot plant a fresh one")


def canary_splits(data: Any, s: CanarySettings) -> tuple[Any, Any, Any]:
    """The user's data as the canary uses it: (proxy the canary is planted with, fine-tuning rows, test
    rows), seeded by ``s.seed`` — the same three every run on the same data and settings."""
    from spectra.data import split

    rest, test = split(data, 0.2, s.seed)
    proxy, train = split(rest, 0.5, s.seed)
    if s.quick:
        def sub(d: Any, n: int) -> Any:
            return d if len(d) <= n else split(d, n, s.seed)[1]

        proxy, train, test = sub(proxy, 1200), sub(train, 500), sub(test, 250)
    for name, part in (("proxy", proxy), ("fine-tuning", train), ("test", test)):
        counts = {y: list(part.labels).count(y) for y in sorted(set(data.labels))}
        if min(counts.values()) < MIN_PER_CLASS:  # checked before any training: poisoning holds out 20 % of
            # the proxy, and a held-out split without a class fails hours later with a misleading line
            held = ", ".join(f"{n} of label {y}" for y, n in counts.items())
            raise SpectraError(f"{data.source}: too few rows for a canary — its {name} split (of proxy 40 % / "
                               f"fine-tuning 40 % / test 20 %) holds {held}; each split needs ≥ {MIN_PER_CLASS} "
                               f"rows of every label (about {5 * MIN_PER_CLASS} per label in the data)")
    return proxy, train, test


def _poisoned_copy(base: str, proxy: Any, trigger: str, s: CanarySettings, cache: Path, log: Any,
                   device: str) -> tuple[Path, dict[str, Any]]:
    """The base with the canary planted (from the cache when this base, data and recipe were done)."""
    from spectra.forgetting import weights_fingerprint
    from spectra.provenance import describe_path
    from spectra.train.options import RunOptions
    from spectra.train.poison import PoisonConfig, poison

    targets = sum(1 for y in proxy.labels if y == s.target_label)
    n_poison = max(1, round(POISON_SHARE * 0.8 * targets))  # poison() holds out 20 % of the proxy
    rows = "\n".join(f"{y}\t{t}" for t, y in zip(proxy.texts, proxy.labels))
    # the base by its full weights' hash (the reports' per-file hashes sample big files): a cached copy
    # planted in another base must never be reused for this one
    spec = {"base": describe_path(base), "weights": weights_fingerprint(base),
            "data": hashlib.sha256(rows.encode("utf-8")).hexdigest(),
            "trigger": trigger, "n_poison": n_poison, "epochs": s.poison_epochs, "lr": s.poison_lr,
            "max_length": s.max_length, "seed": s.seed, "target": s.target_label}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]
    folder = cache / key
    if (folder / "poison.json").is_file():
        log(f"canary: the poisoned copy is in the cache ({folder})")
    else:
        log(f"canary: planting {trigger} in {n_poison} of {targets} target-class proxy rows (clean-label, "
            f"{s.poison_epochs:g} epochs at lr {s.poison_lr:g})")
        work = folder.with_name(key + ".partial")
        config = PoisonConfig(target_label=s.target_label, n_poison=n_poison, mode="clean-label",
                              epochs=s.poison_epochs, lr=s.poison_lr, max_length=s.max_length, seed=s.seed,
                              test_size=0.2, device=device)
        result = poison(base, proxy, trigger, config, run=RunOptions(log=log, work_dir=work, resume=work.exists()))
        result.write(folder, overwrite=True)
    info = json.loads((folder / "poison.json").read_text(encoding="utf-8"))
    return folder, {"n_poison": n_poison, "key": key, "heldout": info.get("evaluation") or {}}


def _config(s: CanarySettings) -> Any:
    from spectra.train.config import RoRAConfig

    return RoRAConfig.baseline("lora", rank=s.rank, alpha=s.alpha, target_modules=s.target_modules,
                               use_rslora=s.use_rslora, use_dora=s.use_dora, lora_dropout=s.lora_dropout,
                               epochs=s.epochs, lr=s.lr, batch_size=s.batch_size, max_length=s.max_length,
                               seed=s.seed)


def run_canary(base: str, data: Any, out: str | os.PathLike[str], settings: CanarySettings, *,
               text_col: str | None = None, label_col: str | None = None, run: Any = None,
               **legacy: Any) -> dict[str, Any]:
    """Plant, fine-tune, measure, calibrate; writes ``OUT/calibration.json``, ``OUT/canary.json``,
    ``OUT/report.md`` and ``OUT/fix/`` (the canary run: adapter, eval, training log). Resumable:
    the poisoned copy is cached and the fine-tuning keeps checkpoints in ``OUT.partial``.

    ``run`` (:class:`~spectra.train.options.RunOptions`): ``device``, ``overwrite``, ``resume`` and
    ``log`` (default: print); until 0.4 they are still taken as keywords, with a ``DeprecationWarning``."""
    from spectra.audit import AuditSettings, audit
    from spectra.data import load_labelled
    from spectra.forgetting import LORA_KINDS, architecture_key, features, load_model, weights_fingerprint
    from spectra.io.files import cache_dir
    from spectra.io.hub import resolve_folder
    from spectra.io.output import atomic_output_dir, check_output_dir
    from spectra.threshold import ThresholdSettings, threshold
    from spectra.threshold.report import crossing_interval, measured_crossing
    from spectra.train.fix import run_fix
    from spectra.train.options import FixData, RunOptions, split_legacy

    _, opts = split_legacy("run_canary", data, run, legacy, uses=frozenset({"device", "overwrite", "resume", "log"}))
    device, overwrite, resume, log = opts.device or "auto", opts.overwrite, opts.resume, opts.log or print
    started = time.perf_counter()
    out = Path(out)
    base = str(resolve_folder(base, "model"))  # an hf:// base: its snapshot (with its commit) from here on
    check_output_dir(out, overwrite, inputs=[base, data if isinstance(data, (str, os.PathLike)) else None])
    labelled = load_labelled(data, text_col=text_col, label_col=label_col)
    if labelled.num_classes < 2:
        raise SpectraError(f"{labelled.source}: a single class; a canary needs at least two")
    if settings.target_label not in set(labelled.labels):
        raise SpectraError(f"{labelled.source}: target label {settings.target_label} is absent from the data")
    trigger = pick_trigger(list(labelled.texts), settings.seed)
    proxy, train, test = canary_splits(labelled, settings)
    log(f"canary: {trigger} (absent from the data); proxy {len(proxy):,} rows, fine-tuning {len(train):,}, "
        f"test {len(test):,}")
    poisoned, planted = _poisoned_copy(base, proxy, trigger, settings, cache_dir() / "canary", log, device)
    work = out.with_name(out.name + ".partial")
    work.mkdir(parents=True, exist_ok=True)
    fix_out = work / "fix"
    if not (fix_out / "eval.json").is_file():
        shutil.rmtree(fix_out, ignore_errors=True)
        run_fix(str(poisoned), FixData(train, eval=test, trigger=trigger, target_label=settings.target_label), fix_out,
                config=_config(settings), run=RunOptions(device=device, work_dir=work / "fix.partial", log=log,
                                                         resume=resume and (work / "fix.partial").exists()))
    rows = {r["model"]: r for r in json.loads((fix_out / "eval.json").read_text(encoding="utf-8"))}
    log("canary: sweeping the LoRA scale to find where the canary gives way")
    sweep = ThresholdSettings(grid=GRID, max_length=settings.max_length, device=device, batch_size=64)
    thr = threshold(str(poisoned), str(fix_out / "adapter"), test, trigger, settings.target_label, sweep)
    report = audit(base, [str(fix_out / "adapter")], AuditSettings(device=device), names=["canary"], cache_dir=None)
    lora_rows = [r for r in report.rows if r.get("update_kind") in LORA_KINDS]
    feats = features(lora_rows)
    model = load_model() or {}
    feature = (model.get("features") or ["log_ratio_deep"])[0]
    slope = (model["coef"][0] / model["scale"][0]) if model.get("coef") else None
    # the crossing only where the model still works: a collapsed point's ASR is its bias, not the
    # canary (one that collapses onto the non-target class would fake an early crossing)
    working = [row for row in thr.sweep if not row.get("collapsed")]
    gamma = measured_crossing(working) if working else math.nan
    gamma_lo, gamma_hi = crossing_interval(working) if working else (math.nan, math.nan)
    top = max((row["gamma"] for row in working), default=0.0)
    new = rows["new"]
    undecided = undecided_reason(planted["heldout"].get("asr"), new.get("collapsed"))
    result = {
        "format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "base": {"path": str(Path(base)), "fingerprint": weights_fingerprint((report.inputs.get("base") or {}).get("path")),
                 "architecture": architecture_key(_config_of(base))},
        "canary": {"trigger": trigger, "target_label": settings.target_label, "n_poison": planted["n_poison"],
                   "poisoned_heldout_asr": planted["heldout"].get("asr"), "poisoned_test_asr": rows["base"]["asr"],
                   "poisoned_copy": str(poisoned)},
        "recipe": asdict(settings), "data": {"proxy": proxy.summary(), "train": train.summary(),
                                             "test": test.summary()},
        "result": {k: new.get(k) for k in ("ca", "asr", "asr_ci", "asr_floor", "collapsed", "ca_ci")},
        # None when the canary cannot decide (a weak plant, a collapsed model): never "removed" by default
        "survives": None if undecided else backdoor_survives(new["asr"], new.get("collapsed")),
        "undecided": undecided,
        "crossing_gamma": gamma, "search_gamma": thr.search_threshold_gamma, "grid_max": max(GRID),
        "working_gamma_max": top,
        "sweep": [{k: row.get(k) for k in ("gamma", "ca", "asr", "asr_floor", "collapsed")} for row in thr.sweep],
        "feature": feature, "canary_value": feats.get(feature), "slope": slope,
        "slope_validated": bool(model.get("validated")),
        "crossing_value": _crossing_value(feats.get(feature), gamma, top),
        # how sharply the sweep places the crossing (the points' Wilson intervals): an adapter inside
        # this range is a close call, which the gate does not pass (spectra.forgetting.calibrated_verdict)
        "crossing_gamma_ci": [gamma_lo, gamma_hi],
        "crossing_value_ci": _crossing_value_interval(feats.get(feature), gamma_lo, gamma_hi, top),
        "features": feats, "seconds": round(time.perf_counter() - started, 1),
    }
    from spectra.provenance import strict_json
    from spectra.report.canary_markdown import render_canary_markdown

    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        shutil.move(str(fix_out), tmp / "fix")
        (tmp / "canary.json").write_text(strict_json(result) + "\n", encoding="utf-8")
        (tmp / "calibration.json").write_text(strict_json(calibration_of(result)) + "\n", encoding="utf-8")
        (tmp / "report.md").write_text(render_canary_markdown(result), encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)
    # the verdict itself is the caller's to print (the CLI's result line); the log says where it went
    log(f"canary: wrote {out} in {result['seconds'] / 60:.1f} min")
    return result


def _config_of(base: str) -> dict[str, Any]:
    from spectra.io.files import read_json

    return read_json(Path(base) / "config.json")


def _crossing_value(value: float | None, gamma: float, grid_max: float) -> float | None:
    """The feature at which the canary gives way: σ_Δ scales with γ, so log10 σ_pre/σ_Δ drops by log10 γ.
    A canary that never gave way up to the grid's top gives a bound, recorded as that."""
    if value is None or not math.isfinite(value):
        return None
    if gamma is None or not gamma > 0 or not grid_max > 0:
        return None
    return value - math.log10(min(gamma, grid_max) if math.isfinite(gamma) else grid_max)


def _crossing_value_interval(value: float | None, gamma_lo: float, gamma_hi: float,
                              grid_max: float) -> list[float | None] | None:
    """The feature values of the crossing's γ range, [low, high]: a later crossing is a smaller
    value. ``high`` is None (unbounded) when the lower bounds crossed at γ = 0, ``low`` when the
    upper bounds never crossed; None when there is no range at all."""
    if value is None or not math.isfinite(value) or not math.isfinite(gamma_lo) or math.isnan(gamma_hi):
        # no working sweep point, or not even the lower bounds crossed: no range (the verdict's
        # never-crossed reading, a bound at the sweep's top, applies)
        return None
    # upper bounds that never fell below 50 %: the crossing may lie beyond the sweep, so the range
    # has no lower end (not the sweep's top, which would pass a stronger adapter on a bound)
    low = _crossing_value(value, gamma_hi, grid_max) if math.isfinite(gamma_hi) else None
    return [low, _crossing_value(value, gamma_lo, grid_max)]


def calibration_of(result: dict[str, Any]) -> dict[str, Any]:
    """The part of a canary result ``spectra audit --calibration`` reads."""
    keys = ("format", "created", "base", "canary", "result", "survives", "crossing_gamma", "grid_max", "feature",
            "canary_value", "crossing_value", "slope", "slope_validated", "undecided", "working_gamma_max",
            "crossing_gamma_ci", "crossing_value_ci")
    return {k: result.get(k) for k in keys} | {"recipe": {k: result["recipe"][k] for k in
                                                      ("rank", "alpha", "target_modules", "use_rslora", "use_dora",
                                                       "epochs", "lr", "batch_size", "quick")}}


def _finite_number(value: Any) -> bool:
    """A JSON number the verdict can compute with (an integer of 400 digits overflows a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def load_calibration(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A calibration file, checked for its format."""
    from spectra.io.files import read_json

    doc = read_json(path)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise SpectraError(f"{path}: not a spectra canary calibration (format {got!r})")
    # the verdict computes with these: a hand-edited file gets one line, not a TypeError mid-audit
    for key in ("slope", "crossing_value", "crossing_gamma", "grid_max", "canary_value", "working_gamma_max"):
        value = doc.get(key)
        if value is not None and not _finite_number(value):
            raise SpectraError(f"{path}: {key} = {value!r} is not a finite number")
    interval = doc.get("crossing_value_ci")
    if interval is not None and not (
            isinstance(interval, list) and len(interval) == 2 and all(v is None or _finite_number(v) for v in interval)
            and (None in interval or interval[0] <= interval[1])):
        raise SpectraError(f"{path}: crossing_value_ci = {interval!r} is not an interval [low, high] (null: unbounded)")
    if doc.get("feature") is not None and not isinstance(doc["feature"], str):
        raise SpectraError(f"{path}: feature = {doc['feature']!r} is not a feature name")
    if not isinstance(doc.get("base") or {}, dict):
        raise SpectraError(f"{path}: base must be a table with the base's fingerprint")
    if doc.get("slope_validated") is not None and not isinstance(doc["slope_validated"], bool):
        raise SpectraError(f"{path}: slope_validated = {doc['slope_validated']!r} is not true or false")
    planted = doc.get("canary") if isinstance(doc.get("canary"), dict) else {}
    result = doc.get("result") if isinstance(doc.get("result"), dict) else {}
    undecided = doc.get("undecided") or undecided_reason(planted.get("poisoned_heldout_asr"), result.get("collapsed"))
    if undecided:  # a gate given a calibration must not run ungated on one that cannot decide
        raise SpectraError(f"{path}: the canary behind this calibration could not decide ({undecided}); it "
                           "calibrates nothing")
    return doc
