"""Every setting of a RoRA run, with the paper's defaults, validated in one place.

RoRA (Luong & Chen 2026) = LoRA + three switchable parts:

- **CI** (``ci``, ``base_dropout`` = p): dropout on the frozen base path ``W_pre·x`` of
  every adapted module, in training only — :mod:`spectra.train.base_dropout`;
- **Tr** (``tr``, ``lam`` = λ, ``top_k`` = k): the penalty
  ``λ·Σ_modules(‖U_kᵀB‖²_F + ‖A V_k‖²_F)`` — :mod:`spectra.train.regularizers`;
- **Pt** (``pt``, ``rescale_layers``, ``rescale_factor``): post-training rescaling so that
  ``σ_max(s'·B·A) = factor·σ_max(W_pre)`` in the top transformer blocks —
  :mod:`spectra.train.rescale`.

The ablations of the paper are one switch each: ``lora`` (all three off, same budget),
``lora+ci``, ``lora+ci+tr``, ``rora`` (all on); see :attr:`RoRAConfig.method`. Full
fine-tuning (``finetune="full"``, method ``fft``) shares the recipe as the paper's FFT
baseline: every weight trains, and CI, Tr, Pt and the LoRA settings do not apply.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal, get_args

from spectra.errors import SpectraError
from spectra.settings import batch_size_setting, max_length_setting, seed_setting, setting, top_k_setting

#: ``--init`` values: PEFT's ``init_lora_weights``. ``default`` is PEFT's ``True``
#: (Kaiming-uniform A, B = 0); ``pissa``/``olora`` also rewrite the base weights during
#: training and are converted back into a plain LoRA (rank 2r) on saving.
Init = Literal["default", "gaussian", "pissa", "olora"]
INITS: tuple[str, ...] = get_args(Init)
#: Inits that rewrite the base weights (the saved adapter is converted, see trainer.save_adapter).
MUTATING_INITS = ("pissa", "olora")
#: ``finetune`` values: a LoRA adapter (RoRA and its ablations) or every weight (the FFT baseline)
Finetune = Literal["lora", "full"]
FINETUNE_KINDS: tuple[str, ...] = get_args(Finetune)
#: the paper's learning-rate grid for fine-tuning (Appendix A.1), picked on clean validation data
PAPER_LR_GRID = (2e-5, 2e-4, 2e-3)
#: Pt's modes (``spectra.train.rescale``): the paper's Eq. 12, or never below the trained scale
RescaleMode = Literal["match", "amplify"]
#: the --help panels of ``spectra fix``
_RORA, _LORA, _OPT = "RoRA parts", "LoRA", "Optimisation"


def parse_rescale_layers(text: str | int) -> int | str:
    """``--rescale-layers``: ``all``, ``none`` or a non-negative integer."""
    if isinstance(text, int):
        return text
    t = str(text).strip().lower()
    if t in ("all", "none", "half"):
        return t
    try:
        n = int(t)
    except ValueError:
        raise SpectraError(f"--rescale-layers {text!r}: use all, half, none or a number of top blocks") from None
    if n < 0:
        raise SpectraError(f"--rescale-layers {text!r}: must be ≥ 0 (or all / none)")
    return n


def parse_target_modules(items: list[str] | str | None) -> list[str] | str | None:
    """``--target-modules``: repeatable and/or comma-separated names, or ``all-linear``."""
    if items is None:
        return None
    raw = [items] if isinstance(items, str) else list(items)
    names = [p.strip() for item in raw for p in str(item).split(",") if p.strip()]
    if not names:
        return None
    if any(n.lower() in ("all-linear", "all_linear") for n in names):
        if len(names) > 1:
            raise SpectraError("--target-modules all-linear cannot be combined with module names")
        return "all-linear"
    return names


@dataclass
class RoRAConfig:
    """Settings of one RoRA (or ablation) run. Defaults: the paper's (Luong & Chen 2026, §5).

    LoRA: ``rank`` r=8, ``alpha`` α=16, ``lora_dropout`` 0.1, ``target_modules``
    ``None`` = the attention query/value projections the architecture names
    (``query,value`` for BERT/RoBERTa, ``q_proj,v_proj`` for LLaMA-likes, ``c_attn`` for
    GPT-2); a list of module names, or ``"all-linear"``. The classification head is trained
    as PEFT ``modules_to_save`` (task type SEQ_CLS).

    Optimisation: AdamW (``adamw_torch``), weight decay 0.01, linear schedule with 6 %
    warm-up, ``batch_size`` 32 *per process*, ``max_length`` 128 — the paper's (Appendix
    A.1). The paper picks ``lr`` from {2e-5, 2e-4, 2e-3} (:data:`PAPER_LR_GRID`) per setting
    on held-out data and trains 20 epochs (BERT/RoBERTa; 5 for LLaMA); the defaults here
    (lr 2e-4, 3 epochs) are a budget for a first run, not that choice: ``spectra fix
    --val`` records the validation curve, and :mod:`spectra.study` runs the paper's
    selection (docs/reproduction.md reports which rate won for each method).

    ``finetune="full"`` trains every weight instead (the paper's FFT baseline); the CI/Tr/Pt
    switches and the LoRA settings are then inactive.
    """

    # CI — dropout on the frozen base path
    ci: bool = setting(True, "--ci/--no-ci", help="CI: dropout on the frozen base path (--no-ci switches it off).",
                       panel=_RORA)
    base_dropout: float = setting(0.1, "--base-dropout", help="CI: dropout rate p on the frozen base path W_pre·x, "
                                                              "in [0, 1).", panel=_RORA)
    # Tr — subspace penalty
    tr: bool = setting(True, "--tr/--no-tr", help="Tr: the subspace penalty (--no-tr switches it off).", panel=_RORA)
    lam: float = setting(10.0, "--lam", help="Tr: λ of the penalty λ·Σ(‖U_kᵀB‖² + ‖A V_k‖²), summed over modules.",
                         panel=_RORA)
    top_k: int = top_k_setting(panel=_RORA)
    # Pt — post-training rescaling
    pt: bool = setting(True, "--pt/--no-pt", help="Pt: post-training rescaling (--no-pt switches it off).",
                       panel=_RORA)
    rescale_layers: int | str = setting(
        3, "--rescale-layers", help="Pt: rescale the top N transformer blocks, or half (the top half), all, or none. "
                                    "The paper's 3 is half of MiniLM but a tenth of a 30-block model.",
        panel=_RORA, cli_type=str, parse=parse_rescale_layers, show=str)
    rescale_factor: float = setting(1.0, "--rescale-factor", help="Pt: target σ_max(s'BA) = factor × σ_max(W_pre).",
                                    panel=_RORA)
    rescale_mode: RescaleMode = setting(
        "match", "--rescale-mode", help="Pt: match (the paper's Eq. 12: every chosen module to factor × σ_max(W_pre), "
                                        "which also shrinks an update already above it) or amplify (only raise; "
                                        "never below the trained scale).", panel=_RORA)
    # LoRA
    rank: int = setting(8, "--rank", "-r", help="LoRA rank r.", panel=_LORA)
    alpha: float = setting(16.0, "--alpha", help="LoRA α (scale α/r, α/√r with --rslora).", panel=_LORA)
    lora_dropout: float = setting(0.1, "--lora-dropout", help="PEFT's dropout on the LoRA path.", panel=_LORA)
    target_modules: list[str] | str | None = setting(
        None, "--target-modules", help="Module names (repeatable or comma-separated) or all-linear. Default: "
                                       "attention query,value.", panel=_LORA, cli_type=list[str] | None,
        parse=parse_target_modules)
    init: Init = setting("default", "--init", help="default | gaussian | pissa | olora (PiSSA/OLoRA are saved "
                                                   "converted to plain LoRA).", panel=_LORA)
    use_rslora: bool = setting(False, "--rslora", help="Rank-stabilised scale α/√r.", panel=_LORA)
    use_dora: bool = setting(False, "--dora", help="DoRA (weight-decomposed LoRA).", panel=_LORA)
    # optimisation
    epochs: float = setting(3.0, "--epochs", help="Training epochs.", panel=_OPT)
    lr: float = setting(2e-4, "--lr", help="AdamW learning rate.", panel=_OPT)
    weight_decay: float = setting(0.01, "--weight-decay", help="AdamW weight decay.", panel=_OPT)
    warmup_ratio: float = setting(0.06, "--warmup-ratio", help="Linear warm-up share of the steps.", panel=_OPT)
    batch_size: int = batch_size_setting(panel=_OPT, per_process=True)
    grad_accum: int = setting(1, "--grad-accum", help="Gradient accumulation steps.", panel=_OPT)
    max_length: int = max_length_setting(panel=_OPT)
    seed: int = seed_setting(panel=_OPT)
    # what trains: a LoRA adapter, or every weight (full fine-tuning, the FFT baseline)
    finetune: Finetune = "lora"
    # spectra internals
    exact_spectra: bool = False  # Tr bases by full SVD instead of the certified randomized top-k
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, recorded in provenance

    def __post_init__(self) -> None:
        self.validate()  # one check, at construction: every later holder of a RoRAConfig can trust it

    @classmethod
    def baseline(cls, name: str = "lora", **overrides: Any) -> RoRAConfig:
        """A baseline with the same budget: ``lora`` (``--baseline lora``: CI, Tr, Pt off) or
        ``fft`` (``--baseline fft``: full fine-tuning of every weight)."""
        return cls(**overrides).as_baseline(name)

    def as_baseline(self, name: str) -> RoRAConfig:
        """These settings as baseline ``name`` with the same budget: ``lora`` (CI, Tr, Pt off) or ``fft``
        (full fine-tuning; CI, Tr, Pt and the LoRA settings then do not apply)."""
        key = name.lower()
        if key not in ("lora", "fft"):
            raise SpectraError(f"--baseline {name!r}: use lora or fft")
        return replace(self, ci=False, tr=False, pt=False, finetune="full" if key == "fft" else self.finetune)

    @property
    def full(self) -> bool:
        """Full fine-tuning (every weight trains; no adapter, no CI/Tr/Pt)."""
        return self.finetune == "full"

    @property
    def method(self) -> str:
        """``lora``, ``lora+ci``, ``lora+ci+tr``, ``rora`` (or another combination, e.g. ``lora+tr+pt``);
        ``fft`` for full fine-tuning."""
        if self.full:
            return "fft"
        parts = [name for name, on in (("ci", self.ci_active), ("tr", self.tr_active), ("pt", self.pt_active)) if on]
        if len(parts) == 3:
            return "rora"
        return "+".join(["lora", *parts])

    @property
    def ci_active(self) -> bool:
        return self.ci and self.base_dropout > 0 and not self.full

    @property
    def tr_active(self) -> bool:
        return self.tr and self.lam > 0 and not self.full

    @property
    def pt_active(self) -> bool:
        return self.pt and self.rescale_layers not in ("none", 0) and not self.full

    def validate(self) -> RoRAConfig:
        """Raise :class:`SpectraError` (one line naming the option) for any unusable value."""
        def bad(option: str, value: Any, want: str) -> SpectraError:
            return SpectraError(f"{option} {value!r}: {want}")

        if self.finetune not in FINETUNE_KINDS:
            raise bad("--finetune", self.finetune, f"use one of {', '.join(FINETUNE_KINDS)}")
        if not (isinstance(self.base_dropout, (int, float)) and 0.0 <= self.base_dropout < 1.0):
            raise bad("--base-dropout", self.base_dropout, "CI's dropout rate p must be in [0, 1)")
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise bad("--lam", self.lam, "Tr's λ must be a finite number ≥ 0")
        if self.top_k < 1:
            raise bad("--top-k", self.top_k, "must be at least 1")
        if not (math.isfinite(self.rescale_factor) and self.rescale_factor > 0):
            raise bad("--rescale-factor", self.rescale_factor, "must be a positive number")
        layers = self.rescale_layers
        if isinstance(layers, str):
            if layers not in ("all", "none", "half"):
                raise bad("--rescale-layers", layers, "use all, half, none or a number of top blocks")
        elif layers < 0:
            raise bad("--rescale-layers", layers, "must be ≥ 0 (or all / half / none)")
        if self.rescale_mode not in get_args(RescaleMode):
            raise bad("--rescale-mode", self.rescale_mode, "use match (the paper's Eq. 12) or amplify")
        if self.rank < 1:
            raise bad("--rank", self.rank, "must be at least 1")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise bad("--alpha", self.alpha, "must be positive")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise bad("--lora-dropout", self.lora_dropout, "must be in [0, 1)")
        if self.init not in INITS:
            raise bad("--init", self.init, f"use one of {', '.join(INITS)}")
        if self.init in MUTATING_INITS and self.use_rslora:
            raise bad("--init", self.init, "cannot be combined with --rslora (PEFT cannot convert it back to a plain LoRA)")
        # isfinite first: NaN fails every comparison, so `x < 0` lets it through, and ∞ passes `x > 0`
        if not (math.isfinite(self.epochs) and self.epochs > 0):
            raise bad("--epochs", self.epochs, "must be a finite positive number")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise bad("--lr", self.lr, "must be a finite positive number")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise bad("--weight-decay", self.weight_decay, "must be a finite number ≥ 0")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise bad("--warmup-ratio", self.warmup_ratio, "must be in [0, 1)")
        if self.batch_size < 1:
            raise bad("--batch-size", self.batch_size, "must be at least 1")
        if self.grad_accum < 1:
            raise bad("--grad-accum", self.grad_accum, "must be at least 1")
        if self.max_length < 8:
            raise bad("--max-length", self.max_length, "must be at least 8")
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise bad("--target-modules", self.target_modules, "give at least one module name, or all-linear")
        return self

    def rescale_blocks(self) -> int | str:
        """``rescale_layers`` normalised: an int ≥ 0 or ``"all"`` (``none`` and Pt off → 0)."""
        if not self.pt or self.full:
            return 0
        if self.rescale_layers == "none":
            return 0
        return self.rescale_layers

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["method"] = self.method
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RoRAConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def with_(self, **changes: Any) -> RoRAConfig:
        return replace(self, **changes)

    #: settings that change the trained weights (a resumed run must match them); Pt's
    #: settings act after training and may change between the crash and ``--resume``.
    TRAINING_FIELDS = (
        "ci", "base_dropout", "tr", "lam", "top_k", "rank", "alpha", "lora_dropout", "target_modules", "init",
        "use_rslora", "use_dora", "epochs", "lr", "weight_decay", "warmup_ratio", "batch_size", "grad_accum",
        "max_length", "seed", "exact_spectra", "finetune",
    )
