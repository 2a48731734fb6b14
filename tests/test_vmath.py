"""The vectorized float32 math (cpp/cpu/vmath.h) against NumPy float64, at every ISA
level: the maximum error stated in vmath.h, on a grid of float32 bit patterns spanning
the whole range, and the special values exactly."""

from __future__ import annotations

import numpy as np
import pytest

import customml
import reference
from customml import _core
from support import ISA_ORDER

# Bounds from vmath.h, in ulps of the float32 result (measured maxima 1.27, 1.18, 0.81, 2.41,
# 1.003, 1.33, 2.60, 0.34 over every 64th float32; exp_nonpositive over every float32 in
# [-104, 0]; log1p_unit: see vmath.h): (ulps, extra absolute error per |x|).
BOUNDS = {
    "exp": (1.5, 0.0),
    "exp_nonpositive": (1.25, 0.0),  # only defined for x <= 0
    "log": (1.0, 0.0),
    "log1p": (2.5, 0.0),
    "log1p_unit": (1.5, 0.0),  # only defined on [0, 1]
    "tanh": (1.5, 0.0),
    "sigmoid": (3.0, 0.0),
    # gelu = 0.5 z (1 + tanh u): tanh's absolute error (<= 1.5 ulp <= 1.5 * 2^-24 below 1)
    # times 0.5 |z| is not small against the result where 1 + tanh u cancels.
    "gelu": (0.5, 2.0**-22),
}


def grid():
    # Every 65521st bit pattern (a prime stride, so every exponent and many mantissas),
    # about 65 k finite inputs of both signs, plus the domain edges.
    bits = np.arange(0, 2**32, 65521, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    edges = np.array(
        [
            0.0,
            -0.0,
            1e-45,
            -1e-45,
            1.1754942e-38,
            88.72,
            88.73,
            -87.33,
            -103.9,
            -104.0,
            0.625,
            -0.625,
            9.0,
            -9.0,
            -1.0 + 2**-24,
            2**-25,
            -(2**-25),
            3.4028235e38,
            -3.4028235e38,
        ],
        np.float32,
    )
    x = np.concatenate([x[np.isfinite(x)], edges])
    return x


@pytest.mark.parametrize("name", list(BOUNDS))
def test_vmath_max_error(isa, name):
    x = grid()
    if name == "exp_nonpositive":
        x = x[x <= 0]
    elif name == "log":
        x = x[x > 0]
    elif name == "log1p":
        x = x[x > -1]
    elif name == "log1p_unit":
        x = np.concatenate([x[(x >= 0) & (x <= 1)], np.linspace(0, 1, 100_001, dtype=np.float32)])
    y = _core._vmath(name, x, isa)
    assert y.dtype == np.float32 and y.shape == x.shape
    want = reference.vmath(name, x)
    ulps, per_x = BOUNDS[name]
    with np.errstate(all="ignore"):
        # A true result beyond float32's range must come back as the infinity it rounds to.
        exact = (y == want) | (y == want.astype(np.float32))
        ulp = np.spacing(np.minimum(np.abs(want), np.finfo(np.float32).max).astype(np.float32)).astype(np.float64)
        err = np.abs(y.astype(np.float64) - want)
        ok = exact | (err <= ulps * ulp + per_x * np.abs(x.astype(np.float64)))
    bad = np.flatnonzero(~ok)
    assert bad.size == 0, [(x[i], y[i], want[i]) for i in bad[:5]]


INF, NAN = np.inf, np.nan
SPECIALS = {
    "exp": [
        (-INF, 0.0),
        (INF, INF),
        (NAN, NAN),
        (89.0, INF),
        (1e30, INF),
        (-104.0, 0.0),
        (-1e30, 0.0),
        (0.0, 1.0),
        (-0.0, 1.0),
    ],
    "exp_nonpositive": [
        (-INF, 0.0),
        (NAN, NAN),
        (-104.0, 0.0),
        (-1e30, 0.0),
        (-3.4028235e38, 0.0),
        (0.0, 1.0),
        (-0.0, 1.0),
        (-1e-45, 1.0),
    ],
    "log": [(0.0, -INF), (-0.0, -INF), (-1.0, NAN), (-INF, NAN), (INF, INF), (NAN, NAN), (1.0, 0.0)],
    "log1p": [(-1.0, -INF), (0.0, 0.0), (-0.0, -0.0), (-2.0, NAN), (INF, INF), (NAN, NAN), (1e-30, 1e-30)],
    "tanh": [(0.0, 0.0), (-0.0, -0.0), (INF, 1.0), (-INF, -1.0), (9.1, 1.0), (-9.1, -1.0), (1e30, 1.0), (NAN, NAN)],
    "sigmoid": [(-INF, 0.0), (INF, 1.0), (0.0, 0.5), (-0.0, 0.5), (NAN, NAN), (1e30, 1.0), (-1e30, 0.0)],
    "gelu": [(0.0, 0.0), (INF, INF), (-INF, NAN), (NAN, NAN), (1e3, 1e3), (-20.0, -0.0)],
}


@pytest.mark.parametrize("name", list(SPECIALS))
def test_vmath_special_values(isa, name):
    cases = SPECIALS[name]
    # Every lane position and the tail path: the cases repeated to 37 elements.
    x = np.resize(np.array([c[0] for c in cases], np.float32), 37)
    want = np.resize(np.array([c[1] for c in cases], np.float32), 37)
    y = _core._vmath(name, x, isa)
    same = (y.view(np.uint32) == want.view(np.uint32)) | (np.isnan(y) & np.isnan(want))
    assert same.all(), [(x[i], y[i], want[i]) for i in np.flatnonzero(~same)[:5]]


def test_vmath_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"\[_vmath\] unknown function"):
        _core._vmath("erf", np.zeros(3, np.float32), "portable")


def test_vmath_rejects_a_level_the_cpu_lacks():
    detected = customml.build_info()["isa_detected"]
    if detected == ISA_ORDER[-1]:
        pytest.skip("this CPU has every level")
    above = ISA_ORDER[ISA_ORDER.index(detected) + 1]
    with pytest.raises(ValueError, match=rf"\[_vmath\] this CPU lacks {above}"):
        _core._vmath("exp", [0.0], above)
