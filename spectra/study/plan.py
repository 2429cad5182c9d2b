"""What the study runs: one :class:`Run` per trained or measured thing, in priority order.

Tiers (a study cut short still reports everything of the tiers it finished):

1. the poisoned bases (seed 0), the learning-rate picks (BadNet, seed 0: FFT, LoRA, RoRA
   at each rate of the paper's grid), then for both attacks and fine-tuning seeds 0–2: FFT,
   LoRA (+ Pt alone, derived), +CI, Tr alone, RoRA (+CI+Tr before Pt, derived), and the
   LoRA-scale sweep (Figure 3) of every LoRA and RoRA adapter;
2. two more poisoned bases per attack (seeds 1, 2) with LoRA, LoRA + Pt and RoRA on each;
3. PiSSA, DoRA, OLoRA and each + RoRA (seed 0); ONION and PEFT's intruder reduction on
   the seed-0 LoRA;
4. the LLaMA-architecture row: SmolLM2-135M poisoned with BadNet, LoRA vs RoRA.

A run's ``deps`` must have finished before it starts; ``lr=None`` means "the rate its family
picked" (:data:`spectra.study.recipe.LR_FAMILY`), known once the pick runs are done.
"""

from __future__ import annotations

from dataclasses import dataclass

from spectra.study.recipe import ATTACKS, LR_FAMILY, SELECTED

SEEDS = (0, 1, 2)
BASE_SEEDS = (0, 1, 2)
PICK_ATTACK = "badnet"
CORE_METHODS = ("fft", "lora", "lora+ci", "lora+tr", "rora")
#: Table 4's LoRA variants (key → the paper's name); each is run alone and with RoRA on top
VARIANT_NAMES = {"pissa": "PiSSA", "dora": "DoRA", "olora": "OLoRA"}
VARIANTS = (*VARIANT_NAMES, *(f"{key}+rora" for key in VARIANT_NAMES))
SWEPT = ("lora", "rora")


@dataclass(frozen=True)
class Run:
    """One unit of the study; ``id`` names its result file (``<results>/<id>.json``)."""

    kind: str  # base | finetune | sweep | onion | intruder
    attack: str
    base_seed: int = 0
    method: str = ""
    seed: int = 0
    lr: float | None = None
    model: str = "minilm"
    tier: int = 1
    #: a user recipe's tag (:mod:`spectra.study.evidence`); "" for the study's own recipe
    variant: str = ""

    @property
    def id(self) -> str:
        parts = [self.model, self.attack, f"b{self.base_seed}", self.kind]
        if self.kind != "base":
            parts += [self.method, f"s{self.seed}"]
        if self.lr is not None:
            parts.append(f"lr{self.lr:g}")
        if self.variant:
            parts.append(self.variant)
        return "__".join(parts).replace("+", "-")

    def base(self) -> Run:
        return Run("base", self.attack, self.base_seed, model=self.model, tier=self.tier)

    def finetune(self) -> Run:
        """The fine-tuning run a sweep / ONION / intruder run measures."""
        return Run("finetune", self.attack, self.base_seed, self.method, self.seed, self.lr, self.model, self.tier,
                   self.variant)

    def deps(self) -> list[Run]:
        if self.kind == "base":
            return []
        if self.kind == "finetune":
            deps = [self.base()]
            if self.lr is None and self.model == "minilm":
                family = LR_FAMILY[self.method]
                deps += lr_picks(family)
            return deps
        return [self.finetune()]


def lr_picks(family: str, grid: tuple[float, ...] = (2e-5, 2e-4, 2e-3)) -> list[Run]:
    """The runs one family's learning rate is picked from (BadNet, base 0, seed 0, each rate)."""
    return [Run("finetune", PICK_ATTACK, 0, family, 0, lr) for lr in grid]


def study_plan(grid: tuple[float, ...] = (2e-5, 2e-4, 2e-3)) -> list[Run]:
    """Every run of the study, tier by tier, in the order a single worker would run them."""
    runs: list[Run] = [Run("base", a, 0) for a in ATTACKS]
    for family in SELECTED:
        runs += lr_picks(family, grid)
    for seed in SEEDS:
        for attack in ATTACKS:
            for method in CORE_METHODS:
                runs.append(Run("finetune", attack, 0, method, seed))
            for method in SWEPT:
                runs.append(Run("sweep", attack, 0, method, seed))
    for b in BASE_SEEDS[1:]:
        for attack in ATTACKS:
            runs.append(Run("base", attack, b, tier=2))
            for method in SWEPT:
                runs += [Run("finetune", attack, b, method, 0, tier=2), Run("sweep", attack, b, method, 0, tier=2)]
    for attack in ATTACKS:
        runs += [Run("finetune", attack, 0, m, 0, tier=3) for m in VARIANTS]
        runs += [Run("onion", attack, 0, "lora", 0, tier=3), Run("intruder", attack, 0, "lora", 0, tier=3)]
    runs.append(Run("base", "badnet", 0, model="smollm2", tier=4))
    runs += [Run("finetune", "badnet", 0, m, 0, model="smollm2", tier=4) for m in ("lora", "rora")]
    return _dedupe(runs)


def _dedupe(runs: list[Run]) -> list[Run]:
    seen: set[str] = set()
    out = []
    for r in runs:
        if r.id not in seen:
            seen.add(r.id)
            out.append(r)
    return out


def estimate_hours(pending: list[Run], finished: list[tuple[Run, float, bool]],
                   done_share: dict[str, float] | None = None) -> tuple[dict[str, float | None], str]:
    """One-thread hours each pending run should take, from the walls of finished runs.

    ``finished``: ``(run, wall_s, resumed)`` per finished run; a resumed run's wall counts
    only its last part, so it is left out. A pending run is estimated by the median wall of
    finished runs of its model, kind and method, else of its model and kind (any fine-tuning
    run of MiniLM for a variant not yet run), else ``None`` (nothing of its kind has
    finished: SmolLM2 and ONION before their first run). ``done_share`` (run id → share of
    its optimiser steps its checkpoints hold) takes that share off. Returns the estimates and
    one line that sums them.
    """
    import statistics

    by_method: dict[tuple[str, str, str], list[float]] = {}
    by_kind: dict[tuple[str, str], list[float]] = {}
    for run, wall, resumed in finished:
        if not resumed and wall > 0:
            by_method.setdefault((run.model, run.kind, run.method), []).append(wall)
            by_kind.setdefault((run.model, run.kind), []).append(wall)

    out: dict[str, float | None] = {}
    for r in pending:
        walls = by_method.get((r.model, r.kind, r.method)) or by_kind.get((r.model, r.kind))
        share = (done_share or {}).get(r.id, 0.0)
        out[r.id] = statistics.median(walls) / 3600 * (1 - share) if walls else None
    known = [h for h in out.values() if h is not None]
    line = f"{len(pending)} runs left: about {sum(known):.1f} h of one-thread compute"
    unknown = len(out) - len(known)
    if unknown:
        line += f", plus {unknown} run(s) of a kind not measured yet"
    return out, line
