"""apply_mask (the pruning mask the optimizers re-apply after every update) against
tests/reference.py on every device and ISA level; then malformed input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import reference
from customml import ops
from support import assert_same_bits, make_values, seeds


@given(n=st.one_of(st.sampled_from([1, 15, 16, 17, 31, 32, 33, 63, 64, 65]), st.integers(1, 300)), seed=seeds)
@example(n=(1 << 18) + 17, seed=1)  # several chunks of the thread pool
def test_apply_mask_matches_reference(isa, device, n, seed):
    rng = np.random.default_rng(seed)
    param = make_values(rng, (n,), "mixed")
    param[rng.random(n) < 0.05] = np.nan
    keep = rng.choice(np.array([0, 1, 2, 255], np.uint8), n)
    want = reference.apply_mask(param, keep)
    got = param.copy()
    assert ops.apply_mask(got, keep, device=device) is got
    assert_same_bits(got, want, "param")


def test_apply_mask_keeps_the_shape(device):
    param = np.arange(12, dtype=np.float32).reshape(3, 4)
    keep = (param % 3 != 0).astype(np.uint8)
    ops.apply_mask(param, keep, device=device)
    assert_same_bits(param, reference.apply_mask(np.arange(12, dtype=np.float32).reshape(3, 4), keep), "param")


# ---------------------------------------------------------------------------- bad input

MASK_BAD = {
    "param float64": (dict(param=np.ones(4)), TypeError, r"\[apply_mask\] param must be float32"),
    "keep bool": (dict(keep=np.ones(4, bool)), TypeError, r"keep must be uint8"),
    "keep shape": (dict(keep=np.ones(5, np.uint8)), ValueError, r"keep has shape \(5,\) but param has shape \(4,\)"),
    "param read-only": (dict(param=np.ones(4, np.float32)[::1].copy()), ValueError, r"param is read-only"),
    "param list": (dict(param=[1.0, 2.0, 3.0, 4.0]), TypeError, r"param must be a NumPy array"),
}


@pytest.mark.parametrize("case", list(MASK_BAD))
def test_apply_mask_rejects_bad_input(device, case):
    change, exc, match = MASK_BAD[case]
    kw = dict(param=np.ones(4, np.float32), keep=np.ones(4, np.uint8))
    kw.update(change)
    if case == "param read-only":
        kw["param"].setflags(write=False)
    with pytest.raises(exc, match=match):
        ops.apply_mask(kw["param"], kw["keep"], device=device)
