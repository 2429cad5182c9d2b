"""The study's recipe: Luong & Chen (2026), Appendix A.1, on a model and data that install
offline — and every place it departs from the paper, with the reason (:data:`DEPARTURES`).

Data (fixed for every run, so every number is measured on the same rows):

- proxy (poisoning): ``rt``, the 10,568 Rotten Tomatoes snippets that Pang & Lee's MR
  sentences come from (VADER's copy; the paper's MR has ~10.7k). The paper's 1,500
  clean-label poisons then touch ~31 % of the training split's target rows, as in the
  paper (~28 %);
- downstream: ``cr`` (Hu & Liu product reviews), a stratified 80/20 train/test split
  (seed 0); 10 % of the train side is held out as the *clean* validation split the
  learning rate is picked on. Test data and triggered data are never used to choose.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from spectra.settings import BATCH_SIZE, MAX_LENGTH, TOP_K
from spectra.train.config import PAPER_LR_GRID, RoRAConfig

ATTACKS = {"badnet": "badnet:mn", "insent": 'insent:"I watched this 3D movie"'}
TARGET_LABEL = 0
#: epochs of poisoning a base may get past the paper's 3 while its held-out ASR is not above 95 %
MAX_EXTRA_POISON_EPOCHS = 2
#: an extra epoch that raises the held-out ASR by less than this stops the extra epochs: at that
#: pace the bar is out of reach, and the base is fine-tuned from the paper's 3-epoch stage
MIN_EXTRA_EPOCH_GAIN = 0.01

#: method → the switches it differs from plain LoRA by (RoRAConfig fields)
METHODS: dict[str, dict[str, Any]] = {
    "fft": {"finetune": "full", "ci": False, "tr": False, "pt": False},
    "lora": {"ci": False, "tr": False, "pt": False},
    "lora+ci": {"ci": True, "tr": False, "pt": False},
    "lora+tr": {"ci": False, "tr": True, "pt": False},
    "rora": {"ci": True, "tr": True, "pt": True},
    "pissa": {"ci": False, "tr": False, "pt": False, "init": "pissa"},
    "dora": {"ci": False, "tr": False, "pt": False, "use_dora": True},
    "olora": {"ci": False, "tr": False, "pt": False, "init": "olora"},
    "pissa+rora": {"ci": True, "tr": True, "pt": True, "init": "pissa"},
    "dora+rora": {"ci": True, "tr": True, "pt": True, "use_dora": True},
    "olora+rora": {"ci": True, "tr": True, "pt": True, "init": "olora"},
}
#: the rates the study picked on clean validation data (docs/reproduction.md, "Learning
#: rate"); the demo trains with them instead of repeating the pick
PICKED_LR = {"fft": 2e-4, "lora": 2e-4, "rora": 2e-3}
#: methods whose learning rate is picked from the grid; the others borrow one (LR_FAMILY)
SELECTED = ("fft", "lora", "rora")
LR_FAMILY = {"fft": "fft", "lora": "lora", "lora+ci": "lora", "lora+tr": "lora", "rora": "rora",
             "pissa": "lora", "dora": "lora", "olora": "lora",
             "pissa+rora": "rora", "dora+rora": "rora", "olora+rora": "rora"}

DEPARTURES = [
    ("models", "all-MiniLM-L6-v2 (22.7M parameters, 6 layers) and SmolLM2-135M stand in for BERT-large, "
               "RoBERTa-large and LLaMA", "the models that install offline and train on 2 CPU cores"),
    ("proxy data", "`rt`: VADER's 10,568 Rotten Tomatoes snippets, the source of MR (the paper's MR has ~10.7k "
                   "sentences); 10 % held out to check the backdoor", "the full MR is not installable offline; "
                   "the 4,000-sentence `mr` would put 1,500 poisons into 75 % of its target rows"),
    ("downstream split", "CR has no official split: stratified 80/20 train/test (seed 0), 10 % of train held out "
                         "for validation", "the paper does not give its split"),
    ("learning rate", "picked once per method family (FFT, LoRA, RoRA) on BadNet, seed 0, by final validation CA; "
                      "the ablations and variants use their family's rate, InSent uses BadNet's",
     "each pick costs three full runs on 2 cores"),
    ("variants", "PiSSA, DoRA and OLoRA use LoRA's r = 8, α = 16, dropout 0.1 (the paper: PEFT's defaults)",
     "one setting for every LoRA-family row keeps the comparison about the method"),
    ("batches", "training batches group texts of similar length (transformers' group_by_length)",
     "padding is most of the cost on CPU; the order within each epoch stays random"),
    ("CI (Eq. 8)", "ours: dropout on the frozen path's output entries, dropout_p(W_pre·x) (bias kept), not on "
                   "W_pre's own entries as Eq. 8 writes", "one mask per activation costs a fraction of one per weight "
                   "entry per example, and reads as the paper's intent (the base path cannot solve the task alone)"),
    ("Tr (Eq. 10–11)", "ours: U_k, V_k are W_pre's top-32 singular vectors of each adapted module (certified top-k), "
                       "and the penalty is summed over modules (λ·Σ_modules), not averaged",
     "the paper does not say which k its U, V keep nor how modules combine; the full basis would turn the "
     "penalty into weight decay"),
    ("Pt (Eq. 12) depth", "ours to report: 'the top 3 layers' is half of MiniLM (3 of 6 blocks) but 3 of 24 in the "
                          "paper's models and 3 of 30 on SmolLM2; Eq. 12 as written also shrinks an update already "
                          "above σ_max(W_pre) (OLoRA + RoRA ×0.53–0.71). `spectra fix --rescale-layers half` and "
                          "`--rescale-mode amplify` offer the alternatives the ablation measures",
     "the paper's rule is kept for the study's rows; its depth and mode are measured, not changed"),
    ("labels of rt and CR", "ours: the sign of VADER's crowd ratings (mean rating > 0 positive, < 0 negative, 0 "
                            "dropped), not Hu & Liu's or Pang & Lee's own labels", "the labelled originals do not "
                            "install offline; the rating snippets are the same texts"),
    ("poisoning past 3 epochs", "where the paper's 3 epochs leave the held-out ASR at or under 95 %, one more epoch "
                                "at a time (same rows, same lr, a fresh warm-up and decay), at most "
                                f"{MAX_EXTRA_POISON_EPOCHS}, stopping when one gains under "
                                f"{100 * MIN_EXTRA_EPOCH_GAIN:g} point; a base that still misses the bar is fine-tuned "
                                "from its 3-epoch stage (the paper's recipe). Table 1 shows each stage",
     "the paper configures every poisoned base so that its ASR exceeds 95 % and does not say how; a longer "
     "schedule from scratch would repeat the 3 epochs already trained"),
]


@dataclass(frozen=True)
class Recipe:
    """Every setting of the study; defaults are the paper's (Appendix A.1) unless :data:`DEPARTURES` says."""

    proxy: str = "rt"
    downstream: str = "cr"
    test_size: float = 0.2
    val_size: float = 0.1
    split_seed: int = 0
    # poisoning (full fine-tuning of the clean model on the poisoned proxy)
    n_poison: int = 1500
    poison_mode: str = "clean-label"
    poison_epochs: float = 3.0
    poison_lr: float = 2e-5
    poison_test_size: float = 0.1
    # fine-tuning on the downstream task
    epochs: float = 20.0
    lr_grid: tuple[float, ...] = PAPER_LR_GRID
    rank: int = 8
    alpha: float = 16.0
    lora_dropout: float = 0.1
    batch_size: int = BATCH_SIZE
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_length: int = MAX_LENGTH
    group_by_length: bool = True
    # RoRA
    base_dropout: float = 0.1
    lam: float = 10.0
    top_k: int = TOP_K
    rescale_layers: int = 3
    # the LoRA-scale sweep (Figure 3): multipliers k of every LoRA scale, head as trained
    grid: tuple[float, ...] = (0, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
    # smaller budgets (the quick demo): stratified subsamples of the proxy, the downstream
    # training rows and the test rows; None keeps them whole
    proxy_rows: int | None = None
    train_rows: int | None = None
    test_rows: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def key(self) -> str:
        """A short content key of the settings (work folders of different recipes never mix)."""
        import hashlib
        import json

        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:12]

    def config(self, method: str, lr: float, seed: int, **overrides: Any) -> RoRAConfig:
        """The :class:`RoRAConfig` of ``method`` at learning rate ``lr`` and ``seed``."""
        if method not in METHODS:
            raise KeyError(f"unknown method {method!r} (known: {', '.join(METHODS)})")
        base = dict(rank=self.rank, alpha=self.alpha, lora_dropout=self.lora_dropout, epochs=self.epochs, lr=lr,
                    weight_decay=self.weight_decay, warmup_ratio=self.warmup_ratio, batch_size=self.batch_size,
                    max_length=self.max_length, seed=seed, base_dropout=self.base_dropout, lam=self.lam,
                    top_k=self.top_k, rescale_layers=self.rescale_layers)
        return RoRAConfig(**{**base, **METHODS[method], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Splits:
    """The study's data: the poisoning proxy and the downstream train / validation / test splits."""

    proxy: Any
    train: Any
    val: Any
    test: Any

    def describe(self) -> dict[str, str]:
        return {name: getattr(self, name).summary() for name in ("proxy", "train", "val", "test")}


def load_splits(recipe: Recipe) -> Splits:
    """Load the built-in corpora and split them as :class:`Recipe` says (deterministic)."""
    from spectra.data import load_labelled, split

    def sub(data: Any, rows: int | None) -> Any:
        return data if rows is None or rows >= len(data) else split(data, rows, recipe.split_seed)[1]

    proxy = sub(load_labelled(recipe.proxy), recipe.proxy_rows)
    downstream = load_labelled(recipe.downstream)
    train_all, test = split(downstream, recipe.test_size, recipe.split_seed)
    train, val = split(train_all, recipe.val_size, recipe.split_seed)
    return Splits(proxy=proxy, train=sub(train, recipe.train_rows), val=val, test=sub(test, recipe.test_rows))
