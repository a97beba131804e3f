"""Options declared once: a config field carries its default, its help, its CLI spelling and its bounds.

Every stage's options are one dataclass (:mod:`edgecls.core.config`). A field is declared with
:func:`opt`, which records how the value may look (bounds, choices, an integer or a number) beside
the default; the docstring under the field is its help text. From that one declaration:

- ``edgecls.cli.options.config_options`` makes the click option (same name, default, help and
  bounds, checked where the command line is parsed);
- :func:`validate` checks a config built from Python or read back from a run folder the same way.

So an option cannot drift between its config field, its CLI flag and its check. Numbers are always
finite: ``nan`` and ``inf`` parse as floats and pass a plain ``>= 0`` test, so every number here is
refused unless it is a finite value inside its bounds.

Pure standard library: the TF-free device runtime imports the configs too.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import dataclass
from typing import Any, Optional

from edgecls.core.errors import EdgeclsError

SPEC_KEY = "edgecls.option"


@dataclass(frozen=True)
class Spec:
    """How one option may look, and how it is spelled on the command line."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    """The bound itself is excluded (``> low`` instead of ``>= low``)."""
    high_open: bool = False
    choices: Optional[tuple[str, ...]] = None
    flag: Optional[str] = None
    """CLI spelling when it is not ``--field-name`` (``--headless/--window``); ``""``: not a CLI option."""
    short: Optional[str] = None
    metavar: Optional[str] = None
    unit: str = ""
    """Shown after a bound in messages (``pixels``, ``seconds``)."""
    path: Optional[str] = None
    """A path option: ``file`` (not a folder), ``dir`` (not a file) or ``existing-file``; checked where it is parsed."""

    @property
    def on_cli(self) -> bool:
        return self.flag != ""


def opt(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, low: Optional[float] = None,
        high: Optional[float] = None, low_open: bool = False, high_open: bool = False,
        choices: Optional[tuple[str, ...]] = None, flag: Optional[str] = None, short: Optional[str] = None,
        metavar: Optional[str] = None, unit: str = "", path: Optional[str] = None) -> Any:
    """A dataclass field with its :class:`Spec` (bounds are inclusive unless ``*_open``)."""
    spec = Spec(low=low, high=high, low_open=low_open, high_open=high_open, choices=choices, flag=flag, short=short,
                metavar=metavar, unit=unit, path=path)
    return dataclasses.field(default=default, default_factory=factory, metadata={SPEC_KEY: spec})


def spec_of(f: dataclasses.Field) -> Spec:
    return f.metadata.get(SPEC_KEY) or Spec()


def flag_of(f: dataclasses.Field) -> str:
    """The option as a user types it: ``--field-name`` unless the field says otherwise."""
    spec = spec_of(f)
    if spec.flag:
        return spec.flag.split("/")[0]
    return "--" + f.name.replace("_", "-")


@dataclass(frozen=True)
class Kind:
    """What a field holds: ``int``, ``float``, ``bool``, ``str`` or a tuple of ints, and whether None is allowed."""

    base: str
    optional: bool = False


@functools.lru_cache(maxsize=None)
def kinds(cls: type) -> dict[str, Kind]:
    """{field: Kind} of a config class, from its type hints."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        optional = False
        if typing.get_origin(t) is typing.Union:
            args = [a for a in typing.get_args(t) if a is not type(None)]
            optional, t = True, args[0]
        if typing.get_origin(t) is tuple:
            base = "ints" if typing.get_args(t)[0] is int else "strs"
        else:
            base = getattr(t, "__name__", str(t))
        out[f.name] = Kind(base, optional)
    return out


def describe(spec: Spec, kind: Kind) -> str:
    """'a finite number > 0', 'an integer between 1 and 64', 'one of a, b'."""
    if spec.choices:
        return "one of " + ", ".join(spec.choices)
    what = {"int": "an integer", "ints": "integers", "float": "a finite number"}.get(kind.base, "a value")
    unit = f" {spec.unit}" if spec.unit else ""
    lo, hi = spec.low, spec.high
    if lo is not None and hi is not None:
        if not spec.low_open and not spec.high_open:
            return f"{what} between {_num(lo)} and {_num(hi)}{unit}"
        return f"{what} in {'(' if spec.low_open else '['}{_num(lo)}, {_num(hi)}{')' if spec.high_open else ']'}{unit}"
    if lo is not None:
        return f"{what} {'>' if spec.low_open else '>='} {_num(lo)}{unit}"
    if hi is not None:
        return f"{what} {'<' if spec.high_open else '<='} {_num(hi)}{unit}"
    return what


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def problem(value: Any, spec: Spec, kind: Kind) -> Optional[str]:
    """Why ``value`` is not a valid value of this option, or None."""
    if value is None:
        return None if kind.optional else "a value is required"
    if kind.base == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    if kind.base in ("str", "strs"):
        values = value if kind.base == "strs" else (value,)
        if not all(isinstance(v, str) for v in values):
            return "must be text"
        if spec.choices and any(v not in spec.choices for v in values):
            return f"must be {describe(spec, kind)}"
        return None
    values = value if kind.base == "ints" else (value,)
    if kind.base == "ints" and not values:
        return f"must be one or more {describe(spec, kind)}"
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"must be {describe(spec, kind)}"
        if kind.base in ("int", "ints") and not float(v).is_integer():
            return f"must be {describe(spec, kind)}"
        if not math.isfinite(v) or not _inside(v, spec):
            return f"must be {describe(spec, kind)}"
    return None


def _inside(v: float, spec: Spec) -> bool:
    if spec.low is not None and (v <= spec.low if spec.low_open else v < spec.low):
        return False
    if spec.high is not None and (v >= spec.high if spec.high_open else v > spec.high):
        return False
    return True


def validate(cfg: Any) -> None:
    """Raise :class:`EdgeclsError` naming the first option of ``cfg`` whose value is out of its bounds.

    ``TrainConfig(learning_rate=float("inf"))`` -> ``--learning-rate must be a finite number in (0, 1], got inf``.
    """
    kind_of = kinds(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            validate(value)
            continue
        why = problem(value, spec_of(f), kind_of[f.name])
        if why:
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
            raise EdgeclsError(f"{flag_of(f)} {why}, got {shown!r}" if isinstance(shown, str)
                               else f"{flag_of(f)} {why}, got {shown}")


def from_dict(cls: type, d: dict[str, Any], renamed: Optional[dict[str, str]] = None) -> Any:
    """A config from a saved dict: keys a newer or older version did not have are ignored, ``renamed``
    maps an older field name to today's, and lists become tuples where the field is a tuple."""
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        key = (renamed or {}).get(key, key)
        if key in names:
            kwargs[key] = value
    kind_of = kinds(cls)
    for name, value in kwargs.items():
        if isinstance(value, list) and kind_of[name].base in ("ints", "strs"):
            kwargs[name] = tuple(value)
    return cls(**kwargs)


def field_help(cls: type, name: str) -> str:
    """The docstring under a dataclass field, for click help texts (one source of truth)."""
    return _field_docs(cls).get(name, "")


@functools.lru_cache(maxsize=None)
def _field_docs(cls: type) -> dict[str, str]:
    """{field: docstring} of one class, parsed once per process (not once per option)."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
        ):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs
