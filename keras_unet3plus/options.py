"""Settings declared once: a dataclass field whose metadata holds its help, type, choices and what
None means; the command-line flags, the reading of config-file values and the checks of choices
and bounds are derived from it (:class:`~keras_unet3plus.training.TrainConfig`,
:class:`~keras_unet3plus.inference.PredictOptions`).

Standard library only, so a command builds its flags without loading TensorFlow.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any
from collections.abc import Callable

__all__ = ["option", "spec", "add_flags", "values_from_args", "coerce", "check", "defaults"]

_MISSING = dataclasses.MISSING


def option(
    default: Any,
    help: str,
    *,
    type: type = str,
    choices: tuple | None = None,
    nargs: int | str | None = None,
    metavar: Any = None,
    none: str | None = None,
    min: float | None = None,
    zero_is_none: bool = True,
    flag: str | None = None,
    negate: bool = False,
    cli_default: Any = _MISSING,
    from_flag: Callable[[Any], Any] | None = None,
    **extra: Any,
) -> Any:
    """A dataclass field with its flag's facts in ``metadata``.

    ``type``: the value's (or each element's, with ``nargs``) type; ``none``: what None means (the
    field may be None, the flag accepts ``none``, and ``0`` too unless ``zero_is_none=False``);
    ``min``: the smallest allowed value; ``flag``: the flag's name when it is not ``--field-name``;
    ``negate``: a boolean flag that sets False (``--quiet`` for ``progress``);
    ``cli_default``/``from_flag``: where the command line's default or form differs from Python's,
    declared here with the field (and nowhere else).
    """
    meta = dict(
        help=help,
        type=type,
        choices=choices,
        nargs=nargs,
        metavar=metavar,
        none=none,
        min=min,
        zero_is_none=zero_is_none,
        flag=flag,
        negate=negate,
        cli_default=cli_default,
        from_flag=from_flag,
        **extra,
    )
    if isinstance(default, (list, dict, set)):
        raise TypeError("option(): use a tuple (immutable) default")
    return dataclasses.field(default=default, metadata=meta)


def spec(cls, name: str) -> dict[str, Any]:
    """The metadata of ``cls``'s field ``name`` (empty for a field declared without :func:`option`)."""
    return dict(cls.__dataclass_fields__[name].metadata)


def defaults(cls) -> dict[str, Any]:
    """Field name -> default, as Python callers get them."""
    return {f.name: f.default for f in dataclasses.fields(cls)}


def _flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _parse_optional(typ: type, zero: bool) -> Callable[[str], Any]:
    """An argparse type that reads ``none``/``off`` (and ``0`` with ``zero``) as None."""
    words = ("none", "off", "0") if zero else ("none", "off")

    def parse(text: str):
        if text.lower() in words and typ is not str:
            return None
        return typ(text)

    parse.__name__ = typ.__name__
    return parse


def _shown(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(map(str, value))
    return str(value)


def add_flags(
    parser: argparse.ArgumentParser,
    cls,
    *,
    skip: tuple[str, ...] = (),
    suppress: bool = False,
    parser_choices: bool = True,
) -> None:
    """One flag per field of the dataclass ``cls``.

    ``suppress``: absent flags stay out of the namespace (a config file or preset decides, as for
    ``unet3plus train``); otherwise the namespace holds the command line's defaults.
    ``parser_choices``: argparse refuses values outside ``choices`` (else the dataclass's own check
    does, with a config file's values alike).
    """
    for f in dataclasses.fields(cls):
        m = f.metadata
        if f.name in skip or "help" not in m:
            continue
        default = f.default if m["cli_default"] is _MISSING else m["cli_default"]
        kw: dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS if suppress else default)
        text = m["help"]
        if m["choices"] and not m["from_flag"]:
            text += f" ({', '.join(map(str, m['choices']))})"
        if m["type"] is bool:
            if m["negate"]:
                parser.add_argument(_flag_name(f), action="store_false", help=text, **kw)
            else:
                parser.add_argument(
                    _flag_name(f), action=argparse.BooleanOptionalAction, help=f"{text} (default {default})", **kw
                )
            continue
        if m["nargs"] is not None:
            kw.update(nargs=m["nargs"], type=m["type"])
        else:
            kw["type"] = _parse_optional(m["type"], m["zero_is_none"]) if m["none"] else m["type"]
        if m["choices"] and parser_choices:
            kw["choices"] = m["choices"]
        kw["metavar"] = m["metavar"] or (None if kw.get("choices") else f.name.upper())
        if default is None:
            text += f" (default: {m['none']})" if m["none"] else ""
        else:
            off = "none or 0" if m["zero_is_none"] else "none"
            text += f" (default {_shown(default)}" + (f"; {off}: {m['none']})" if m["none"] else ")")
        parser.add_argument(_flag_name(f), help=text, **kw)


def values_from_args(cls, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of ``cls`` found in ``args``, in the dataclass's form (``from_flag`` applied)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.name not in vars(args):
            continue
        value = getattr(args, f.name)
        convert = f.metadata.get("from_flag")
        out[f.name] = convert(value) if convert else value
    return out


def coerce(cls, name: str, value: Any, source: str = "") -> Any:
    """A config-file or flag value in field ``name``'s type; a ValueError names the setting."""
    if value is None:
        return None
    f = cls.__dataclass_fields__[name]
    typ, nargs = f.metadata.get("type"), f.metadata.get("nargs")
    if typ is None:
        return value
    try:
        if nargs is not None:
            items = [value] if isinstance(value, (str, int, float)) else list(value)
            return tuple(_scalar(typ, v) for v in items)
        return _scalar(typ, value)
    except (TypeError, ValueError):
        where = f" in {source}" if source else ""
        raise ValueError(
            f"setting '{name}'{where}: cannot use {value!r} (expected {typ.__name__}"
            f"{' values' if nargs is not None else ''})"
        ) from None


def _scalar(typ: type, value: Any) -> Any:
    if typ is bool:
        if isinstance(value, str):
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if not isinstance(value, (bool, int)):
            raise ValueError(value)
        return bool(value)
    if typ is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        return int(value)
    if typ is float:
        if isinstance(value, bool):
            raise ValueError(value)
        return float(value)
    return typ(value)


def check(obj) -> list[tuple[str, str]]:
    """``(field, why)`` for every value of the dataclass instance ``obj`` outside its declared
    choices or below its declared minimum (None is fine where the field says what it means)."""
    problems = []
    for f in dataclasses.fields(obj):
        m, value = f.metadata, getattr(obj, f.name)
        if "help" not in m or (value is None and m["none"]):
            continue
        if m["choices"] and not m["from_flag"] and value not in m["choices"]:
            problems.append((f.name, f"choose one of {', '.join(map(str, m['choices']))}"))
        elif m["min"] is not None:
            items = value if m["nargs"] is not None and isinstance(value, (tuple, list)) else (value,)
            integral = m["type"] is not int or all(isinstance(v, int) and not isinstance(v, bool) for v in items)
            if not integral or not all(isinstance(v, (int, float)) and v >= m["min"] for v in items):
                problems.append((f.name, _bound_text(m["type"], m["min"])))
    return problems


def _bound_text(typ: type, low: float) -> str:
    if typ is int:
        return "must be a positive integer" if low == 1 else f"must be an integer >= {low}"
    return f"must be >= {low}"
