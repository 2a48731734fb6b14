"""Every op family on device arrays (customml.Array), against the same op on "cpu" from NumPy
arrays: on "cuda-emulated" here (an Array there is host memory the emulated kernels run on)
and on "cuda" where a GPU exists. The rest of the suite hands the ops NumPy arrays, which
"cuda" refuses (it takes device memory only), so this file is what a GPU session runs to
check the CUDA kernels through the ops; without a GPU its "cuda" cases skip with the reason.

Tolerances: elementwise ops (dropout, SGD, Adam, masks, quantization codes, the affine
layer) compute the same float32 expression per element on every device, but a GPU compiler
may contract a multiply and an add into one FMA, which differs by at most one rounding of
the result: 2 ulps (rtol 2.4e-7) covers it, and the integer outputs must be equal. Products
and reductions (GEMMs, sparse products, the losses, the norm) add their terms in another
order on each device: float32 reassociation of K terms is bounded by K u sum|terms|, below
1e-5 of the output's scale for the K <= 100 used here, hence rtol / atol 2e-5 of the scale.
"""

from __future__ import annotations

import numpy as np
import pytest

import customml as cm
from customml import _core, ops

ARRAY_DEVICES = (["cuda-emulated"] if _core.build_info()["simt_emulation"] else []) + ["cuda"]


@pytest.fixture(params=ARRAY_DEVICES)
def array_device(request) -> str:
    if request.param == "cuda" and not _core.cuda_available():
        pytest.skip(f"the ops on 'cuda' device arrays not run: {_core.cuda_unavailable_reason()}")
    if request.param == "cuda-emulated" and not _core.build_info()["simt_emulation"]:
        pytest.skip("this build has no SIMT emulation")
    return request.param


def on(device, a):
    return cm.asarray(np.ascontiguousarray(a), device=device)


def nan_out(device, shape, dtype="float32"):
    """An output Array filled with NaN (integer outputs: a code no kernel writes here), so an
    element the op does not write fails the comparison."""
    fill = np.nan if np.dtype(dtype).kind == "f" else 0xAB
    return on(device, np.full(shape, fill, dtype=dtype))


def host(a) -> np.ndarray:
    return a.numpy() if isinstance(a, cm.Array) else np.asarray(a)


ELEMENTWISE = dict(rtol=2.4e-7, atol=0.0)


def close_sums(got, want, what):
    scale = max(float(np.max(np.abs(want))), 1e-30) if np.size(want) else 1.0
    np.testing.assert_allclose(host(got), want, rtol=2e-5, atol=2e-5 * scale, err_msg=what)


def values(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


@pytest.mark.parametrize("activation", ["identity", "relu", "gelu"])
def test_dense_forward_and_backward(array_device, activation):
    rng = np.random.default_rng(0)
    x, w, b = values(rng, (9, 37)), values(rng, (37, 21), 0.2), values(rng, (21,))
    y, z = ops.dense_forward(x, w, b, activation=activation), np.empty((9, 21), np.float32)
    ops.dense_forward(x, w, b, activation=activation, preact_out=z)
    d = array_device
    y_dev, z_dev = nan_out(d, (9, 21)), nan_out(d, (9, 21))
    assert (
        ops.dense_forward(on(d, x), on(d, w), on(d, b), activation=activation, out=y_dev, preact_out=z_dev, device=d)
        is y_dev
    )
    close_sums(y_dev, y, "y")
    close_sums(z_dev, z, "z")
    dy = values(rng, (9, 21))
    want = ops.dense_backward(dy, x, w, y, z=z, activation=activation)
    outs = [nan_out(d, s) for s in ((9, 37), (37, 21), (21,))]
    got = ops.dense_backward(
        on(d, dy),
        on(d, x),
        on(d, w),
        on(d, y),
        z=on(d, z),
        activation=activation,
        dx_out=outs[0],
        dweight_out=outs[1],
        dbias_out=outs[2],
        device=d,
    )
    for g, w_, name in zip(got, want, ("dx", "dweight", "dbias")):
        close_sums(g, w_, name)


def test_losses_and_metrics(array_device):
    rng = np.random.default_rng(1)
    d = array_device
    logits, labels = values(rng, (33, 10), 3.0), rng.integers(0, 10, 33).astype(np.int32)
    loss, grad = ops.softmax_cross_entropy(logits, labels, label_smoothing=0.1)
    g_dev = nan_out(d, (33, 10))
    loss_dev, got = ops.softmax_cross_entropy(
        on(d, logits), on(d, labels), label_smoothing=0.1, grad_out=g_dev, device=d
    )
    assert got is g_dev
    np.testing.assert_allclose(loss_dev, loss, rtol=2e-5)
    close_sums(g_dev, grad, "softmax-CE grad")
    targets = rng.random((33, 10)).astype(np.float32)
    for op in (ops.binary_cross_entropy_with_logits, ops.mse):
        loss, grad = op(logits, targets)
        g_dev = nan_out(d, (33, 10))
        loss_dev, _ = op(on(d, logits), on(d, targets), grad_out=g_dev, device=d)
        np.testing.assert_allclose(loss_dev, loss, rtol=2e-5, err_msg=op.__name__)
        close_sums(g_dev, grad, op.__name__)
    assert ops.count_correct(on(d, logits), on(d, labels), device=d) == ops.count_correct(logits, labels)


def test_dropout_and_optimizer_updates(array_device):
    rng = np.random.default_rng(2)
    d = array_device
    n = 1001  # odd: the float4 passes' scalar tails
    x = values(rng, (n,))
    out = nan_out(d, (n,))
    ops.dropout(on(d, x), rate=0.3, seed=7, stream=2, out=out, device=d)
    np.testing.assert_allclose(out.numpy(), ops.dropout(x, rate=0.3, seed=7, stream=2), **ELEMENTWISE)

    p, g, vel = values(rng, (n,)), values(rng, (n,)), values(rng, (n,))
    arrays = [on(d, a) for a in (p, g, vel)]
    kw = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01, no_decay=[(5, 17), (400, 401)])
    ops.sgd_update(p, g, vel, **kw)
    ops.sgd_update(*arrays, device=d, **kw)
    np.testing.assert_allclose(arrays[0].numpy(), p, **ELEMENTWISE)
    np.testing.assert_allclose(arrays[2].numpy(), vel, **ELEMENTWISE)

    p, g, m = values(rng, (n,)), values(rng, (n,)), values(rng, (n,))
    v = np.abs(values(rng, (n,)))
    arrays = [on(d, a) for a in (p, g, m, v)]
    kw = dict(lr=1e-2, step=3, weight_decay=0.1, decoupled=True, no_decay=[(5, 17)])
    ops.adam_update(p, g, m, v, **kw)
    ops.adam_update(*arrays, device=d, **kw)
    for a, want, name in zip(arrays, (p, g, m, v), ("param", "grad", "m", "v")):
        np.testing.assert_allclose(a.numpy(), want, err_msg=name, **ELEMENTWISE)

    g = values(rng, (n,))
    g_dev = on(d, g)
    norm = ops.clip_by_global_norm(g, 1.0)
    np.testing.assert_allclose(ops.clip_by_global_norm(g_dev, 1.0, device=d), norm, rtol=2e-5)
    close_sums(g_dev, g, "clipped grad")


def test_quantized_product(array_device):
    rng = np.random.default_rng(3)
    d = array_device
    x = values(rng, (7, 40))
    scale, zero = np.array([0.02], np.float32), np.array([128], np.int32)
    q = ops.quantize(x, scale, zero)
    q_dev = nan_out(d, (7, 40), "uint8")
    ops.quantize(on(d, x), on(d, scale), on(d, zero), out=q_dev, device=d)
    np.testing.assert_array_equal(q_dev.numpy(), q)
    back = nan_out(d, (7, 40))
    ops.dequantize(q_dev, on(d, scale), on(d, zero), out=back, device=d)
    np.testing.assert_allclose(back.numpy(), ops.dequantize(q, scale, zero), **ELEMENTWISE)
    w = rng.integers(-127, 128, (40, 19)).astype(np.int8)
    w_scale = (rng.random(19) * 0.01 + 1e-3).astype(np.float32)
    bias = values(rng, (19,))
    want = ops.gemm_s8(q, ops.gemm_s8_pack(w), scale, zero, w_scale, bias=bias, activation="relu")
    y = nan_out(d, (7, 19))
    ops.gemm_s8(
        q_dev,
        ops.gemm_s8_pack(on(d, w), device=d),
        on(d, scale),
        on(d, zero),
        on(d, w_scale),
        bias=on(d, bias),
        activation="relu",
        out=y,
        device=d,
    )
    close_sums(y, want, "gemm_s8")  # the int32 sums are exact; the float epilogue may contract


def test_sparse_products_and_mask(array_device):
    rng = np.random.default_rng(4)
    d = array_device
    x, b = values(rng, (5, 64)), values(rng, (33,))
    w = values(rng, (64, 33)) * (rng.random((64, 33)) < 0.2)
    csr = ops.csr_from_dense(w)
    want = ops.sparse_dense_forward(x, *csr, b, activation="relu")
    y = nan_out(d, (5, 33))
    ops.sparse_dense_forward(on(d, x), *(on(d, a) for a in csr), on(d, b), activation="relu", out=y, device=d)
    close_sums(y, want, "CSR product")
    packed = ops.sparse_pack(*(on(d, a) for a in csr), 64, device=d)
    y2 = nan_out(d, (5, 33))
    ops.sparse_dense_forward(on(d, x), packed, bias=on(d, b), activation="relu", out=y2, device=d)
    close_sums(y2, want, "prepared CSR product")
    values_nm, index_nm = ops.nm_from_dense(w)
    want = ops.nm_dense_forward(x, values_nm, index_nm, b)
    y3 = nan_out(d, (5, 33))
    ops.nm_dense_forward(on(d, x), on(d, values_nm), on(d, index_nm), on(d, b), out=y3, device=d)
    close_sums(y3, want, "N:M product")
    param, keep = values(rng, (3, 50)), (rng.random((3, 50)) < 0.5).astype(np.uint8)
    p_dev = on(d, param)
    ops.apply_mask(p_dev, on(d, keep), device=d)
    np.testing.assert_array_equal(p_dev.numpy(), ops.apply_mask(param.copy(), keep))


def test_feature_affine(array_device):
    rng = np.random.default_rng(5)
    d = array_device
    x, scale, shift = values(rng, (6, 13)), values(rng, (13,)), values(rng, (13,))
    y = nan_out(d, (6, 13))
    ops.feature_affine(on(d, x), on(d, scale), on(d, shift), out=y, device=d)
    np.testing.assert_allclose(y.numpy(), ops.feature_affine(x, scale, shift), **ELEMENTWISE)


# ------------------------------------------------------- the suite's NumPy <-> device bridge


def test_the_bridge_moves_arrays_and_brings_results_back():
    # tests/device_arrays.py on cuda-emulated, as conftest.py applies it on cuda: in-place
    # updates and out= buffers come back into the NumPy arrays passed in (the same objects),
    # new results come back as NumPy, and the same array twice stays one device array, so
    # an aliasing check still fires.
    if not _core.build_info()["simt_emulation"]:
        pytest.skip("this build has no SIMT emulation")
    from device_arrays import bridged

    rng = np.random.default_rng(6)
    p, g = values(rng, (40,)), values(rng, (40,))
    want = p.copy()
    ops.sgd_update(want, g, lr=0.5)
    bridged(ops.sgd_update, "cuda-emulated")(p, g, lr=0.5, device="cuda-emulated")
    np.testing.assert_array_equal(p, want)
    x, w, b = values(rng, (3, 4)), values(rng, (4, 2)), values(rng, (2,))
    out = np.full((3, 2), np.nan, np.float32)
    dense = bridged(ops.dense_forward, "cuda-emulated")
    assert dense(x, w, b, out=out, device="cuda-emulated") is out
    close_sums(out, ops.dense_forward(x, w, b), "out")
    fresh = dense(x, w, b, device="cuda-emulated")
    assert isinstance(fresh, np.ndarray) and np.array_equal(fresh, out)
    loss, grad = bridged(ops.mse, "cuda-emulated")(x, x * 0, device="cuda-emulated")
    assert isinstance(grad, np.ndarray) and loss == ops.mse(x, x * 0)[0]
    with pytest.raises(ValueError, match="shares memory"):
        bridged(ops.sgd_update, "cuda-emulated")(p, p, lr=0.5, device="cuda-emulated")


def test_the_bridge_skips_host_only_layouts_on_cuda():
    # A strided view cannot become a device array; on cuda the test that passes one is
    # skipped with the reason rather than failing on "must be a GPU array".
    from device_arrays import bridged

    with pytest.raises(pytest.skip.Exception, match="not C-contiguous"):
        bridged(ops.sgd_update, "cuda")(np.ones(8, np.float32)[::2], np.ones(8, np.float32)[::2], lr=0.1, device="cuda")
