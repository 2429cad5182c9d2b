"""CLI options generated from a settings dataclass, so each default is written once — in the library.

``@settings_options(RoRAConfig)`` replaces the command's ``config: RoRAConfig`` parameter by one
typer option per field declared with :func:`spectra.settings.setting` (its flags, help, panel and
default), and at call time hands the command one ``RoRAConfig`` built — and so validated — from
what the user typed. mergekit's ``MergeOptions`` generates its click options the same way.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import typer

from spectra.settings import cli_default, cli_fields, from_cli

F = TypeVar("F", bound=Callable[..., Any])
#: the placeholder default of a command's settings parameter (``config: RoRAConfig = FROM_OPTIONS``):
#: :func:`settings_options` replaces the parameter, so the value never reaches the command
FROM_OPTIONS: Any = None


def _cli_type(annotation: Any) -> Any:
    """A field's type as typer takes it: a ``Literal`` of strings is a ``str`` (the settings object
    checks the value, with a line that names the option and its choices)."""
    if typing.get_origin(annotation) is Literal:
        return str
    return annotation


def option_parameters(cls: type, exclude: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """One typer-annotated parameter per CLI field of ``cls`` (except ``exclude``), defaults from the fields."""
    hints = typing.get_type_hints(cls)
    params = []
    for f in cli_fields(cls):
        if f.name in exclude:
            continue
        spec = f.metadata["cli"]
        switch = any("/" in flag for flag in spec.flags)  # "--ci/--no-ci": typer would show the default as "ci"
        shown: Any = ("on" if cli_default(f) else "off") if switch else True
        option = typer.Option(*spec.flags, help=spec.help, rich_help_panel=spec.panel, min=spec.min,
                              show_default=shown)
        kind = spec.cli_type if spec.cli_type is not None else _cli_type(hints[f.name])
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=cli_default(f),
                                        annotation=Annotated[kind, option]))
    return params


def settings_options(cls: type, param: str = "config", exclude: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Decorate a command whose parameter ``param`` is a ``cls``: the CLI shows ``cls``'s fields as options
    and the command receives one ``cls`` instance (built once, validated in its ``__post_init__``)."""

    def decorate(func: F) -> F:
        signature = inspect.signature(func)
        hints = typing.get_type_hints(func, include_extras=True)
        if param not in signature.parameters:
            raise TypeError(f"{func.__name__} has no parameter {param!r} to fill with {cls.__name__}")
        generated = option_parameters(cls, exclude)
        ordered: list[inspect.Parameter] = []
        for p in signature.parameters.values():  # the options appear where the settings parameter was
            if p.name == param:
                ordered += generated
            else:
                ordered.append(p.replace(annotation=hints.get(p.name, p.annotation)))
        clash = {p.name for p in generated} & (set(signature.parameters) - {param})
        if clash:
            raise TypeError(f"{func.__name__}: {sorted(clash)} are both its own options and {cls.__name__} fields")
        names = {f.name: f for f in cli_fields(cls) if f.name not in exclude}

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: from_cli(f, kwargs.pop(name)) for name, f in names.items() if name in kwargs}
            kwargs[param] = cls(**values)
            return func(*args, **kwargs)

        positional = [p for p in ordered if p.default is p.empty]  # arguments first, then every option by keyword
        options = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in ordered if p.default is not p.empty]
        wrapper.__signature__ = signature.replace(parameters=positional + options)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}  # type: ignore[attr-defined]
        return typing.cast(F, wrapper)

    return decorate
