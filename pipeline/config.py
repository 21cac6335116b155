"""Typed run configuration: dataclasses whose fields are the command-line options.

`opt(default, help)` declares a field with its help text; `add_arguments` turns a config
class into argparse options (`--batch-size` for `batch_size`, `--flag/--no-flag` for
booleans); `from_args` builds the config back, and its `__post_init__` checks the values.
"""

from __future__ import annotations

import argparse
import dataclasses


def opt(default, help: str):
    return dataclasses.field(default=default, metadata={"help": help})


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if f.type in (bool, "bool"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str}.get(
                f.type if isinstance(f.type, str) else f.type.__name__, str
            )
            parser.add_argument(flag, type=kind, default=f.default, help=f"{help_text} (default: {f.default})")


def from_args(cls, namespace: argparse.Namespace):
    return cls(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)})


def positive_ints(text: str, name: str) -> tuple[int, ...]:
    """Positive integers from 'a,b,c', or a ValueError naming the option and the text."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{name} must be comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise ValueError(f"{name} must be positive integers, got {text!r}")
    return values


def parse_floats(text: str, name: str) -> tuple[float, ...]:
    """Numbers from 'a,b,c', or a ValueError naming the option and the text."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{name} must be comma-separated numbers, got {text!r}") from None


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_count(name: str, value) -> int:
    """A count where 0 means "off" or "all": an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return value
