"""Kernel initializers: glorot_uniform (the default), he_normal (Keras' truncated normal)
and zeros, checked by their bounds and moments within a few standard deviations of the
estimates."""

from __future__ import annotations

import numpy as np
import pytest

import customml as cm
from support import U32


def test_glorot_uniform_bounds_and_moments():
    fan_in, fan_out = 300, 200
    model = cm.Sequential([cm.layers.Dense(fan_out)], input_dim=fan_in, seed=11)
    kernel, bias = model.get_weights()
    assert kernel.shape == (fan_in, fan_out) and kernel.dtype == np.float32
    assert bias.shape == (fan_out,) and bias.dtype == np.float32
    np.testing.assert_array_equal(bias, 0.0)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    k = kernel.astype(np.float64)
    # float32 rounding of a value inside [-limit, limit] can move it by half an ulp
    assert np.abs(k).max() <= limit * (1 + U32)
    # 60000 uniform draws: P(max |w| < 0.99 limit) = 0.99**60000, i.e. never
    assert np.abs(k).max() > 0.99 * limit
    n = k.size
    # mean: sd = limit / sqrt(3 n) ~ 0.0024 limit; 5 sigma
    assert abs(k.mean()) < 5 * limit / np.sqrt(3 * n)
    # second moment limit^2 / 3, sd of its estimate = limit^2 sqrt(4 / 45 / n); 5 sigma
    assert abs((k**2).mean() - limit**2 / 3) < 5 * limit**2 * np.sqrt(4 / 45 / n)


def test_he_normal_truncated_with_variance_2_over_fan_in():
    fan_in, fan_out = 400, 250
    model = cm.Sequential([cm.layers.Dense(fan_out, kernel_initializer="he_normal")], input_dim=fan_in, seed=12)
    kernel, bias = model.get_weights()
    assert kernel.shape == (fan_in, fan_out) and kernel.dtype == np.float32
    np.testing.assert_array_equal(bias, 0.0)
    k = kernel.astype(np.float64)
    n = k.size
    # As Keras: a unit normal truncated at +-2, scaled by sqrt(2 / fan_in) / 0.87962566
    # (the sd of the truncated unit normal), so the variance is 2 / fan_in.
    scale = np.sqrt(2.0 / fan_in) / 0.87962566103423978
    assert np.abs(k).max() <= 2.0 * scale * (1 + 2 * U32)
    # P(|z| in (1.96, 2] | |z| <= 2) = 0.0059: with 1e5 draws some land there, surely
    assert np.abs(k).max() > 1.96 * scale
    var = 2.0 / fan_in
    # For the truncated normal standardised to variance 1, E x^4 = 2.3656, so the sd of
    # the mean of x^2 over n draws is sqrt(1.3656 / n) = 0.0037 at n = 1e5; 5 sigma.
    assert abs((k**2).mean() / var - 1.0) < 5 * np.sqrt(1.3656 / n)
    assert abs(k.mean()) < 5 * np.sqrt(var / n)
    # not glorot: its variance 2 / (in + out) is 38 % smaller
    assert (k**2).mean() > 1.2 * 2.0 / (fan_in + fan_out)


def test_zeros_initializer_and_unknown_initializer():
    kernel, bias = cm.Sequential([cm.layers.Dense(4, kernel_initializer="zeros")], input_dim=3).get_weights()
    assert kernel.shape == (3, 4) and kernel.dtype == np.float32
    np.testing.assert_array_equal(kernel, 0.0)
    np.testing.assert_array_equal(bias, 0.0)
    with pytest.raises(ValueError, match="kernel_initializer"):
        cm.layers.Dense(4, kernel_initializer="orthogonal")
