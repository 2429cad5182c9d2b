"""How ``--help`` writes usage and option types: as users type them.

Typer 0.29 writes a required argument as ``{base}``, every flag as ``<bool>`` and a repeatable
option or variadic argument as ``<list[str]>``. :class:`SpectraCommand` writes ``BASE ADAPTERS...``,
no type after a flag (it takes no value), a repeatable option's item type (``<str>``, the option given
once per value) and a variadic argument's as ``<str>...``; everything else is typer's.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperOption


def _argument_name(param: TyperArgument) -> str:
    return (param.name or "").upper() + ("..." if param.nargs != 1 else "")


class SpectraCommand(TyperCommand):
    """A typer command whose help reads as the command line is written (module docstring)."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:
            if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
                param.metavar = ""  # a flag takes no value: no type column
            elif isinstance(param, TyperOption) and param.multiple and param.metavar is None:
                param.metavar = param.display_type(ctx).replace("list[", "").replace("]", "")
            elif isinstance(param, TyperArgument) and param.metavar is None:
                param.metavar = _argument_name(param)
                if param.nargs != 1:  # ADAPTERS...: the item type, repeated — not typer's <list[str]>
                    item = param.display_type(ctx).replace("list[", "").replace("]", "")
                    param.display_type_rich = lambda ctx, item=item: f"{item}..."  # type: ignore[method-assign]
        return params

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                pieces.append(param.metavar if param.required else f"[{param.metavar}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces
