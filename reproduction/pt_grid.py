"""Pt by depth and mode: every trained MiniLM adapter on disk, rescaled after the fact and evaluated.

Pt is post hoc, so its depth and mode need no new training: each adapter (RoRA's is taken
*before* its own Pt) is rescaled at depth {top 1, top 3, top half, all blocks} and in two
modes — ``match`` (the paper's Eq. 12: every chosen module to σ_max(W_pre), which also shrinks
an update already above it) and ``amplify`` (never below the trained scale) — exactly as
``spectra fix --rescale-only --rescale-layers D --rescale-mode M`` does, and evaluated on the
run's test split with its trigger. The same adapter before and after is a paired difference.

Variants whose scales equal another's are evaluated once: on MiniLM's 6 blocks the top half
*is* the top 3, and an ``amplify`` that raises nothing is the adapter as trained (its result's
own evaluation is reused). One JSON per run in ``docs/study/pt_grid/``; a run is skipped when
its adapter or poisoned base is no longer on disk (results keep numbers, not weights).
"""

from __future__ import annotations

import functools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spectra.forgetting import SURVIVES_ASR
from spectra.train.rescale import RESCALE_MODES

#: Pt's depths (top N blocks, the top half, every block) and modes, as ``spectra fix`` spells them
DEPTHS: tuple[int | str, ...] = (1, 3, "half", "all")
MODES = RESCALE_MODES  # ("match", "amplify"): spectra fix's own list


def _adapter_of(doc: dict[str, Any]) -> Path:
    folder = Path(doc["folder"])
    before = folder / "adapter_before_rescale"
    return before if before.is_dir() else folder / "adapter"


def _unrescaled_eval(doc: dict[str, Any]) -> dict[str, Any] | None:
    ev = doc.get("eval") or {}
    return ev.get("new-before-rescale") or ev.get("new")


def grid_one(base: Path, adapter: Path, test: Any, trigger: str, target_label: int, *, seed: int, max_length: int,
             as_trained: dict[str, Any], log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Every (depth, mode) variant of ``adapter`` on ``base``: what Pt changed, and its evaluation."""
    from spectra.eval.pipeline import run_eval
    from spectra.eval.settings import EvalSettings
    from spectra.io import load_adapter, open_base
    from spectra.study.records import compact_eval
    from spectra.train.rescale import plan_rescale, write_rescaled

    rows: list[dict[str, Any]] = []
    seen: dict[tuple[float, ...], dict[str, Any]] = {}
    with open_base(str(base)) as checkpoint, load_adapter(str(adapter), checkpoint) as lora:
        plans = {(d, m): plan_rescale(checkpoint, lora, layers=d, mode=m) for d in DEPTHS for m in MODES}
    trained = tuple(round(r.scale_before, 12) for r in next(iter(plans.values())).rows)
    seen[trained] = as_trained
    for (depth, mode), plan in plans.items():
        key = tuple(round(r.scale_after, 12) for r in plan.rows)
        t0 = time.time()
        if key not in seen:
            with tempfile.TemporaryDirectory(prefix="spectra-pt-grid-") as tmp:
                folder = write_rescaled(adapter, Path(tmp) / "adapter", plan)
                res = run_eval(str(base), str(folder), test, trigger, target_label,
                               EvalSettings(seed=seed, max_length=max_length, device="cpu"), progress=False)
            seen[key] = compact_eval(res.to_dict())
            log(f"  Pt {depth} {mode}: ASR {seen[key]['asr']:.3f} CA {seen[key]['ca']:.3f} "
                f"({time.time() - t0:.0f} s)")
        rows.append({**_plan_row(depth, mode, plan), "same_as_trained": key == trained, "eval": seen[key]})
    return rows


def _plan_row(depth: int | str, mode: str, plan: Any) -> dict[str, Any]:
    """What Pt changed at one depth and mode: the blocks, and each rescaled module's multiplier s'/s
    (the forgetting table divides the audit's ratio by it: the rescaled adapter's features)."""
    multipliers = {r.module: r.scale_after / r.scale_before for r in plan.rows if r.rescaled and r.scale_before}
    return {"depth": depth, "mode": mode, "blocks": plan.blocks if depth != "all" else list(range(plan.n_blocks)),
            "n_blocks": plan.n_blocks, "rescaled": sum(r.rescaled for r in plan.rows), "modules": len(plan.rows),
            "multiplier_min": min(multipliers.values(), default=1.0),
            "multiplier_max": max(multipliers.values(), default=1.0), "multipliers": multipliers}


def add_multipliers(out: Path, work: Path, log: Callable[[str], None] = print) -> int:
    """Give grid documents written before ``multipliers`` was recorded their per-module multipliers,
    recomputed from the same plans (Pt's plan is deterministic; nothing is evaluated again)."""
    from spectra.io import load_adapter, open_base
    from spectra.study.records import write_json
    from spectra.train.rescale import plan_rescale

    done = 0
    for path in sorted(out.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if all("multipliers" in r for r in doc["grid"]):
            continue
        run = doc["run"]
        base = work / "bases" / f"minilm__{run['attack']}__b{run['base_seed']}__base"
        with open_base(str(base)) as checkpoint, load_adapter(doc["adapter"], checkpoint) as lora:
            for row in doc["grid"]:
                row.update(_plan_row(row["depth"], row["mode"],
                                     plan_rescale(checkpoint, lora, layers=row["depth"], mode=row["mode"])))
        write_json(path, doc)
        done += 1
    if done:
        log(f"Pt grid: per-module multipliers added to {done} earlier grid documents")
    return done


def _canary_todo(results: Path, out: Path, pattern: Any) -> list[tuple[Path, dict[str, Any], Path, Path]]:
    """Canary-evidence runs (``reproduce.py canary-evidence``) whose poisoned copy and adapter are on
    disk: SmolLM2's 30 blocks are where Pt's depth matters (its top 3 are a tenth of them)."""
    todo = []
    for path in sorted(results.glob("*__canary__*__finetune__*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        canary = doc.get("canary") or {}
        base, adapter = Path(canary.get("poisoned_copy") or "/nonexistent"), Path(doc["folder"]) / "fix" / "adapter"
        if (out / path.name).is_file() or (pattern and not pattern.search(path.stem)) \
                or not (adapter / "adapter_config.json").is_file() or not (base / "config.json").is_file():
            continue
        todo.append((path, doc, base, adapter))
    return todo


@functools.lru_cache(maxsize=1)
def _canary_test() -> Any:
    """The quick canary's 250 test rows of CR (what its runs were evaluated on)."""
    from spectra.canary import CanarySettings, canary_splits
    from spectra.data import load_labelled

    return canary_splits(load_labelled("cr"), CanarySettings(quick=True))[2]


def run_grid(results: Path, work: Path, out: Path, *, only: str | None = None,
             log: Callable[[str], None] = print) -> int:
    """Write ``out/<run id>.json`` for every MiniLM BadNet/InSent finetune result whose adapter and base
    are on disk and that has no grid yet; returns how many were written."""
    import re

    from spectra.study.execute import Study
    from spectra.study.recipe import ATTACKS, TARGET_LABEL
    from spectra.study.records import write_json

    study = Study(results, work)
    pattern = re.compile(only) if only else None
    todo = []
    for path in sorted(results.glob("minilm__*__finetune__*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        run = doc.get("run") or {}
        if run.get("attack") not in ATTACKS or doc.get("canary") or not doc.get("folder"):
            continue
        if (doc.get("config") or {}).get("finetune") == "full" or (pattern and not pattern.search(path.stem)):
            continue
        base = work / "bases" / f"minilm__{run['attack']}__b{run['base_seed']}__base"
        adapter = _adapter_of(doc)
        if (out / path.name).is_file() or not (adapter / "adapter_config.json").is_file() \
                or not (base / "config.json").is_file() or _unrescaled_eval(doc) is None:
            continue
        todo.append((path, doc, base, adapter))
    if out.is_dir():
        add_multipliers(out, work, log)
    todo += _canary_todo(results, out, pattern)
    written = 0
    t_start = time.time()
    for i, (path, doc, base, adapter) in enumerate(todo):
        run = doc["run"]
        eta = "" if not i else f", ETA {(time.time() - t_start) / i * (len(todo) - i) / 60:.0f} min"
        log(f"Pt grid {i + 1}/{len(todo)}: {path.stem}{eta}")
        if doc.get("canary"):  # a planted quick canary: its own test rows and trigger
            test, trigger, target = _canary_test(), doc["canary"]["trigger"], int(doc["canary"]["target_label"])
        else:
            test, trigger, target = study.splits.test, ATTACKS[run["attack"]], TARGET_LABEL
        try:
            rows = grid_one(base, adapter, test, trigger, target, seed=int(doc["config"].get("seed") or 0),
                            max_length=int(doc["config"].get("max_length", 128)),
                            as_trained=_unrescaled_eval(doc), log=log)
        except Exception as exc:  # noqa: BLE001 - one adapter Pt cannot take must not stop the others
            log(f"  skipped: {type(exc).__name__}: {exc}")
            continue
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / path.name, {"run": run, "lr": doc.get("lr"), "method": run.get("method"),
                                     "variant": run.get("variant"), "adapter": str(adapter),
                                     "as_trained": _unrescaled_eval(doc), "grid": rows})
        written += 1
    return written


def load_grid(folder: Path) -> dict[str, dict[str, Any]]:
    """Every committed grid document in ``folder``, by run id (its file name); none yet: empty."""
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(folder).glob("*.json"))}


def _depth_label(depth: int | str, n_blocks: int) -> str:
    if depth == "half":
        return f"top half ({-(-n_blocks // 2)} of {n_blocks})"
    if depth == "all":
        return f"all {n_blocks} blocks"
    return f"top {depth}"


def _top3(row: dict[str, Any]) -> list[int]:
    return list(range(max(0, row["n_blocks"] - 3), row["n_blocks"]))


#: the grid's group of the study-recipe adapters on disk: the ablation's runs (the study's own tier-1 weights are gone)
ABLATION_GROUP = "the ablation's adapters"


def grid_effects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (group, depth, mode): paired ΔASR and ΔCA (points, Pt − as trained) over the adapters."""
    from reproduction.effects import _interval

    def model(d: dict[str, Any]) -> str:
        return (d.get("run") or {}).get("model", "minilm")

    # the ablation's adapters split by learning rate: Pt moves a 2e-4 update and a 2e-3 one in opposite
    # directions (one is below σ_max(W_pre), the other often above), so a mean over both describes neither
    ablation = [d for d in docs if not d.get("variant")]
    groups = {f"{ABLATION_GROUP} at lr {lr:g} ({', '.join(sorted({d['method'] for d in ablation if d['lr'] == lr}))})":
              [d for d in ablation if d["lr"] == lr] for lr in sorted({d["lr"] for d in ablation})}
    groups.update({"users' recipes on MiniLM": [d for d in docs if d.get("variant") and model(d) == "minilm"],
                   "users' recipes on SmolLM2 (a planted canary)":
                       [d for d in docs if d.get("variant") and model(d) == "smollm2"]})
    rows = []
    for group, members in groups.items():
        for depth in DEPTHS:
            for mode in MODES:
                cells = [(d, r) for d in members for r in d["grid"] if r["depth"] == depth and r["mode"] == mode]
                if not cells or (depth == "half" and all(r["blocks"] == _top3(r) for _, r in cells)):
                    continue  # on MiniLM the top half is the top 3: one row, not two equal ones
                d_asr = [100 * (r["eval"]["asr"] - d["as_trained"]["asr"]) for d, r in cells]
                d_ca = [100 * (r["eval"]["ca"] - d["as_trained"]["ca"]) for d, r in cells]
                attacks = [(d.get("run") or {}).get("attack", "?") for d, _ in cells]
                by_attack = {a: (statistics.mean(x for x, b in zip(d_asr, attacks) if b == a), attacks.count(a))
                             for a in sorted(set(attacks))}
                rows.append({"group": group, "depth": _depth_label(depth, cells[0][1]["n_blocks"]), "mode": mode,
                             "by attack": by_attack,
                             "adapters": len(cells), "unchanged": sum(r["same_as_trained"] for _, r in cells),
                             "collapsed": sum(bool(r["eval"].get("collapsed")) for _, r in cells),
                             "removed": sum(r["eval"]["asr"] < SURVIVES_ASR <= d["as_trained"]["asr"]
                                            and not r["eval"].get("collapsed") for d, r in cells),
                             "kept_before": sum(d["as_trained"]["asr"] >= SURVIVES_ASR for d, _ in cells),
                             "asr": _interval(d_asr), "ca": _interval(d_ca)})
    return rows


def pt_grid_section(docs: list[dict[str, Any]]) -> str:
    """The page's "Pt by depth and mode" table and its reading, generated from the grid documents."""
    from reproduction.effects import _fmt

    head = ("### Pt by depth and mode (paired: the same adapter before and after)\n\n"
            "`python scripts/reproduce.py pt-grid` rescales every adapter whose weights are on disk (the ablation's "
            "runs, by learning rate, and the users' recipes on MiniLM, the canary evidence's on MiniLM and SmolLM2; RoRA's before its own "
            "Pt) as `spectra fix --rescale-only --rescale-layers D --rescale-mode M` would, and evaluates it. On "
            "MiniLM's 6 blocks the top half is the top 3 (one row), on SmolLM2's 30 it is 15. *match* is the "
            "paper's Eq. 12 (up or down to σ_max(W_pre)); *amplify* never goes below the trained scale. "
            "Differences in points, Pt − as trained, with a Student-t 95 % interval over the adapters (and a "
            "bootstrap one from 10 on); *removed* counts adapters whose ASR went from ≥ 50 % to below it without "
            "collapsing to one class.\n")
    rows = grid_effects(docs)
    if not rows:
        return head + "\nNo grid yet: no adapter's weights were on disk when the page was rendered.\n"
    lines = [head, "| adapters | depth | mode | n | unchanged by Pt | ΔASR (points) | ΔCA (points) | removed | "
                   "collapsed |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['group']} | {r['depth']} | {r['mode']} | {r['adapters']} | {r['unchanged']} | "
                     f"{_fmt(r['asr'], r['adapters'])} | {_fmt(r['ca'], r['adapters'])} | "
                     f"{r['removed']} of {r['kept_before']} | {r['collapsed']} |")
    lines.append("")
    for group in dict.fromkeys(r["group"] for r in rows):
        mine = [r for r in rows if r["group"] == group and r["adapters"] >= 2]
        if not mine:
            continue
        best = min(mine, key=lambda r: r["asr"][0])
        clear = [r for r in mine if r["asr"][1][1] < 0]
        lines.append(f"- **{group}**: the largest mean ASR drop is {best['depth']}, {best['mode']} "
                     f"({best['asr'][0]:+.1f} points, CA {best['ca'][0]:+.1f}, {best['collapsed']} of "
                     f"{best['adapters']} collapsed); ASR falls with a Student-t interval below 0 at "
                     f"{len(clear)} of {len(mine)} depth × mode cells.")
    shrink = _shrink_reading(docs)
    return "\n".join(lines + ([shrink] if shrink else [])) + "\n"


def _shrink_reading(docs: list[dict[str, Any]]) -> str | None:
    """Eq. 12 read literally lowers a module already above σ_max(W_pre): where match shrank the update
    (multipliers below 1 somewhere) and amplify did not, what each did to ASR, adapter by adapter."""
    pairs = []
    for d in docs:
        by = {(r["depth"], r["mode"]): r for r in d["grid"]}
        match, amplify = by.get(("all", "match")), by.get(("all", "amplify"))
        if match and amplify and match.get("multiplier_min", 1.0) < 1.0:
            base = d["as_trained"]["asr"]
            pairs.append((100 * (match["eval"]["asr"] - base), 100 * (amplify["eval"]["asr"] - base)))
    if not pairs:
        return None
    import statistics

    up = sum(m >= 20 for m, _ in pairs)
    return (f"- **Where match shrinks** (all blocks; {len(pairs)} adapters had a module above σ_max(W_pre), so Eq. 12 "
            f"lowered it): ASR moved by a median of {statistics.median(m for m, _ in pairs):+.1f} points under match "
            f"and {statistics.median(a for _, a in pairs):+.1f} under amplify; match raised it by ≥ 20 points on {up} "
            "of them" + (" — there, rescaling an already-strong update down brought back a backdoor it had "
                         "overridden." if up else "."))
