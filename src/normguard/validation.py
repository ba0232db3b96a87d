"""Argument checks shared by every module: one message template, raised as early as possible.

Every check raises ``ValueError`` (``TypeError`` for a wrong kind of object where the caller
documents it) worded "Expected argument `name` to be ... but got ...", and returns the value
in the form the caller keeps (numpy scalars become Python numbers). Scalars: :func:`check_int`,
:func:`check_number`, :func:`check_bool`, :func:`check_choice`, :func:`check_name`. Arrays
(numpy or torch, any device, never copied): :func:`check_real_array`, :func:`check_matrix`,
:func:`check_vector`, :func:`check_finite`.

Example:
    >>> check_number("margin", 0.5, low=0.0, low_open=True)
    0.5
    >>> check_int("patience", 0, 1)
    Traceback (most recent call last):
    ...
    ValueError: Expected argument `patience` to be an integer >= 1 but got 0.
    >>> check_number("gamma", 1.0, low=0, high=1, low_open=True, high_open=True)
    Traceback (most recent call last):
    ...
    ValueError: Expected argument `gamma` to be a finite number > 0 and < 1 but got 1.0.
    >>> check_matrix("X", np.zeros(4))
    Traceback (most recent call last):
    ...
    ValueError: Expected argument `X` to be a 2-d matrix (n samples × d features) but got shape (4,).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any, Literal, TypeVar, overload

import numpy as np
import torch

__all__ = [
    "check_bool",
    "check_choice",
    "check_finite",
    "check_int",
    "check_matrix",
    "check_name",
    "check_number",
    "check_real_array",
    "check_vector",
    "is_real_number",
]

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def is_real_number(value: Any) -> bool:
    """True for ints and floats, numpy's included; False for bools, complex numbers and tensors."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and type(value).__name__ != "bool_"


@overload
def check_int(name: str, value: Any, minimum: int | None = None, *, optional: Literal[False] = False) -> int: ...
@overload
def check_int(name: str, value: Any, minimum: int | None = None, *, optional: bool) -> int | None: ...
def check_int(name: str, value: Any, minimum: int | None = None, *, optional: bool = False) -> int | None:
    """An integer (numpy integers accepted), at least ``minimum``; or ``None`` when ``optional``."""
    if value is None and optional:
        return None
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and type(value).__name__ != "bool_"
    if ok and minimum is not None:
        ok = int(value) >= minimum
    if not ok:
        bound = f" >= {minimum}" if minimum is not None else ""
        alternative = " or None" if optional else ""
        raise ValueError(f"Expected argument `{name}` to be an integer{bound}{alternative} but got {value!r}.")
    return int(value)


def _scalar(value: Any) -> Any:
    """A 0-d real tensor or array as its Python number (``tau=0.5 * (y**2).mean()`` with tensor ``y``)."""
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.dtype.is_complex and value.dtype != torch.bool:
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "fiu":
        return value.item()
    return value


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    note: str | None = None,
) -> float:
    """A finite real number (numpy scalars and one-element 0-d tensors/arrays accepted) within the bounds.

    ``low_open``/``high_open`` exclude the bound itself; ``note`` says in the message what a
    bound stands for (e.g. ``"sigma2, the noise variance"``).

    Example:
        >>> check_number("tau", torch.tensor(0.5), low=0.0, low_open=True)
        0.5
    """
    value = _scalar(value)
    ok = is_real_number(value) and math.isfinite(float(value))
    if ok and low is not None:
        ok = float(value) > low if low_open else float(value) >= low
    if ok and high is not None:
        ok = float(value) < high if high_open else float(value) <= high
    if not ok:
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if low_open else '>='} {low}")
        if high is not None:
            bounds.append(f"{'<' if high_open else '<='} {high}")
        expected = "a finite number" + (" " + " and ".join(bounds) if bounds else "")
        if note:
            expected += f" ({note})"
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


# --------------------------------------------------------------------------- arrays (numpy or torch)


def check_real_array(name: str, value: Any) -> Any:
    """A numpy array or torch tensor of real numbers: numeric, neither bool nor complex."""
    if isinstance(value, np.ndarray):
        if np.iscomplexobj(value):
            raise ValueError(f"Expected argument `{name}` to be real but got complex dtype {value.dtype}.")
        if not np.issubdtype(value.dtype, np.number) or np.issubdtype(value.dtype, np.bool_):
            raise ValueError(f"Expected argument `{name}` to be numeric but got dtype {value.dtype}.")
    elif isinstance(value, torch.Tensor):
        if value.is_complex():
            raise ValueError(f"Expected argument `{name}` to be real but got complex dtype {value.dtype}.")
        if value.dtype == torch.bool:
            raise ValueError(f"Expected argument `{name}` to be numeric but got dtype {value.dtype}.")
    else:
        raise ValueError(f"Expected argument `{name}` to be a torch tensor or numpy array but got {type(value)}.")
    return value


def check_matrix(name: str, value: ArrayT, min_rows: int = 1, min_cols: int = 1) -> ArrayT:
    """A 2-d array (rows are samples) with at least ``min_rows`` rows and ``min_cols`` columns."""
    shape = tuple(value.shape)
    if value.ndim != 2:
        raise ValueError(
            f"Expected argument `{name}` to be a 2-d matrix (n samples × d features) but got shape {shape}."
        )
    if shape[0] < min_rows or shape[1] < min_cols:
        raise ValueError(
            f"Expected argument `{name}` to have at least {min_rows} rows and {min_cols} columns but got shape {shape}."
        )
    return value


def check_vector(name: str, value: ArrayT, length: int) -> ArrayT:
    """A vector of ``length`` entries; a single row or column is flattened to one."""
    if value.ndim == 2 and 1 in value.shape:
        value = value.reshape(-1)
    if value.ndim != 1 or value.shape[0] != length:
        raise ValueError(
            f"Expected argument `{name}` to be a vector of length {length} but got shape {tuple(value.shape)}."
        )
    return value


def check_finite(name: str, value: ArrayT) -> ArrayT:
    """An array without NaN or inf.

    A tensor is first checked through its column sums (one cheap pass, finite whenever every
    entry is, unless they overflow); the exact mask is built only when they are not.
    """
    if isinstance(value, torch.Tensor):
        sums = value.sum(dim=0) if value.ndim else value
        finite = bool(torch.isfinite(sums).all()) or bool(torch.isfinite(value).all())
    else:
        finite = bool(np.isfinite(value).all())
    if not finite:
        raise ValueError(f"Expected argument `{name}` to be finite but it holds NaN or inf.")
    return value
