"""Epoch time with frozen layers against a fully trainable model, interleaved (docs/performance.md)."""

import time

import numpy as np

import customml as cm

rng = np.random.default_rng(0)
x = rng.random((4096, 784), dtype=np.float32)
y = rng.integers(0, 10, 4096).astype(np.int32)
def make(frozen):
    m = cm.Sequential([cm.layers.Dense(512, activation="relu"), cm.layers.Dense(512, activation="relu"),
                       cm.layers.Dense(10)], input_dim=784, seed=0)
    m.compile(optimizer=cm.optimizers.AdamW(1e-3, weight_decay=1e-4), loss="softmax_cross_entropy")
    for i in frozen:
        m.layers[i].trainable = False
    return m
models = {"all trainable": make([]), "layer 0 frozen": make([0]), "layers 0-1 frozen": make([0, 1])}
times = {k: [] for k in models}
for _ in range(7):
    for k, m in models.items():  # interleaved, side by side
        t = time.perf_counter()
        m.fit(x, y, epochs=1, batch_size=256, verbose=0)
        times[k].append(time.perf_counter() - t)
base = np.median(times["all trainable"])
for k, v in times.items():
    print(f"{k:20s} median epoch {np.median(v)*1e3:7.1f} ms  ratio {np.median(v)/base:.2f}")
