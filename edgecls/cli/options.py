"""click options made from the config dataclasses: one declaration per option (:mod:`edgecls.core.options`).

``@config_options(TrainConfig, "size", "epochs", ...)`` adds one click option per named field, in that
order: the flag is ``--field-name`` (or the field's own spelling), the parameter is the field's name,
so a command builds its config with ``TrainConfig(**options)``; the default, the help text and the
bounds are the field's. A value out of bounds (``nan``, ``inf``, negative, huge) is refused where the
command line is parsed, with the message :func:`edgecls.core.options.validate` would give.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import click

from edgecls.core.options import Kind, Spec, describe, field_help, flag_of, kinds, problem, spec_of


class Checked(click.ParamType):
    """A number, or comma-separated integers, checked against a field's :class:`Spec` at parse time."""

    def __init__(self, spec: Spec, kind: Kind) -> None:
        self.spec, self.kind = spec, kind
        self.name = {"int": "integer", "float": "float", "ints": "integers"}[kind.base]

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        if value is None or (self.kind.base == "ints" and isinstance(value, tuple)):
            return value
        try:
            parsed = _parse(value, self.kind.base)
        except (TypeError, ValueError, OverflowError):
            self.fail(f"must be {describe(self.spec, self.kind)}, got {value!r}", param, ctx)
        why = problem(parsed, self.spec, self.kind)
        if why:
            shown = ",".join(map(str, parsed)) if isinstance(parsed, tuple) else parsed
            self.fail(f"{why}, got {shown}", param, ctx)
        return parsed

    def get_metavar(self, param: click.Parameter, ctx: Optional[click.Context] = None) -> Optional[str]:
        return self.spec.metavar or {"int": "INTEGER", "float": "FLOAT", "ints": "N[,N...]"}[self.kind.base]


class CheckedOption(click.Option):
    """Shows a :class:`Checked` option's bounds in ``--help`` the way click shows its own ranges."""

    def get_help_extra(self, ctx: click.Context) -> Any:
        extra = super().get_help_extra(ctx)
        if isinstance(self.type, Checked) and (self.type.spec.low is not None or self.type.spec.high is not None):
            extra["range"] = describe(self.type.spec, self.type.kind)
        return extra


def _parse(value: Any, base: str) -> Any:
    if base == "ints":
        parts = [p for p in str(value).replace(" ", "").split(",") if p != ""]
        if not parts:
            raise ValueError(value)
        return tuple(dict.fromkeys(int(p) for p in parts))  # keep order, drop repeats
    if base == "int":
        if isinstance(value, int):
            return value
        return int(str(value).strip())
    return float(value)


def click_option(cls: type, name: str, **overrides: Any) -> Callable:
    """The click option of one config field (``overrides`` go to ``click.option``)."""
    f = next((f for f in dataclasses.fields(cls) if f.name == name), None)
    if f is None:
        raise KeyError(f"{cls.__name__} has no field {name!r}")
    spec, kind = spec_of(f), kinds(cls)[name]
    if not spec.on_cli:
        raise KeyError(f"{cls.__name__}.{name} is not a command-line option")
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    decls = [spec.flag or flag_of(f)]
    if kind.base == "bool" and not spec.flag:
        decls = [f"{flag_of(f)}/--no-{name.replace('_', '-')}"] if default else [flag_of(f)]
    if spec.short:
        decls.append(spec.short)
    kwargs: dict[str, Any] = {"default": default, "help": field_help(cls, name), "show_default": default not in (None, "", ())}
    if kind.base == "bool":
        kwargs["show_default"] = False
        if not spec.flag and not default:
            kwargs["is_flag"] = True
    elif spec.choices:
        kwargs["type"] = click.Choice(spec.choices)
    elif kind.base in ("int", "float", "ints"):
        kwargs["type"] = Checked(spec, kind)
        kwargs["cls"] = CheckedOption
        if kind.base == "ints":
            kwargs["default"] = ",".join(map(str, default))
    elif kind.base == "strs":
        kwargs["multiple"] = True
    elif spec.path:
        kwargs["type"] = click.Path(file_okay=spec.path != "dir", dir_okay=spec.path == "dir",
                                    exists=spec.path == "existing-file")
    if spec.metavar and ("type" not in kwargs or spec.path):
        kwargs["metavar"] = spec.metavar
    kwargs.update(overrides)
    if kwargs.get("required"):
        # click 8.3+ treats any default given, None included, as a value: a required option has none.
        kwargs.pop("default", None)
        kwargs["show_default"] = False
    return click.option(*decls, name, **kwargs)


def config_options(cls: type, *names: str, **overrides: dict[str, Any]) -> Callable:
    """Decorate a click command with the options of ``cls``'s fields ``names`` (in that order).

    ``overrides`` maps a field name to extra ``click.option`` keywords (e.g. ``help=`` with more text)."""

    def decorate(fn: Callable) -> Callable:
        for name in reversed(names):
            fn = click_option(cls, name, **overrides.get(name, {}))(fn)
        return fn

    return decorate


def cli_fields(cls: type) -> list[str]:
    """The fields of ``cls`` that are command-line options (the ones a command must offer)."""
    return [f.name for f in dataclasses.fields(cls) if spec_of(f).on_cli]
