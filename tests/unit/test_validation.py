"""The shared argument checks of ``normguard.validation`` and the modules that use them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from normguard.validation import (
    check_finite,
    check_int,
    check_matrix,
    check_number,
    check_real_array,
    check_vector,
)


def test_check_number_bounds_open_and_closed() -> None:
    assert check_number("p", 0.0, low=0.0, high=1.0, high_open=True) == 0.0
    assert check_number("p", np.float32(0.5), low=0.0, high=1.0, high_open=True) == 0.5
    with pytest.raises(
        ValueError, match=r"^Expected argument `p` to be a finite number >= 0.0 and < 1.0 but got 1.0\.$"
    ):
        check_number("p", 1.0, low=0.0, high=1.0, high_open=True)
    assert check_number("p", 1.0, low=0.0, high=1.0) == 1.0
    with pytest.raises(ValueError, match=r"> 0 and < 2 \(sigma2\) but got 2"):
        check_number("tau", 2, low=0, high=2, low_open=True, high_open=True, note="sigma2")
    for bad in (math.nan, math.inf, "0.5", torch.tensor([0.5]), True):
        with pytest.raises(ValueError, match="`p`"):
            check_number("p", bad, low=0.0)


def test_check_number_takes_zero_dim_tensors_and_arrays() -> None:
    # tau computed from tensor data, as a user of min_norm_near_interpolator writes it
    y = torch.tensor([1.0, -1.0, 2.0])
    assert check_number("tau", 0.5 * (y**2).mean(), low=0.0, low_open=True) == pytest.approx(1.0)
    assert check_number("alpha", np.array(2.0), low=1.0) == 2.0
    for bad in (torch.tensor([1.0]), torch.tensor(True), np.array(True), torch.tensor(float("nan"))):
        with pytest.raises(ValueError, match="`alpha`"):
            check_number("alpha", bad)


def test_check_int_optional() -> None:
    assert check_int("b", None, 0, optional=True) is None
    assert check_int("b", np.int64(3), 0, optional=True) == 3
    with pytest.raises(ValueError, match=r"^Expected argument `b` to be an integer >= 0 or None but got -1\.$"):
        check_int("b", -1, 0, optional=True)
    with pytest.raises(ValueError, match=r"an integer >= 0 but got None"):
        check_int("b", None, 0)
    with pytest.raises(ValueError, match="`b`"):
        check_int("b", True, 0, optional=True)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.zeros((3, 3), dtype=complex), "`X` to be real but got complex dtype complex128"),
        (np.zeros((3, 3), dtype=bool), "`X` to be numeric but got dtype bool"),
        (np.array([["a"]]), "`X` to be numeric"),
        (torch.zeros(3, 3, dtype=torch.complex64), "`X` to be real but got complex dtype torch.complex64"),
        (torch.zeros(3, 3, dtype=torch.bool), "`X` to be numeric but got dtype torch.bool"),
        ([[1.0, 2.0]], "`X` to be a torch tensor or numpy array but got <class 'list'>"),
    ],
)
def test_check_real_array_refuses(value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_real_array("X", value)


def test_check_real_array_accepts_real_arrays() -> None:
    for value in (np.zeros((2, 2), dtype=np.int32), torch.zeros(2, dtype=torch.float16)):
        assert check_real_array("X", value) is value


def test_check_matrix_and_vector() -> None:
    X = torch.zeros(4, 3)
    assert check_matrix("X", X, min_rows=3, min_cols=3) is X
    with pytest.raises(ValueError, match=r"`X` to be a 2-d matrix \(n samples × d features\) but got shape \(4,\)"):
        check_matrix("X", np.zeros(4))
    with pytest.raises(ValueError, match=r"`X` to have at least 3 rows and 3 columns but got shape \(2, 5\)"):
        check_matrix("X", np.zeros((2, 5)), min_rows=3, min_cols=3)
    assert check_vector("y", np.zeros((4, 1)), 4).shape == (4,)
    assert tuple(check_vector("y", torch.zeros(1, 4), 4).shape) == (4,)
    with pytest.raises(ValueError, match=r"`y` to be a vector of length 4 but got shape \(3,\)"):
        check_vector("y", np.zeros(3), 4)
    with pytest.raises(ValueError, match=r"`y` to be a vector of length 4 but got shape \(2, 2\)"):
        check_vector("y", torch.zeros(2, 2), 4)


def test_check_finite_is_exact_when_the_column_sums_overflow() -> None:
    big = torch.full((4, 2), 3e38, dtype=torch.float32)  # finite, but its column sums are inf
    assert check_finite("X", big) is big
    for bad in (torch.tensor([[1.0, math.nan]]), torch.tensor([1.0, -math.inf]), np.array([[0.0, math.inf]])):
        with pytest.raises(ValueError, match=r"^Expected argument `X` to be finite but it holds NaN or inf\.$"):
            check_finite("X", bad)


def test_science_checks_name_the_argument() -> None:
    from normguard.science import datasets, theory

    X = np.random.default_rng(0).normal(size=(10, 4))
    with pytest.raises(ValueError, match=r"`y` to be a vector of length 10 but got shape \(9,\)"):
        theory.min_norm_near_interpolator(X, np.zeros(9), tau=0.1)
    with pytest.raises(ValueError, match="`y` to be finite"):
        theory.min_norm_near_interpolator(X, np.full(10, math.nan), tau=0.1)
    with pytest.raises(ValueError, match=r"`X` to be a 2-d matrix"):
        theory.min_norm_near_interpolator(np.zeros(10), np.zeros(10), tau=0.1)
    with pytest.raises(ValueError, match="`kappa` to be a finite number >= 0"):
        theory.I_integral(-1.0, 2.0, 0.5)
    with pytest.raises(ValueError, match="`kappa` to be a finite number > 0"):
        theory.norm_constant(0.0, 2.0, 0.5)
    with pytest.raises(ValueError, match=r"`tau` to be a finite number > 0 and < 4.0 \(sigma2, the noise variance\)"):
        theory.predict(2.0, 0.5, 4.0, sigma2=4.0)
    with pytest.raises(ValueError, match=r"`noise_rate` to be a finite number >= 0\.0 and < 1\.0 but got 1\.0"):
        datasets.noisy_digits(1.0)


def test_cli_usage_errors_keep_one_line() -> None:
    from normguard.cli import UsageError, usage_errors

    with pytest.raises(UsageError, match=r"^data.npz: Expected argument `--top-k`"), usage_errors("data.npz: "):
        check_int("--top-k", -1, 0)
    with pytest.raises(TypeError), usage_errors():  # only a ValueError is the user's
        raise TypeError("a bug")
