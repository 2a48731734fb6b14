"""The int8 GEMM (gemm_s8 on pre-packed weights, float32 and requantized uint8 outputs) against
our float32 dense_forward and torch._int_mm (int8 x int8 -> int32, skipped where torch is not
importable), at the shapes of issue #6: a batch of 1024 through a 784 -> 256 layer, 1024^3,
and batch 1 through 784 -> 256. The AVX-512 VNNI and AVX2 kernels are measured side by side
(the ISA ceiling set per benchmark), each with the float32 GEMM of the same ceiling, so the
ratios say what each machine class gets. One thread throughout (bench/conftest.py).

Before timing, each implementation's integer sums are checked once against NumPy's int64
product, so no benchmark times a wrong kernel.

    python -m pytest bench/bench_int8.py --benchmark-json=/tmp/int8.json
"""

from __future__ import annotations

import numpy as np
import pytest

from customml import ops
from support_isa import isa_available, use_isa

try:
    import torch
except ImportError:
    torch = None

SHAPES = {"1024x784x256": (1024, 784, 256), "1024x1024x1024": (1024, 1024, 1024), "1x784x256": (1, 784, 256)}
# (implementation, ISA ceiling)
IMPLS = [
    ("s8_f32", "avx512_vnni"),
    ("s8_u8", "avx512_vnni"),
    ("f32_dense", "avx512_vnni"),
    ("s8_f32", "avx2"),
    ("f32_dense", "avx2"),
    pytest.param(("torch_int_mm", None), marks=pytest.mark.skipif(torch is None, reason="torch is not importable")),
]


def _inputs(m, k, n):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    w = rng.integers(-127, 128, (k, n)).astype(np.int8)
    return a, w


@pytest.mark.parametrize("impl", IMPLS, ids=lambda p: p[0] + (f"@{p[1]}" if p[1] else ""))
@pytest.mark.parametrize("shape", list(SHAPES))
def bench_gemm_s8(benchmark, shape, impl):
    name, isa = impl
    m, k, n = SHAPES[shape]
    if isa and not isa_available(isa):
        pytest.skip(f"this CPU lacks {isa}")
    benchmark.group = f"int8 {shape}"
    benchmark.extra_info.update(
        shape=shape, impl=name, isa=isa or "", macs=m * k * n, weight_bytes=k * n * (4 if name == "f32_dense" else 1)
    )
    a, w = _inputs(m, k, n)
    want = (a.astype(np.int64) - 128) @ w.astype(np.int64)
    with use_isa(isa):
        if name.startswith("s8_"):
            packed = ops.gemm_s8_pack(w)
            a_zero = np.array([128], np.int32)
            check = ops.gemm_s8(a, packed, None, a_zero, None, out_dtype="int32")
            np.testing.assert_array_equal(check, want)
            a_scale, w_scale = np.array([0.02], np.float32), np.full(n, 0.01, np.float32)
            bias = np.zeros(n, np.float32)
            if name == "s8_f32":
                out = np.empty((m, n), np.float32)
                fn = lambda: ops.gemm_s8(a, packed, a_scale, a_zero, w_scale, bias=bias, activation="relu", out=out)
            else:
                out = np.empty((m, n), np.uint8)
                fn = lambda: ops.gemm_s8(
                    a,
                    packed,
                    a_scale,
                    a_zero,
                    w_scale,
                    bias=bias,
                    activation="relu",
                    out_scale=0.05,
                    out_zero=0,
                    out=out,
                )
        elif name == "f32_dense":
            x = a.astype(np.float32) - 128
            wf = w.astype(np.float32)
            bias = np.zeros(n, np.float32)
            out = np.empty((m, n), np.float32)
            # exact in float32: every partial sum is an integer below 2^24
            np.testing.assert_array_equal(ops.dense_forward(x, wf, bias), want.astype(np.float32))
            fn = lambda: ops.dense_forward(x, wf, bias, activation="relu", out=out)
        else:
            A = torch.from_numpy((a.astype(np.int16) - 128).astype(np.int8))
            W = torch.from_numpy(w)
            np.testing.assert_array_equal(torch._int_mm(A, W).numpy(), want)
            fn = lambda: torch._int_mm(A, W)
        benchmark(fn)
