"""The forgetting-evidence runs: adapters trained the way users train them, to label the audit.

The reproduction study (:mod:`spectra.study.plan`) trains the paper's recipe: 20 epochs at a
picked rate. Users do not: they train one to five epochs, at whatever rate a tutorial gave,
at ranks 4–64, on the attention projections or on every linear layer, with rsLoRA or DoRA.
Whether the backdoor survives *their* adapter is the question the audit's forgetting
verdict answers, so its evidence must span those recipes, short budgets included (each row
is labelled with its budget and whether validation accuracy had stopped moving).

Each :class:`UserRecipe` is one fine-tuning run on a poisoned base of the study; its id
carries the recipe (``…__finetune__lora__s0__lr0.0002__e1-r8-qv``) so results never mix
with the study's. Runs are ordered cheapest first within each (attack, base) block, so a
worker cut short still leaves the widest spread of recipes behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: what ``targets`` means for :class:`~spectra.train.config.RoRAConfig` (``None`` = the
#: architecture's attention query/value projections, PEFT's default for BERT and LLaMA)
TARGETS: dict[str, str | None] = {"qv": None, "all": "all-linear"}


@dataclass(frozen=True)
class UserRecipe:
    """A user's LoRA recipe: what differs from the study's (r 8, α 16, q/v, 20 epochs)."""

    lr: float
    epochs: float
    rank: int = 8
    targets: str = "qv"
    rslora: bool = False

    @property
    def tag(self) -> str:
        """A short, file-name-safe name of the recipe (part of the run id)."""
        return f"e{self.epochs:g}-r{self.rank}-{self.targets}" + ("-rs" if self.rslora else "")

    def overrides(self) -> dict[str, Any]:
        """The :class:`~spectra.train.config.RoRAConfig` fields this recipe sets (α stays 16,
        as most users keep it while changing r, so the scale α/r moves with the rank)."""
        return {"epochs": float(self.epochs), "rank": self.rank, "target_modules": TARGETS[self.targets],
                "use_rslora": self.rslora}


def parse_tag(tag: str) -> dict[str, Any]:
    """Inverse of :attr:`UserRecipe.tag` (without the rate): epochs, rank, targets, rslora."""
    parts = tag.split("-")
    return {"epochs": float(parts[0][1:]), "rank": int(parts[1][1:]), "targets": parts[2], "rslora": "rs" in parts[3:]}


# (method, recipe) blocks; the cheap spread first, then longer budgets and the rarer shapes
_SPREAD: tuple[tuple[str, UserRecipe], ...] = (
    ("lora", UserRecipe(2e-4, 1)),
    ("lora", UserRecipe(2e-3, 1)),
    ("lora", UserRecipe(2e-5, 1)),
    ("lora", UserRecipe(2e-4, 1, targets="all")),
    ("lora", UserRecipe(2e-4, 1, rank=64)),
    ("lora", UserRecipe(2e-4, 1, rank=4)),
    ("lora", UserRecipe(2e-4, 2)),
    ("lora", UserRecipe(2e-3, 2, targets="all")),
    ("lora", UserRecipe(5e-4, 2, rank=16, rslora=True)),
    ("dora", UserRecipe(2e-4, 2)),
    ("lora", UserRecipe(2e-4, 5)),
    ("lora", UserRecipe(2e-3, 5)),
    ("lora", UserRecipe(2e-5, 5, targets="all")),
    ("lora", UserRecipe(1e-3, 3, rank=32, targets="all", rslora=True)),
    ("lora", UserRecipe(2e-4, 5, rank=64, targets="all", rslora=True)),
    ("lora", UserRecipe(2e-3, 10, rank=4)),
    ("dora", UserRecipe(2e-3, 5, targets="all")),
    ("lora", UserRecipe(5e-4, 10, rank=16)),
)
#: the blocks each (attack, base seed) gets: the whole spread on base 0 of both attacks,
#: the cheap half on bases 1 (a second and third poisoned checkpoint per attack)
_BLOCKS: tuple[tuple[str, int, int], ...] = (("badnet", 0, len(_SPREAD)), ("insent", 0, len(_SPREAD)),
                                             ("badnet", 1, 10), ("insent", 1, 10))


def evidence_plan() -> list[Any]:
    """Every evidence run, in the order a single worker takes them (bases of the study first)."""
    from spectra.study.plan import Run

    runs: list[Run] = []
    for attack, base_seed, n in _BLOCKS:
        runs.append(Run("base", attack, base_seed, tier=2 if base_seed else 1))  # the study's bases
        for method, recipe in _SPREAD[:n]:
            runs.append(Run("finetune", attack, base_seed, method, 0, recipe.lr, tier=5, variant=recipe.tag))
    return runs
