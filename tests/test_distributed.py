"""Data-parallel training (customml.distributed, issue 18): N ranks launched by mpirun
with batch B against one process with batch N * B.

The criterion: the parameters after every run agree within 1e-5 of their largest
magnitude (the ranks' gradients are summed in another order than one process sums its
rows, a few float32 roundings per step, and 20-30 steps of SGD or Adam do not amplify
that past 1e-6 here), and all ranks hold bit-identical parameters after every step (they
apply one update to one all-reduced gradient). Launches: one mpirun per rank count runs
every scenario (tests/distributed_worker.py), so the import and MPI start-up are paid
twice, not per scenario. Skipped with the reason when mpirun or mpi4py is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import customml as cm
import distributed_worker as worker

HERE = Path(__file__).resolve().parent
# The ranks import the customml this process imported (the installed one in CI, the tree
# with its built module in development).
PYTHON_DIR = str(Path(cm.__file__).resolve().parent.parent)
B = 4

try:
    import mpi4py  # noqa: F401

    _no_mpi4py = None
except ImportError:
    _no_mpi4py = "mpi4py is not installed (pip install 'customml[mpi]')"
pytestmark = pytest.mark.skipif(
    shutil.which("mpirun") is None or _no_mpi4py is not None,
    reason=_no_mpi4py or "mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev)",
)


def mpirun(ranks: int, args, tmp: Path, timeout: float = 240.0) -> subprocess.CompletedProcess:
    """Open MPI refuses root without --allow-run-as-root and more ranks than cores
    without --oversubscribe; the ranks run one kernel thread each (they share 2 cores)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PYTHON_DIR, str(HERE)]), CUSTOMML_NUM_THREADS="1")
    env["CUSTOMML_TEST_DIR"] = str(tmp)
    env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(ranks), sys.executable, *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module", params=[2, 3], ids=["2ranks", "3ranks"])
def job(request, tmp_path_factory):
    ranks = request.param
    tmp = tmp_path_factory.mktemp(f"mpi{ranks}")
    out = tmp / "out.npz"
    proc = mpirun(ranks, [HERE / "distributed_worker.py", out, B], tmp)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with np.load(out) as f:
        return ranks, dict(f.items()), tmp


def reference(name: str, ranks: int, tmp_path, monkeypatch):
    """The scenario in this process (no MPI) with the N-fold batch."""
    monkeypatch.setenv("CUSTOMML_TEST_DIR", str(tmp_path))
    if name == "checkpoint_resume":
        model, info = worker.checkpoint_straight(B * ranks)
        # The resumed fit ran the last two of the four epochs.
        info = {"epochs": 2, "history": {k: v[2:] for k, v in info["history"].items()}}
    elif name == "local_shards":
        model, info = worker.local_shards_reference(B, ranks)
    else:
        model, info = worker.SCENARIOS[name](B * ranks)
    return worker.weights(model), info


@pytest.mark.parametrize("name", list(worker.SCENARIOS))
def test_ranks_equal_one_process_with_the_global_batch(job, name, tmp_path, monkeypatch):
    ranks, got, _ = job
    want, info = reference(name, ranks, tmp_path, monkeypatch)
    assert bool(got[f"{name}/identical"]), f"{name}: the ranks' parameters differ after some step"
    if name not in ("qat", "qat_static"):
        assert int(got[f"{name}/steps"]) >= 20 or name in ("early_stopping", "checkpoint_resume")
    w = got[f"{name}/weights"]
    assert w.shape == want.shape
    err = np.max(np.abs(w - want))
    assert err <= 1e-5 * np.max(np.abs(want)), f"{name}: max |dp| = {err:.3g}, max |p| = {np.max(np.abs(want)):.3g}"
    assert int(got[f"{name}/epochs"]) == info["epochs"]
    for key, values in info["history"].items():
        mine = got[f"{name}/history/{key}"]
        if key in ("accuracy", "val_accuracy") or key.endswith("confusion_matrix"):
            np.testing.assert_array_equal(mine, np.asarray(values, np.float64), err_msg=f"{name}: {key}")
        else:
            np.testing.assert_allclose(mine, np.asarray(values, np.float64), rtol=1e-5, err_msg=f"{name}: {key}")


def test_distributed_predict_gathers_what_one_process_predicts(job):
    # Each rank predicts its part of the rows (25, 26, 26 of 77 under 3 ranks; of 2 rows,
    # one rank has none) and every rank gets the whole array. The same kernels compute each
    # row, but a part is a smaller batch than the whole, which the GEMM may block
    # differently: a few float32 roundings of the same sums, so 1e-6 of the largest output.
    _, got, _ = job
    want = worker.predictions(lambda model, x: model.predict(x), lambda model, x: model.predict_proba(x))
    want["local"] = want["logits"]  # the ranks' parts of x, end to end, are x
    for key, value in want.items():
        assert bool(got[f"predict/{key}/same_on_every_rank"]), key
        assert got[f"predict/{key}"].shape == value.shape, key
        np.testing.assert_allclose(got[f"predict/{key}"], value, rtol=0, atol=1e-6 * np.max(np.abs(value)), err_msg=key)


def test_file_callbacks_act_on_rank_0_only(job):
    ranks, _, tmp = job
    assert (tmp / f"log_{ranks}_0.csv").read_text().count("\n") == 3  # the header and two epochs
    assert [p.name for p in tmp.glob(f"log_{ranks}_*.csv")] == [f"log_{ranks}_0.csv"]


EMULATED = ("sgd_momentum", "dropout", "sample_weight", "qat_static")


@pytest.mark.skipif(not cm.build_info()["simt_emulation"], reason="a build without the SIMT emulation")
def test_a_device_without_host_memory_reduces_through_host_copies(tmp_path, monkeypatch):
    # cuda-emulated stands for a device whose memory the host cannot address (cuda
    # without NCCL takes this path): read_gradients, the MPI all-reduce, write_gradients.
    monkeypatch.setenv("CUSTOMML_TEST_DEVICE", "cuda-emulated")
    monkeypatch.setenv("CUSTOMML_TEST_SCENARIOS", ",".join(EMULATED))
    out = tmp_path / "out.npz"
    proc = mpirun(2, [HERE / "distributed_worker.py", out, B], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with np.load(out) as f:
        got = dict(f.items())
    for name in EMULATED:
        want, _ = worker.SCENARIOS[name](2 * B)
        want = worker.weights(want)
        assert bool(got[f"{name}/identical"]), name
        err = np.max(np.abs(got[f"{name}/weights"] - want))
        assert err <= 1e-5 * np.max(np.abs(want)), f"{name}: max |dp| = {err:.3g}"


NCCL_ID = """
import hashlib, customml as cm
from customml import distributed
ctx = cm.distributed.init()
uid = distributed.nccl_unique_id(ctx, distributed._load_nccl())
every = ctx.comm.allgather(bytes(uid))
assert len(set(every)) == 1 and any(every[0]), every
if ctx.rank == 0:  # one printer: two ranks' lines can interleave in mpirun's output
    print("same id on", len(every), "ranks")
"""


def test_the_nccl_unique_id_goes_from_rank_0_to_every_rank(tmp_path):
    # What can run without a GPU: loading libnccl and sharing rank 0's id over MPI (the
    # communicator and the all-reduce need GPUs: bench/gpu_check.sh).
    from customml import distributed

    if distributed._load_nccl() is None:
        pytest.skip("libnccl is not installed (pip install 'customml[nccl]')")
    script = tmp_path / "nccl_id.py"
    script.write_text(NCCL_ID)
    proc = mpirun(2, [script], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("same id on 2 ranks") == 1


def test_pruned_weights_stay_zero_under_ranks(job):
    _, got, _ = job
    model = worker._model(cm.optimizers.Adam(1e-2))
    cm.prune.magnitude(model, 0.5, measure=False)
    # The first kernel (6 x 16) is the first 96 parameters: the pruned half stays zero.
    pruned = model._masks[0].reshape(-1) == 0
    assert pruned.sum() == 48
    assert np.all(got["pruned/weights"][:96][pruned] == 0.0)


FAILING = """
import sys, numpy as np, customml as cm
ctx = cm.distributed.init()
x = np.zeros((40, 3), np.float32); y = np.zeros(40, np.int64)
if ctx.rank == 1 and sys.argv[1] == "raise":
    y[5] = 7  # bad data on rank 1 only: fit refuses it while rank 0 waits for it
if ctx.rank == 1 and sys.argv[1] == "data":
    x[0, 0] = 1.0  # rank 1 loaded other rows
model = cm.Sequential([cm.layers.Dense(3)], input_dim=3, seed=0)
lr = 0.1 if ctx.rank == 1 and sys.argv[1] == "mismatch" else 0.05
model.compile(optimizer=cm.optimizers.SGD(lr), loss="softmax_cross_entropy")
model.fit(x, y, epochs=50, batch_size=4, verbose=0)
"""


def test_an_exception_on_one_rank_ends_the_job(tmp_path):
    script = tmp_path / "failing.py"
    script.write_text(FAILING)
    start = time.perf_counter()
    proc = mpirun(2, [script, "raise"], tmp_path, timeout=120)
    elapsed = time.perf_counter() - start
    assert proc.returncode != 0
    assert elapsed < 30, f"the job took {elapsed:.1f} s to end"
    text = proc.stdout + proc.stderr
    assert "rank 1 of 2" in text and "label 7 outside [0, 3)" in text, text


@pytest.mark.parametrize("case, what", [("mismatch", "optimizer"), ("data", "fit")])
def test_mismatched_optimizers_or_data_are_refused_at_the_first_step(tmp_path, case, what):
    script = tmp_path / "failing.py"
    script.write_text(FAILING)
    proc = mpirun(2, [script, case], tmp_path, timeout=120)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert f"differ from rank 0 in {what}" in text, text
    if case == "data":  # other arrays on a rank: the message says how to give each rank its own
        assert "init(local_data=True)" in text, text


def test_outside_mpi_init_is_a_single_process_context():
    ctx = cm.distributed.init()
    assert (ctx.rank, ctx.size, ctx.active) == (0, 1, False)
    assert cm.distributed.context() is ctx


def test_the_gathered_roc_rows_give_the_executors_area_in_any_order():
    # What rank 0 does with the ranks' rows: the executor's area of its own rows, whatever
    # their order (it sorts them), and the one-vs-rest form for three classes.
    model = worker._model(cm.optimizers.Adam(1e-2), metrics=["roc_auc"])
    x, y = worker._data()
    model.evaluate(x, y)
    logits, labels = model._net.roc_scores()
    assert logits.shape == (worker.N_ROWS, 3) and labels.dtype == np.int32
    order = np.random.default_rng(0).permutation(worker.N_ROWS)
    area = model._net.roc_auc()
    assert 0.0 < area < 1.0
    assert cm._core.roc_auc(logits, labels) == area
    assert cm._core.roc_auc(logits[order], labels[order]) == area
    with pytest.raises(ValueError, match="logits must be"):
        cm._core.roc_auc(logits[:, 0], labels)
