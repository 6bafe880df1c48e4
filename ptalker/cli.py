"""Command lines built from dataclasses: a field declares its flag once (default, help, parser type), and
`--config FILE.json` supplies flag values that the command line overrides.

A field is a flag when its metadata has "help" (see `option`); other fields (paths and objects the
program fills in) are not. The flag's name is the field's name, `--<name>`.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import MISSING, field, fields
from pathlib import Path

from .errors import UserError, print_user_error


def option(default=None, help: str = "", **argparse_kwargs):
    """A dataclass field that is also a command-line flag; `argparse_kwargs` (type, choices, nargs,
    metavar, action) go to `add_argument`. A list default becomes a default_factory."""
    metadata = {"help": help, "argparse": argparse_kwargs}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


# parser types: each raises ArgumentTypeError with the reason, which argparse puts after the flag's name
def at_least(low: int):
    """An integer >= `low`."""
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def fraction(one_allowed: bool):
    """A float in [0, 1], or in [0, 1) without `one_allowed`."""
    def parse(text: str) -> float:
        value = float(text)
        if not (0.0 <= value <= 1.0 if one_allowed else 0.0 <= value < 1.0):
            raise argparse.ArgumentTypeError(f"must be in [0, 1{']' if one_allowed else ')'}, got {value}")
        return value
    parse.__name__ = "number"
    return parse


def positive(text: str) -> float:
    """A float > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


positive.__name__ = "number"


def parse_resolution(text: str) -> tuple[int, int]:
    """`800` or `1024x768` -> (width, height)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 16:
        raise argparse.ArgumentTypeError(f"expected N or WxH (at least 16), got {text!r}")
    return parts[0], parts[1]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are the project's one `error: ...` line and status 2."""

    def error(self, message: str):
        sys.exit(print_user_error(UserError(f"{message} (see {self.prog} --help)")))


def flag_fields(cls) -> list:
    """The fields of dataclass `cls` that are command-line flags."""
    return [f for f in fields(cls) if "help" in f.metadata]


def flag_values(cls, args: argparse.Namespace) -> dict:
    """{field name: parsed value} of `cls`'s flags, to build `cls` (or part of it) from parsed flags."""
    return {f.name: getattr(args, f.name) for f in flag_fields(cls)}


def add_flags(parser: argparse.ArgumentParser, cls, title: str, unset: tuple[str, ...] = ()) -> None:
    """Add one flag per flag field of dataclass `cls`, in an argument group `title`. Names in `unset`
    default to None (another layer, e.g. a recipe, fills them after parsing); a bool field is a
    store_true switch."""
    group = parser.add_argument_group(title)
    for f in flag_fields(cls):
        kwargs = dict(f.metadata["argparse"])
        default = f.default_factory() if f.default is MISSING else f.default
        if f.name in unset:
            default = None
        elif isinstance(default, bool):
            kwargs.setdefault("action", "store_true")
        elif "type" not in kwargs and "choices" not in kwargs and default is not None and "nargs" not in kwargs:
            kwargs["type"] = type(default)
        help_text = f.metadata["help"]
        if not (default is None or default is False or default == []) and "default" not in help_text:
            help_text += f" (default: {default})"
        group.add_argument(f"--{f.name}", default=default, help=help_text, **kwargs)


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse `argv`; the values of `--config FILE.json` (flag name -> value) become the defaults, so a
    flag on the command line overrides the file. Bad files or values exit with a one-line error."""
    parser.add_argument("--config", metavar="FILE.json", default=None,
                        help="JSON object of flag names (without dashes) and values, e.g. configs/synthtalk.json; "
                             "flags on the command line override it")
    known, _ = _config_only(parser).parse_known_args(argv)
    if known.config is not None:
        try:
            parser.set_defaults(**read_config(parser, known.config))
        except UserError as exc:
            sys.exit(print_user_error(exc))
    args = parser.parse_args(argv)
    del args.config   # the flags it gave are in the namespace; nothing downstream reads the file name
    return args


def _config_only(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    only = Parser(add_help=False, prog=parser.prog)
    only.add_argument("--config", default=None)
    return only


def read_config(parser: argparse.ArgumentParser, path: str) -> dict:
    """{dest: parsed value} from a JSON config file, each value checked as its flag's text would be."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"config file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a JSON object of flag names and values")
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", "config")}
    unknown = sorted(set(data) - set(actions))
    if unknown:
        raise UserError(f"config file {path}: unknown flag(s) {', '.join(unknown)} (see {parser.prog} --help)")
    return {name: _config_value(actions[name], value, path) for name, value in data.items()}


def _config_value(action: argparse.Action, value, path: str):
    """`value` (from JSON) parsed by the flag's own type and choices; the wrong JSON type is a UserError."""
    where = f"config file {path}: {action.dest}"
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, got {json.dumps(value)}")
        return value
    if action.nargs == "*":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UserError(f"{where} must be a list of strings, got {json.dumps(value)}")
        return [_convert(action, v, where) for v in value]
    converter = action.type
    if converter is int or getattr(converter, "__name__", "") == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
        kind = "an integer"
    elif converter is float or getattr(converter, "__name__", "") == "number":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        kind = "a number"
    else:
        ok = isinstance(value, str) or (value is None and action.default is None)
        kind = "a string"
    if not ok:
        raise UserError(f"{where} must be {kind}, got {json.dumps(value)}")
    return None if value is None else _convert(action, str(value), where)


def _convert(action: argparse.Action, text: str, where: str):
    try:
        value = action.type(text) if action.type else text
    except argparse.ArgumentTypeError as exc:
        raise UserError(f"{where} {exc}") from None
    except ValueError:
        raise UserError(f"{where}: invalid value {text!r}") from None
    if action.choices is not None and value not in action.choices:
        raise UserError(f"{where}: invalid choice {value!r} (choose from {', '.join(map(str, action.choices))})")
    return value
