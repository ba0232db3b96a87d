"""Argument checks shared by every module: one message template, raised as early as possible.

Every check raises ``ValueError`` (``TypeError`` for a wrong kind of object) worded
"Expected argument `name` to be ... but got ...", and returns the value in the form the
caller keeps (numpy scalars become Python numbers).

Example:
    >>> check_number("margin", 0.5, low=0.0, low_open=True)
    0.5
    >>> check_int("patience", 0, 1)
    Traceback (most recent call last):
    ...
    ValueError: Expected argument `patience` to be an integer >= 1 but got 0.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

__all__ = ["check_bool", "check_choice", "check_int", "check_name", "check_number", "is_real_number"]


def is_real_number(value: Any) -> bool:
    """True for ints and floats, numpy's included; False for bools, complex numbers and tensors."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and type(value).__name__ != "bool_"


def check_int(name: str, value: Any, minimum: int | None = None) -> int:
    """An integer (numpy integers accepted), at least ``minimum``."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and type(value).__name__ != "bool_"
    if ok and minimum is not None:
        ok = int(value) >= minimum
    if not ok:
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"Expected argument `{name}` to be an integer{bound} but got {value!r}.")
    return int(value)


def check_number(
    name: str, value: Any, low: float | None = None, high: float | None = None, low_open: bool = False
) -> float:
    """A finite real number (numpy scalars accepted) within the bounds."""
    ok = is_real_number(value) and math.isfinite(float(value))
    if ok and low is not None:
        ok = float(value) > low if low_open else float(value) >= low
    if ok and high is not None:
        ok = float(value) <= high
    if not ok:
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if low_open else '>='} {low}")
        if high is not None:
            bounds.append(f"<= {high}")
        expected = "a finite number" + (" " + " and ".join(bounds) if bounds else "")
        raise ValueError(f"Expected argument `{name}` to be {expected} but got {value!r}.")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """A real ``bool``, Python's or numpy's (a string such as ``"no"`` is refused, not read as True)."""
    kind = type(value)
    if isinstance(value, bool) or (kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_")):
        return bool(value)
    raise TypeError(f"Expected argument `{name}` to be a bool but got {value!r}.")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """One of ``choices``."""
    options = list(choices)
    if not isinstance(value, (str, int, type(None))) or value not in options:
        shown = ", ".join(repr(c) for c in options)
        raise ValueError(f"Expected argument `{name}` to be one of {shown} but got {value!r}.")
    return value


def check_name(name: str, value: Any, optional: bool = False) -> str | None:
    """A non-empty string (a metric name), or ``None`` when ``optional``."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        expected = "a metric name or None" if optional else "a metric name"
        raise ValueError(f"Expected argument `{name}` to be {expected} but got {value!r}.")
    return value
