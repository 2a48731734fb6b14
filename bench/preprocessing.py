"""predict with and without a Normalization layer in front (the executor's per-feature
affine, not folded into the first Dense), interleaved (docs/performance.md)."""

import timeit

import numpy as np

import customml as cm

rng = np.random.default_rng(0)
x = rng.random((1024, 784), dtype=np.float32)
norm = cm.layers.Normalization()
norm.adapt(x)
plain = cm.Sequential([cm.layers.Dense(256, activation="relu"), cm.layers.Dense(10)], input_dim=784, seed=0)
normed = cm.Sequential([norm, cm.layers.Dense(256, activation="relu"), cm.layers.Dense(10)], input_dim=784, seed=0)
for batch, number in ((1, 2000), (1024, 20)):
    xb = x[:batch]
    out = np.empty((batch, 10), np.float32)
    res = {"plain": [], "normalization": []}
    for _ in range(5):
        for name, m in (("plain", plain), ("normalization", normed)):
            res[name].append(min(timeit.repeat(lambda: m.predict(xb, out=out), number=number, repeat=3)) / number)
    p, q = np.median(res["plain"]), np.median(res["normalization"])
    print(f"batch {batch:5d}: plain {p * 1e6:9.1f} us  with Normalization {q * 1e6:9.1f} us  ratio {q / p:.3f}")
