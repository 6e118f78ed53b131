"""The referee's own rule, tested without the pipeline: ``pipeline.referee.compare``
decides every verdict, so its answers are checked here against hand-made arrays
whose right answer is known from numpy's ``allclose`` definition, written out.

Also: a source whose outputs are not finite on the parity inputs is refused with
exit 2 and a reason (NaN matches NaN in ``compare``, so such a parity proves nothing).
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.referee import compare, non_finite

ATOL = RTOL = 1e-4


def f32(*values):
    return np.array(values, dtype=np.float32)


# -- shapes and dtypes ---------------------------------------------------------

def test_identical_arrays_pass_with_zero_error():
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    c = compare("y", x, x.copy(), ATOL, RTOL)
    assert c.passed and c.max_abs_err == 0.0 and c.max_rel_err == 0.0 and c.shape == [3, 4]


def test_shape_mismatch_fails_even_when_broadcastable():
    c = compare("y", np.zeros((2, 3), np.float32), np.zeros((1, 3), np.float32), ATOL, RTOL)
    assert not c.passed and "shape" in c.reason and c.max_abs_err == float("inf")


def test_transposed_shape_fails():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert not compare("y", x, x.T.copy(), ATOL, RTOL).passed


def test_same_size_other_shape_fails():
    x = np.arange(6, dtype=np.float32)
    assert not compare("y", x.reshape(2, 3), x.reshape(3, 2), ATOL, RTOL).passed


@pytest.mark.parametrize("ref_dtype,got_dtype", [
    ("float32", "int32"), ("int32", "float32"), ("int64", "int32"), ("float32", "float64"),
    ("bool", "float32"), ("float32", "bool"), ("bool", "int64"),
])
def test_dtype_mismatch_fails_even_with_equal_values(ref_dtype, got_dtype):
    ref = np.array([0, 1, 1, 0], dtype=ref_dtype)
    c = compare("y", ref, ref.astype(got_dtype), ATOL, RTOL)
    assert not c.passed and "dtype" in c.reason, c


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8", "float16", "float32", "float64"])
def test_same_dtype_equal_values_pass(dtype):
    ref = np.array([0, 1, 2, 3], dtype=dtype)
    assert compare("y", ref, ref.copy(), ATOL, RTOL).passed


def test_integer_off_by_one_fails():
    ref = np.array([3, 1, 4], dtype=np.int64)
    c = compare("idx", ref, np.array([3, 1, 5], dtype=np.int64), ATOL, RTOL)
    assert not c.passed and c.max_abs_err == 1.0


def test_large_int64_compared_exactly():
    """Above 2**24 float32 cannot tell neighbours apart; the work dtype must be wide enough."""
    ref = np.array([2**40], dtype=np.int64)
    assert not compare("idx", ref, ref + 1, 0.0, 0.0).passed


def test_bool_counts_mismatches():
    ref = np.array([True, False, True])
    c = compare("m", ref, np.array([True, True, False]), ATOL, RTOL)
    assert not c.passed and c.max_abs_err == 2.0
    assert compare("m", ref, ref.copy(), ATOL, RTOL).passed


# -- empty tensors -------------------------------------------------------------

def test_empty_tensors_of_same_shape_pass():
    assert compare("y", np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32), ATOL, RTOL).passed


def test_empty_against_nonempty_fails():
    assert not compare("y", np.zeros((0, 3), np.float32), np.zeros((1, 3), np.float32), ATOL, RTOL).passed


def test_empty_with_other_dtype_fails():
    assert not compare("y", np.zeros((0,), np.float32), np.zeros((0,), np.int64), ATOL, RTOL).passed


# -- NaN and infinities ----------------------------------------------------------

def test_nan_on_one_side_fails():
    c = compare("y", f32(1, 2, 3), f32(1, np.nan, 3), ATOL, RTOL)
    assert not c.passed and c.max_abs_err == float("inf")
    c = compare("y", f32(1, np.nan, 3), f32(1, 2, 3), ATOL, RTOL)
    assert not c.passed


def test_nan_at_the_same_place_matches_elementwise():
    """Elementwise NaN = NaN; that such a reference proves nothing is ``non_finite``'s job."""
    c = compare("y", f32(1, np.nan, 3), f32(1, np.nan, 3), ATOL, RTOL)
    assert c.passed and c.max_abs_err == 0.0
    assert non_finite("y", f32(1, np.nan, 3)) is not None


def test_nan_at_other_places_fails():
    assert not compare("y", f32(np.nan, 2), f32(1, np.nan), ATOL, RTOL).passed


@pytest.mark.parametrize("got", [f32(1, -np.inf), f32(1, 5.0), f32(1, np.nan), f32(1, 3.4e38)])
def test_infinity_must_be_matched_exactly(got):
    assert not compare("y", f32(1, np.inf), got, ATOL, RTOL).passed


def test_same_infinity_passes_elementwise():
    assert compare("y", f32(1, -np.inf), f32(1, -np.inf), ATOL, RTOL).passed


def test_non_finite_reports_counts():
    why = non_finite("logits", f32(np.nan, np.inf, -np.inf, 1, np.nan))
    assert why == "output 'logits' has 2 NaN and 2 infinite values of 5"
    assert non_finite("logits", f32(1, 2)) is None
    assert non_finite("ids", np.array([1, 2], np.int64)) is None
    assert non_finite("empty", np.zeros((0,), np.float32)) is None


# -- tolerance at the boundary -----------------------------------------------------

def test_absolute_tolerance_boundary():
    """|got - ref| <= atol + rtol*|ref|: exactly on the line passes, one ulp beyond fails."""
    ref = np.zeros(4, np.float64)
    assert compare("y", ref, ref + 1e-4, 1e-4, 0.0).passed
    assert not compare("y", ref, ref + np.nextafter(1e-4, 1), 1e-4, 0.0).passed


def test_relative_tolerance_boundary():
    ref = np.full(3, 1024.0)  # powers of two: the boundary is exact in binary
    assert compare("y", ref, ref + 1.0, 0.0, 2.0**-10).passed
    assert not compare("y", ref, np.nextafter(ref + 1.0, 2048.0), 0.0, 2.0**-10).passed


def test_tolerance_is_relative_to_each_reference_element_not_the_output_scale():
    """A small element next to a large one gets only its own share of rtol."""
    ref = np.array([1000.0, 1e-3])
    got = np.array([1000.0, 1e-3 + 5e-4])
    c = compare("y", ref, got, 1e-4, 1e-4)
    assert not c.passed
    assert c.max_rel_err == pytest.approx(5e-4 / 1000.0)


def test_agrees_with_numpy_allclose_on_random_cases():
    """The rule is numpy's allclose (the README says so): check it on many random pairs."""
    rng = np.random.default_rng(7)
    for _ in range(300):
        ref = rng.standard_normal(rng.integers(1, 20)) * 10 ** rng.uniform(-3, 3)
        got = ref + rng.standard_normal(ref.shape) * 10 ** rng.uniform(-7, -2)
        atol, rtol = 10 ** rng.uniform(-6, -3), 10 ** rng.uniform(-6, -3)
        expected = bool(np.all(np.abs(got - ref) <= atol + rtol * np.abs(ref)))
        assert compare("y", ref, got, atol, rtol).passed == expected


def test_zero_tolerance_needs_bitwise_equality():
    ref = f32(1.0, 2.0)
    assert compare("y", ref, ref.copy(), 0.0, 0.0).passed
    assert not compare("y", ref, np.nextafter(ref, np.float32(3)), 0.0, 0.0).passed


def test_max_rel_err_is_error_over_output_scale():
    c = compare("y", f32(2.0, -4.0), f32(2.5, -4.0), ATOL, RTOL)
    assert c.max_abs_err == pytest.approx(0.5) and c.max_rel_err == pytest.approx(0.5 / 4.0)


def test_all_zero_reference_with_error_has_infinite_relative_error():
    c = compare("y", f32(0, 0), f32(0, 1), ATOL, RTOL)
    assert not c.passed and c.max_rel_err == float("inf")


# -- a source that gives NaN is refused, never a silent pass --------------------------

NAN_MODEL = '''
import torch
from torch import nn

INPUTS = {"x": (2, 4)}


class Net(nn.Module):
    def forward(self, x):
        return torch.sqrt(x - 10.0)  # the parity inputs are small: NaN everywhere


def build():
    return Net()
'''


def test_source_with_nan_outputs_exits_2_with_reason(tmp_path, cli):
    path = tmp_path / "nan_model.py"
    path.write_text(NAN_MODEL)
    out = tmp_path / "out"
    proc = cli("convert", f"{path}:build", "--to", "keras", "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("pipeline:")]
    assert len(lines) == 1 and "NaN" in lines[0] and "parity cannot prove" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
