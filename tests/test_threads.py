"""The CPU kernels' thread pool: results independent of the thread count, the setting
validated, safe across fork (scikit-learn's n_jobs forks worker processes), and idle
workers asleep."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import customml as cm
from customml import ops


@pytest.fixture
def restore_threads():
    before = cm.get_num_threads()
    yield
    cm.set_num_threads(before)


def _problem(batch=130, n_in=300, n_out=257):
    # 2 * 130 * 300 * 257 multiply-adds: above the threshold where GEMMs go parallel
    rng = np.random.default_rng(0)
    return (
        rng.standard_normal((batch, n_in)).astype(np.float32),
        rng.standard_normal((n_in, n_out)).astype(np.float32),
        rng.standard_normal(n_out).astype(np.float32),
        rng.standard_normal((batch, n_out)).astype(np.float32),
    )


# 130 rows: the tiled path; 11 rows (784 x 257): the small-m path, its columns split
# over the threads (2.2 M multiply-adds).
@pytest.mark.parametrize("shape", [(130, 300, 257), (11, 784, 257)], ids=["tiled", "small_m"])
def test_results_do_not_depend_on_the_thread_count(restore_threads, shape):
    x, w, b, dy = _problem(*shape)
    results = []
    for threads in (1, 2, 3):
        cm.set_num_threads(threads)
        assert cm.get_num_threads() == threads and cm.build_info()["num_threads"] == threads
        z = np.empty((x.shape[0], w.shape[1]), np.float32)
        y = ops.dense_forward(x, w, b, activation="gelu", preact_out=z)
        results.append([y, z, *ops.dense_backward(dy, x, w, y, z=z, activation="gelu")])
    for other in results[1:]:
        for a, c in zip(results[0], other):
            assert a.tobytes() == c.tobytes()


def test_training_is_bit_identical_across_thread_counts(restore_threads):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((256, 200)).astype(np.float32)
    y = rng.integers(0, 10, 256)
    weights = []
    for threads in (1, 2):
        cm.set_num_threads(threads)
        model = cm.Sequential([cm.layers.Dense(300, activation="relu"), cm.layers.Dense(10)], input_dim=200, seed=5)
        model.compile(optimizer="adam", loss="softmax_cross_entropy")
        model.fit(x, y, epochs=2, batch_size=128, verbose=0)
        weights.append(np.concatenate([a.ravel() for a in model.get_weights()]))
    assert weights[0].tobytes() == weights[1].tobytes()


def test_back_to_back_batch1_predicts_do_not_depend_on_the_thread_count(restore_threads):
    """One row against a large B (784 x 300: above 2^17 floats) is split over the workers
    when they are awake, which back-to-back calls make them, and runs inline otherwise;
    successive predicts also walk the column panels in alternating order. Every call,
    every thread count, the same bits."""
    rng = np.random.default_rng(3)
    model = cm.Sequential([cm.layers.Dense(300, activation="relu"), cm.layers.Dense(10)], input_dim=784, seed=2)
    model.compile(optimizer="adam", loss="softmax_cross_entropy")
    model.fit(rng.standard_normal((64, 784)).astype(np.float32), rng.integers(0, 10, 64), epochs=1, verbose=0)
    x1 = rng.standard_normal((1, 784)).astype(np.float32)
    w, b = (np.asarray(a) for a in model.layers[0].get_weights())
    outputs = {}
    for threads in (1, 2, 3):
        cm.set_num_threads(threads)
        outputs[threads] = {model.predict(x1).tobytes() for _ in range(300)}
        outputs[threads] |= {ops.dense_forward(x1, w, b, activation="relu").tobytes() + b"op" for _ in range(300)}
    assert len(outputs[1]) == 2  # one predict result, one op result
    assert outputs[1] == outputs[2] == outputs[3]


@pytest.mark.parametrize("bad", [0, -1, 1025])
def test_thread_count_is_validated(bad, restore_threads):
    with pytest.raises(ValueError, match="num_threads"):
        cm.set_num_threads(bad)


def test_invalid_environment_setting_fails_the_import_clearly():
    env = dict(os.environ, CUSTOMML_NUM_THREADS="many")
    proc = subprocess.run(
        [sys.executable, "-c", "import customml"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    assert "CUSTOMML_NUM_THREADS" in proc.stderr


def _child_forward(queue):
    x, w, b, _ = _problem()
    queue.put(ops.dense_forward(x, w, b).tobytes())


@pytest.mark.skipif(sys.platform == "win32", reason="fork is POSIX")
# Python 3.12+ warns that forking a multi-threaded process may deadlock; this test is
# the proof that customml's pool does not.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_forked_child_computes_without_the_parents_threads(restore_threads):
    cm.set_num_threads(2)
    x, w, b, _ = _problem()
    want = ops.dense_forward(x, w, b).tobytes()  # the pool's workers now exist in the parent
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_forward, args=(queue,))
    child.start()
    got = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert got == want


def test_large_optimizer_and_clip_calls_do_not_depend_on_the_thread_count(restore_threads):
    """Above 2^18 elements the flat kernels run in 2^16-element chunks over the pool; the
    chunks depend on the size alone, so every thread count gives the same bits (the norm
    too: per-chunk sums are added in chunk order)."""
    n = (1 << 19) + 12345
    rng = np.random.default_rng(7)
    p0, g = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    results = []
    for threads in (1, 2, 3):
        cm.set_num_threads(threads)
        p, m, v, vel = p0.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.float32)
        ops.adam_update(p, g, m, v, lr=1e-3, step=3, weight_decay=0.1, no_decay=[(1000, 200000)])
        q = p0.copy()
        ops.sgd_update(q, g, vel, lr=1e-2, momentum=0.9)
        clipped = g.copy()
        norm = ops.clip_by_global_norm(clipped, 1.0)
        results.append((p.tobytes(), m.tobytes(), v.tobytes(), q.tobytes(), vel.tobytes(), clipped.tobytes(), norm))
    assert results[0] == results[1] == results[2]
    # the chunked norm is the norm: float64 partial sums, so within a few float64 ulps
    assert results[0][-1] == pytest.approx(float(np.sqrt((g.astype(np.float64) ** 2).sum())), rel=1e-12)


def test_many_parallel_jobs_in_a_row(restore_threads):
    """Jobs back to back: a worker that wakes after its job was finished must never take
    part in the next one (a crash, once, before the pool waited for such stragglers)."""
    rng = np.random.default_rng(11)
    g = rng.standard_normal((1 << 18) + 5).astype(np.float32)
    x, w, b, _ = _problem()
    for threads in (2, 3):
        cm.set_num_threads(threads)
        norm = ops.clip_by_global_norm(g.copy(), 1e30)
        y = ops.dense_forward(x, w, b)
        for _ in range(1000):
            assert ops.clip_by_global_norm(g.copy(), 1e30) == norm
            assert ops.dense_forward(x, w, b).tobytes() == y.tobytes()


@pytest.mark.timing  # CPU time against wall time while idle
def test_workers_sleep_soon_after_a_job(restore_threads):
    """After a job a worker watches for the next one for at most 50 us (kSpinAfterJobNs),
    then sleeps: an idle pool must not keep a core busy against NumPy's and PyTorch's.
    The process's CPU time over 200 ms of idling after parallel GEMMs stays far below
    the 200 ms a worker that kept spinning would add (a generous bound: the machine's
    other threads, e.g. the interpreter's, add a little)."""
    cm.set_num_threads(2)
    x, w, b, _ = _problem()
    for _ in range(20):
        ops.dense_forward(x, w, b)
    time.sleep(0.01)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    time.sleep(0.2)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    assert cpu < 0.25 * wall, f"the process used {cpu * 1e3:.1f} ms of CPU in {wall * 1e3:.1f} ms of idling"
