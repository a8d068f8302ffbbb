"""Plain usage placeholders (metavars) on the help pages of the command line.

Typer 0.29 labels parameters with its own type names: ``--help <bool>`` for a
flag, ``{file}`` in the usage line and ``<file>`` beside a required argument,
``<str>`` after a text option. The classes here print upper-case placeholders
in their place, much as click does. A flag gets none. An argument or text
option gets its upper-cased name (FILE, VERSION, MONTH), and a number or path
option its type (INTEGER, FLOAT, FILE, DIR). A ``metavar`` given to
``typer.Option`` or ``typer.Argument`` is kept as it is.
"""

from typing import Any, get_args

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

_TYPE_METAVARS = {int: "INTEGER", float: "FLOAT"}


class _PlainArgument(TyperArgument):
    def display_type_rich(self, ctx) -> str | None:
        # The name column already shows the metavar, such as FILE.
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw
        if self.nargs != 1:
            name += "..."
        return name if self.required else f"[{name}]"


class _PlainOption(TyperOption):
    def display_type_rich(self, ctx) -> str | None:
        if self.is_flag or self.count:
            return None
        return super().display_type_rich(ctx)


def _metavar(param: TyperArgument | TyperOption) -> str | None:
    """Return the placeholder of ``param``'s value, or None for a flag."""
    if param.metavar is not None:
        return param.metavar
    if isinstance(param, TyperOption) and (param.is_flag or param.count):
        return None
    name = param.name.upper()
    if isinstance(param, TyperOption):
        # "--format" rather than the Python name "file_format".
        name = max(param.opts, key=len).lstrip("-").replace("-", "_").upper()
    descriptor = param.type_descriptor
    if descriptor.is_choice:
        return "[" + "|".join(str(getattr(c, "value", c)) for c in descriptor.choices) + "]"
    if isinstance(param, TyperArgument):
        return name
    if descriptor.is_path:
        return "DIR" if descriptor.path_type == "dir" else "FILE"
    value_type = descriptor.annotation
    if descriptor.is_list:
        (value_type,) = get_args(value_type)
    return _TYPE_METAVARS.get(value_type, name)


def _make_plain(param: Any) -> None:
    # Typer builds TyperArgument and TyperOption itself and has no setting for
    # other parameter classes, so each parameter is moved to a subclass here.
    if type(param) is TyperArgument:
        param.__class__ = _PlainArgument
    elif type(param) is TyperOption:
        param.__class__ = _PlainOption
    else:
        return
    param.metavar = _metavar(param)


class _PlainHelpMixin:
    """Give a command's parameters plain metavars before they are parsed or shown."""

    def get_params(self, ctx):
        # Here rather than in __init__, so that --help and the options typer
        # adds after building the command are included.
        params = super().get_params(ctx)
        for param in params:
            _make_plain(param)
        return params


class PlainHelpCommand(_PlainHelpMixin, TyperCommand):
    """A command whose help and usage lines show plain metavars."""


class PlainHelpGroup(_PlainHelpMixin, TyperGroup):
    """A command group whose help and usage lines show plain metavars."""


class PlainHelpTyper(typer.Typer):
    """A ``typer.Typer`` whose groups and commands default to the plain-help classes."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("cls", PlainHelpGroup)
        super().__init__(**kwargs)

    def command(self, name: str | None = None, **kwargs):
        kwargs.setdefault("cls", PlainHelpCommand)
        return super().command(name, **kwargs)
