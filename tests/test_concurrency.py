"""One model used from many threads (DESIGN decisions 10 and 12): concurrent predicts agree
with serial ones, predict alongside fit and alongside weight changes sees whole weight sets
only, and predict releases the GIL. (The thread pool inside a call: tests/test_threads.py.)"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import customml as cm


def test_concurrent_predict_matches_serial():
    rng = np.random.default_rng(19)
    model = cm.Sequential(
        [cm.layers.Dense(96, activation="relu"), cm.layers.Dense(48, activation="tanh"), cm.layers.Dense(10)],
        input_dim=40,
        seed=3,
    )
    batches = [rng.standard_normal((b, 40)).astype(np.float32) for b in (1, 3, 4, 5, 17, 130, 600)]
    serial = [model.predict(x) for x in batches]
    errors, results = [], {}
    barrier = threading.Barrier(8)

    def worker(k):
        try:
            barrier.wait()
            outs = []
            for it in range(30):
                j = (k + it) % len(batches)
                outs.append((j, model.predict(batches[j])))
            results[k] = outs
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 8
    for k, outs in results.items():
        for j, out in outs:
            np.testing.assert_array_equal(out, serial[j], err_msg=f"thread {k}, batch {j}")


def test_fit_and_predict_from_threads_at_once():
    """fit takes exclusive access and predict shared access: interleaving them from
    threads neither crashes nor yields a half-updated result (every prediction is
    finite and has the right shape), and training still converges to the same place as
    when run alone (fit is deterministic)."""
    rng = np.random.default_rng(23)
    x = rng.standard_normal((512, 20)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)

    def make():
        m = cm.Sequential([cm.layers.Dense(64, activation="relu"), cm.layers.Dense(2)], input_dim=20, seed=1)
        m.compile(optimizer=cm.optimizers.Adam(1e-2), loss="softmax_cross_entropy")
        return m

    alone = make()
    alone.fit(x, y, epochs=5, batch_size=32, verbose=0)
    model = make()
    errors, stop, counts = [], threading.Event(), []

    def reader():
        n = 0
        try:
            while not stop.is_set():
                out = model.predict(x[:7])
                assert out.shape == (7, 2) and np.isfinite(out).all()
                n += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        counts.append(n)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        model.fit(x, y, epochs=5, batch_size=32, verbose=0)
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors, errors
    assert sum(counts) > 0
    for a, b in zip(model.get_weights(), alone.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_predict_never_sees_a_half_written_weight_change():
    """write_params takes exclusive access: predictions from threads racing a writer that
    swaps between two weight sets each match one set exactly, and the writer is not
    starved by the readers' loop."""
    rng = np.random.default_rng(24)
    model = cm.Sequential([cm.layers.Dense(64, activation="relu"), cm.layers.Dense(8)], input_dim=16, seed=2)
    x = rng.standard_normal((3, 16)).astype(np.float32)
    net = model._net
    flat = [rng.standard_normal(net.num_params).astype(np.float32) for _ in range(2)]
    wants = []
    for f in flat:
        net.write_params(0, f)
        wants.append(model.predict(x))
    assert not np.array_equal(wants[0], wants[1])
    errors, stop = [], threading.Event()

    def reader():
        out = np.empty((3, 8), np.float32)
        try:
            while not stop.is_set():
                model.predict(x, out=out)
                assert any(np.array_equal(out, w) for w in wants), "a prediction mixed two weight sets"
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in readers:
        t.start()
    try:
        for i in range(300):
            net.write_params(0, flat[i % 2])
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors, errors


@pytest.mark.timing  # the ticker's gaps against the call's wall time
def test_predict_releases_the_gil():
    """While one thread is inside a long predict (one C++ call), another Python thread
    keeps running."""
    rng = np.random.default_rng(20)
    model = cm.Sequential([cm.layers.Dense(1024, activation="relu"), cm.layers.Dense(10)], input_dim=512, seed=0)
    # 60,000 rows (~63 GFLOP): at least 0.1 s even on two Zen 5 cores, where 20,000 took 0.06 s.
    x = rng.standard_normal((60000, 512)).astype(np.float32)
    model.predict(x[:10])
    stamps, stop = [], threading.Event()

    def ticker():
        while not stop.is_set():
            stamps.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        time.sleep(0.05)
        start = time.perf_counter()
        model.predict(x)
        end = time.perf_counter()
    finally:
        stop.set()
        t.join()
    inside = np.array([s for s in stamps if start <= s <= end])
    duration = end - start
    assert duration > 0.1, f"predict took only {duration:.3f}s, too short to tell"
    # GIL held: one gap as long as the C++ call; released: ticks every ~1-5 ms. Half the
    # call's duration leaves room for a busy 2-core machine.
    gaps = np.diff(np.concatenate([[start], inside, [end]]))
    assert gaps.max() < 0.5 * duration, f"no Python thread ran for {gaps.max():.3f}s of a {duration:.3f}s predict"
