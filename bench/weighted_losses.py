"""Loss ops with and without row_weights, interleaved (docs/performance.md)."""

import timeit

import numpy as np

from customml import ops

rng = np.random.default_rng(0)
for name, shape in (("binary_cross_entropy_with_logits", (256, 1)), ("mse", (256, 10)), ("mse", (256, 1)),
                    ("softmax_cross_entropy", (256, 10))):
    z = rng.normal(size=shape).astype(np.float32)
    t = (rng.integers(0, shape[1], shape[0]).astype(np.int32) if name == "softmax_cross_entropy"
         else rng.random(shape).astype(np.float32))
    w = rng.random(shape[0]).astype(np.float32)
    g = np.empty_like(z)
    f = getattr(ops, name)
    res = {}
    for _ in range(5):
        for k, kw in (("unweighted", {}), ("row_weights", {"row_weights": w})):
            res.setdefault(k, []).append(min(timeit.repeat(lambda: f(z, t, grad_out=g, **kw), number=2000, repeat=3)) / 2000)
    u, r = np.median(res["unweighted"]), np.median(res["row_weights"])
    print(f"{name:34s} {str(shape):10s} unweighted {u*1e6:6.2f} us  row_weights {r*1e6:6.2f} us  ratio {r/u:.2f}")
