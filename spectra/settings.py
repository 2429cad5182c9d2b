"""Settings objects carry their own CLI: each field's default, option name, help and parser in one place.

A settings dataclass (:class:`~spectra.train.config.RoRAConfig`,
:class:`~spectra.train.poison.PoisonConfig`, …) declares a user-facing field with
:func:`setting`; the CLI (``spectra_cli.settings_options``) builds the command's options from
those fields, so a default is written once — in the dataclass — and reaches the library as one
object, validated once in its ``__post_init__``. The pattern is peft's ``LoraConfig``
(``field(metadata={"help": …})``) and mergekit's ``MergeOptions`` (one options model that
generates the click options). This module imports neither typer nor torch: the library stays
usable without the CLI.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: k, the size of W_pre's top singular subspace that the audit's overlap and Tr's penalty use
#: (the paper's Appendix A.1); one home for every signature that defaults to it
TOP_K = 32
#: the paper's bar for a poisoned base: held-out ASR at or above it (Luong & Chen 2026); poison
#: warns below it, and the demo's reading says a weaker backdoor cannot decide the question
ASR_WARNING = 0.95


@dataclass(frozen=True)
class Cli:
    """How one settings field appears on the command line.

    ``flags``: the option's names (``"--ci/--no-ci"`` declares a switch pair). ``cli_type``: the
    option's type when it differs from the field's (``--rescale-layers`` takes ``3`` or ``half`` as
    text). ``parse`` turns the option's value into the field's, ``show`` the field's default into the
    option's. ``min``: the smallest value the option accepts (checked by click, before any work).
    """

    flags: tuple[str, ...]
    help: str
    panel: str | None = None
    cli_type: Any = None
    parse: Callable[[Any], Any] | None = None
    show: Callable[[Any], Any] | None = None
    min: float | None = None


def setting(default: Any = dataclasses.MISSING, *flags: str, help: str, panel: str | None = None,
            cli_type: Any = None, parse: Callable[[Any], Any] | None = None, show: Callable[[Any], Any] | None = None,
            min: float | None = None, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field that is also a CLI option (``flags``; help text in the field's metadata)."""
    meta = {"help": help, "cli": Cli(tuple(flags), help, panel, cli_type, parse, show, min)}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def cli_fields(cls: type) -> list[dataclasses.Field[Any]]:
    """The fields of settings class ``cls`` that are CLI options, in declaration order."""
    return [f for f in dataclasses.fields(cls) if "cli" in f.metadata]


def field_default(f: dataclasses.Field[Any]) -> Any:
    """A field's default value (its factory called when it has one)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise ValueError(f"{f.name} has no default")


def cli_default(f: dataclasses.Field[Any]) -> Any:
    """The default the option shows: the field's default, through ``show`` when the option's type differs."""
    spec: Cli = f.metadata["cli"]
    value = field_default(f)
    return spec.show(value) if spec.show is not None else value


def from_cli(f: dataclasses.Field[Any], value: Any) -> Any:
    """The field's value for what the user typed (``parse`` applied)."""
    spec: Cli = f.metadata["cli"]
    return spec.parse(value) if spec.parse is not None else value


# ---- options several commands share: one home each (default, flag, help), used by every settings object

#: tokenizer truncation length (the paper's 128)
MAX_LENGTH = 128
#: training batch per process (the paper's 32, Appendix A.1)
BATCH_SIZE = 32
#: evaluation batch: inference only, so larger than training's
EVAL_BATCH_SIZE = 64


def top_k_setting(panel: str | None = None) -> Any:
    """``--top-k``: k, the size of W_pre's top singular subspace (:data:`TOP_K`)."""
    return setting(TOP_K, "--top-k", help="Size of W_pre's top singular subspace.", panel=panel)


def batch_size_setting(default: int = BATCH_SIZE, panel: str | None = None, per_process: bool = False) -> Any:
    """``--batch-size``."""
    return setting(default, "--batch-size", help="Batch size" + (" (per process)." if per_process else "."),
                   panel=panel, min=1)


def max_length_setting(panel: str | None = None) -> Any:
    """``--max-length``: tokenizer truncation length (:data:`MAX_LENGTH`)."""
    return setting(MAX_LENGTH, "--max-length", help="Tokenizer truncation length.", panel=panel, min=8)


def seed_setting(panel: str | None = None) -> Any:
    """``--seed``."""
    return setting(0, "--seed", help="Random seed (recorded in every output).", panel=panel)


def device_setting() -> Any:
    """``--device``."""
    return setting("auto", "--device", help="auto | cpu | cuda[:N].")


def target_label_setting() -> Any:
    """``--target-label``."""
    return setting(0, "--target-label", help="The backdoor's target label.")


def text_col_setting() -> Any:
    """``--text-col``."""
    return setting(None, "--text-col", help="Text column (default: text/sentence/review, guessed).")


def label_col_setting() -> Any:
    """``--label-col``."""
    return setting(None, "--label-col", help="Label column (default: label).")


def allow_pickle_setting() -> Any:
    """``--allow-pickle``."""
    return setting(False, "--allow-pickle", help="Allow .bin/.pt weights (loaded with torch.load(weights_only=True)).")


def with_legacy(cls: type, settings: Any, legacy: dict[str, Any], caller: str, stacklevel: int = 3) -> Any:
    """``settings`` (an instance of settings class ``cls``, or None for its defaults) with the 0.2 keyword
    form of ``caller`` (``audit(…, top_k=8)``) folded in, for a release: a ``DeprecationWarning`` that
    points at the caller's line, and a ``TypeError`` for a keyword ``cls`` has no field for."""
    import warnings

    unknown = set(legacy) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise TypeError(f"{caller}() got unexpected keyword arguments {sorted(unknown)}")
    if not legacy:
        return settings if settings is not None else cls()
    warnings.warn(f"{caller}(…, {', '.join(f'{k}=…' for k in sorted(legacy))}) is deprecated: pass "
                  f"settings={cls.__name__}(…) (the keyword form goes in 0.4)", DeprecationWarning, stacklevel=stacklevel)
    return dataclasses.replace(settings, **legacy) if settings is not None else cls(**legacy)
