"""Data-parallel training across processes and machines on MPI (mpi4py, the ``mpi`` extra).

A script becomes data-parallel with one line, and runs under ``mpirun -np N python
train.py`` (or ``srun``); see docs/distributed.md::

    ctx = cm.distributed.init()   # rank, size; a no-op context outside MPI
    model.fit(x, y, batch_size=64)  # batch_size per rank, as in Horovod and PyTorch DDP

Every rank holds the same arrays (or, with ``init(local_data=True)``, each rank its own
part of them: see ``init``). Step ``s`` of an epoch takes the global batch of
``N * batch_size`` rows (a slice of the epoch's order, which every rank draws from the
same seed), and rank ``r`` its rows ``[r B, (r + 1) B)`` of it. Each rank computes the
gradient of its share weighted by its share of the global batch's row weights (sample
weight times class weight), one all-reduce sums the flat gradient buffer, and every rank
applies the sum: clipping, fp16's overflow check and the update see the global gradient,
so N ranks compute the model one process computes with batch ``N * batch_size`` (up to
the summation order), dropout masks included (drawn by global row). Initial weights,
optimizer state and the seed come from rank 0 when fit starts; metrics and the loss are
summed over the ranks, so every rank's History holds the global values (roc_auc from the
ranks' scores gathered on rank 0). ``predict`` here splits inference over the ranks.

MPI stays out of the compiled extension: this module is the only user of mpi4py.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import os
import sys
import time
import traceback
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from . import _checks, _core

__all__ = ["Context", "context", "init", "predict", "predict_proba"]

# Set by the launchers: Open MPI (mpirun), PMIx (Open MPI 5, srun --mpi=pmix), MPICH's
# Hydra and Slurm's PMI-2 (PMI_SIZE), MPICH (MPI_LOCALNRANKS).
_LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "MPI_LOCALNRANKS")


class Context:
    """This process's place in the job: ``rank`` in ``[0, size)``. Outside MPI (or under
    one process) ``size`` is 1 and fit runs as it always does, with no collective call."""

    def __init__(self, rank: int = 0, size: int = 1, comm: Any = None, local_data: bool = False):
        self.rank = rank
        self.size = size
        self.comm = comm
        # True: the arrays a rank gives fit, evaluate and predict are its own part of the
        # data (see init); False: every rank gives the same arrays.
        self.local_data = local_data
        # Local data: (weight, global rows, first row) of the step about to run.
        self._share: Tuple[float, int, int] = (1.0, 0, 0)
        # Seconds spent in the gradient all-reduce and the steps it ran for (bench/).
        self.allreduce_seconds = 0.0
        self.allreduce_steps = 0

    @property
    def active(self) -> bool:
        """True when more than one process trains together."""
        return self.size > 1

    def __repr__(self) -> str:
        return f"Context(rank={self.rank}, size={self.size})"

    def __enter__(self) -> "Context":
        return self

    def __exit__(self, *exc) -> None:
        return None

    # ---- collectives (callers check ``active`` first) ----
    def bcast(self, obj):
        """rank 0's ``obj`` on every rank (``obj`` itself in a single process)."""
        return obj if self.comm is None else self.comm.bcast(obj, root=0)

    def allreduce_sum(self, array: np.ndarray) -> np.ndarray:
        """The element-wise sum over the ranks of a contiguous array, in place."""
        from mpi4py import MPI

        self.comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)
        return array

    def abort(self, message: str) -> None:
        """Ends every process of the job (MPI_Abort): the others may be waiting in a
        collective this rank will never join."""
        sys.stderr.write(message)
        sys.stderr.flush()
        self.comm.Abort(1)


_context = Context()
_previous_excepthook = sys.excepthook


def context() -> Context:
    """The context ``init`` returned (a single-process one before ``init``)."""
    return _context


def _launched_by_mpi() -> bool:
    return any(v in os.environ for v in _LAUNCHER_VARIABLES)


def init(local_data: bool = False) -> Context:
    """Joins the MPI job this process was launched in (``mpirun``, ``srun``) and returns
    its Context; outside a launcher a single-process Context, without loading MPI.

    ``local_data=False`` (the default): every rank gives fit, evaluate and predict the same
    arrays, and each step's global batch is split over the ranks. ``local_data=True``: each
    rank gives its own part of the data (a rank-local shard, of any size >= 1 row). Step s
    then takes rows ``[s B, (s + 1) B)`` of each rank's shard (of its own order, with
    ``shuffle=True``: rank r permutes its rows with the stream of (seed, epoch, r)), a rank
    whose shard is used up taking part with none, until the longest is; the model is the one
    process computes on the ranks' batches laid end to end in rank order. evaluate sums the
    ranks' statistics of their own arrays, and ``predict`` concatenates their predictions in
    rank order. (``Context.local_data`` can also be set between fits.)

    An exception that reaches the top level on any rank ends the whole job (MPI_Abort)
    after printing it with the rank, so one rank's bad data or full disk never leaves
    the others waiting in an all-reduce."""
    global _context
    if _context.comm is not None or not _launched_by_mpi():
        _context.local_data = bool(local_data)
        return _context
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            "customml.distributed needs mpi4py over a system MPI: apt-get install openmpi-bin libopenmpi-dev "
            "(or MPICH), then pip install 'customml[mpi]'"
        ) from exc
    comm = MPI.COMM_WORLD
    launched = int(os.environ.get("OMPI_COMM_WORLD_SIZE") or os.environ.get("PMI_SIZE") or 0)
    if launched > 1 and comm.Get_size() == 1:
        # Each process would train a model of its own, silently.
        raise RuntimeError(
            f"[customml.distributed] the launcher started {launched} processes but MPI ({MPI.Get_library_version()[:40]!r}) "
            "sees one: mpi4py uses another MPI than the launcher's (docs/distributed.md, Install)"
        )
    _context = Context(comm.Get_rank(), comm.Get_size(), comm, bool(local_data))
    if _context.active:
        sys.excepthook = _abort_on_exception
    return _context


def _abort_on_exception(kind, value, tb) -> None:
    ctx = _context
    text = "".join(traceback.format_exception(kind, value, tb))
    ctx.abort(
        f"[customml.distributed] rank {ctx.rank} of {ctx.size} failed, aborting the job: {kind.__name__}: {value}\n"
        + text
    )


# ---------------------------------------------------------------------------------------
# What fit calls (python/customml/_trainer.py); each is the identity outside a job.
# ---------------------------------------------------------------------------------------

# Callbacks that write files act on rank 0 only; the others (EarlyStopping,
# LearningRateScheduler, a user's) run on every rank, on the same global logs, so they
# take the same decisions.
_RANK0_ONLY = ("ModelCheckpoint", "CSVLogger")


def _fingerprint(model, fit_args: Dict[str, Any]) -> str:
    """What must agree across the ranks for them to train one model: the architecture
    (without names, which count the layers a process built), the loss, the optimizer, the
    metrics, the pruning masks and fit's arguments, the data's digest among them."""
    from ._model_description import _architecture

    arch = _architecture(model)
    arch.pop("seed", None)
    arch.pop("name", None)
    for layer in arch.get("layers", []):
        layer.pop("name", None)
    masks = hashlib.sha256()
    for i in sorted(model._masks):
        masks.update(str(i).encode() + np.ascontiguousarray(model._masks[i]).tobytes())
    return json.dumps(
        {
            "architecture": arch,
            "loss": model._loss._config(),
            "optimizer": model._optimizer._config(),
            "metrics": list(model._metrics),
            "precision": getattr(model, "_precision", None),
            "masks": masks.hexdigest(),
            "fit": fit_args,
        },
        sort_keys=True,
        default=repr,
    )


def digest(*arrays: Optional[np.ndarray]) -> str:
    """A digest of the arrays' shapes and of about 1024 rows of each, spread evenly: every
    rank must hold the same data, and hashing all of it would cost a pass over it per fit."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        h.update(repr(a.shape).encode())
        h.update(np.ascontiguousarray(a[:: max(1, a.shape[0] // 1024)]).tobytes())
    return h.hexdigest()


def begin_fit(model, seed: int, fit_args: Dict[str, Any], callbacks: List, verbose: int) -> Tuple[int, List, int]:
    """At fit's start, before the first step: refuses ranks whose model, optimizer or
    fit arguments differ from rank 0's, then gives every rank rank 0's seed, weights,
    optimizer state, step count and epoch counter. Returns the seed, the callbacks this
    rank runs and its verbosity (rank 0's)."""
    ctx = _context
    if not ctx.active:
        return seed, callbacks, verbose
    if ctx.local_data:  # the ranks' arrays differ by design
        fit_args = {k: v for k, v in fit_args.items() if k not in ("n", "data")}
        fit_args["local_data"] = True
    mine = _fingerprint(model, fit_args)
    prints = ctx.comm.allgather(mine)
    differ = [r for r, p in enumerate(prints) if p != prints[0]]
    if differ:
        a, b = json.loads(prints[0]), json.loads(prints[differ[0]])
        keys = sorted(k for k in a if a[k] != b.get(k))
        hint = (
            " (with different arrays on each rank, each its own part of the data: cm.distributed.init(local_data=True))"
            if "fit" in keys and a["fit"].get("data") != b["fit"].get("data")
            else ""
        )
        raise ValueError(
            f"[fit] rank{'s' if len(differ) > 1 else ''} {differ} of {ctx.size} differ from rank 0 in "
            f"{', '.join(keys)}: every rank must build, compile and fit the same model "
            f"(rank 0: {json.dumps({k: a[k] for k in keys}, sort_keys=True)[:400]}; "
            f"rank {differ[0]}: {json.dumps({k: b[k] for k in keys}, sort_keys=True)[:400]}){hint}"
        )
    net = model._net
    seed, step, epoch, scale = ctx.bcast((seed, net.step, model._epoch, (net.loss_scale, net.loss_scale_good_steps)))
    params = net.read_params(0, net.num_params)
    ctx.comm.Bcast(params, root=0)
    net.write_params(0, params)
    for slot in range(net.state_slots):
        state = net.read_state(slot, 0, net.num_params)
        ctx.comm.Bcast(state, root=0)
        net.write_state(slot, 0, state)
    net.set_step(step)
    net.set_loss_scale(*scale)
    model._epoch = epoch
    if ctx.rank != 0:
        callbacks = [cb for cb in callbacks if type(cb).__name__ not in _RANK0_ONLY]
        verbose = 0
    return seed, callbacks, verbose


def global_batch_size(batch_size: int) -> int:
    """Rows per step over all ranks."""
    return batch_size * _context.size


def local_batches(model, x, y, sample_weight, batch_size: int, shuffle: bool, seed: int):
    """fit's steps per epoch and its epoch_batches under ``local_data``: each step yields
    this rank's rows of its own arrays (maybe none) after setting the step's share: the
    rank's fraction of the step's row weights, the step's rows over all ranks and the
    first of them that is this rank's (so dropout masks follow the rows laid end to end)."""
    ctx, b = _context, batch_size
    sizes = np.array(ctx.comm.allgather(int(x.shape[0])), np.int64)
    steps = int(-(-sizes.max() // b))
    counts = np.clip(sizes[None, :] - b * np.arange(steps)[:, None], 0, b)  # (steps, ranks): rows
    rows, first = counts.sum(axis=1), (np.cumsum(counts, axis=1) - counts)[:, ctx.rank]
    class_weights = getattr(model._loss, "class_weights", None)
    cw = None if not class_weights else np.asarray(class_weights, np.float64)

    def epoch_batches(epoch: int):
        order = np.arange(x.shape[0], dtype=np.int64)
        if shuffle:  # fit's stream of (seed, epoch), word 1 the rank
            np.random.Generator(np.random.Philox(key=seed, counter=[0, ctx.rank, 1, model._epoch])).shuffle(order)
        parts = [order[s * b : (s + 1) * b] for s in range(steps)]
        if sample_weight is None and cw is None:
            mine, total = counts[:, ctx.rank].astype(np.float64), rows.astype(np.float64)
        else:
            weights = np.ones(x.shape[0]) if sample_weight is None else sample_weight.astype(np.float64)
            if cw is not None:
                weights = weights * cw[y]
            mine = np.array([weights[p].sum() for p in parts])
            total = ctx.allreduce_sum(mine.copy())  # one message an epoch
        for s in range(steps):
            ctx._share = (float(mine[s] / total[s]) if total[s] > 0 else 0.0, int(rows[s]), int(first[s]))
            yield x, y, parts[s], sample_weight

    return steps, epoch_batches


def stop_training(value: bool) -> bool:
    """rank 0's decision to stop after an epoch, on every rank."""
    return bool(_context.bcast(value)) if _context.active else value


class _Transport:
    """Sums the flat gradient buffer over the ranks in place through MPI: a NumPy view of
    it on the cpu, a host copy elsewhere (cuda-emulated, and cuda without NCCL)."""

    def __init__(self, ctx: Context, net):
        self.ctx, self.net = ctx, net
        self.host = None if net.device == "cpu" else np.empty(net.num_params, np.float32)

    def __call__(self) -> None:
        t0 = time.perf_counter()
        if self.host is None:
            self.ctx.allreduce_sum(self.net.gradients())
        else:
            self.net.read_gradients(self.host)
            self.ctx.allreduce_sum(self.host)
            self.net.write_gradients(self.host)
        self.ctx.allreduce_seconds += time.perf_counter() - t0
        self.ctx.allreduce_steps += 1


class _NcclUniqueId(ctypes.Structure):
    _fields_ = [("internal", ctypes.c_char * 128)]  # NCCL_UNIQUE_ID_BYTES


_NCCL_FLOAT32, _NCCL_SUM = 7, 0  # ncclFloat32, ncclSum (nccl.h)


def _load_nccl() -> Optional[ctypes.CDLL]:
    """libnccl from the nvidia-nccl-cu13 wheel (the ``nccl`` extra), else the system's;
    None when neither is there."""
    candidates = []
    try:
        import nvidia.nccl

        candidates += [os.path.join(p, "lib", "libnccl.so.2") for p in nvidia.nccl.__path__]
    except ImportError:
        pass
    found = ctypes.util.find_library("nccl")
    if found:
        candidates.append(found)
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        lib.ncclGetErrorString.restype = ctypes.c_char_p
        return lib
    return None


def _nccl_check(lib: ctypes.CDLL, result: int, call: str) -> None:
    if result != 0:
        raise RuntimeError(f"[customml.distributed] {call} failed: {lib.ncclGetErrorString(result).decode()}")


def nccl_unique_id(ctx: Context, lib: ctypes.CDLL) -> _NcclUniqueId:
    """rank 0's ncclUniqueId on every rank, sent over MPI (the control channel)."""
    uid = _NcclUniqueId()
    if ctx.rank == 0:
        _nccl_check(lib, lib.ncclGetUniqueId(ctypes.byref(uid)), "ncclGetUniqueId")
    # bytes(uid), the raw 128 bytes: uid.internal, a char array, would stop at a zero byte.
    ctypes.memmove(ctypes.addressof(uid), ctx.bcast(bytes(uid) if ctx.rank == 0 else None), 128)
    return uid


class _Nccl:
    """On cuda: ncclAllReduce of the gradient buffer in place, enqueued on the executor's
    own stream, so it runs after the backward kernels and before the update with no host
    wait; one communicator per network, its unique id from rank 0 over MPI. One GPU per
    rank: the device each rank's network runs on (CUDA_VISIBLE_DEVICES per rank, or
    device="cuda:LOCAL_RANK")."""

    def __init__(self, ctx: Context, net, lib: ctypes.CDLL):
        self.ctx, self.net, self.lib = ctx, net, lib
        uid = nccl_unique_id(ctx, lib)
        self.comm = ctypes.c_void_p()
        _nccl_check(lib, lib.ncclCommInitRank(ctypes.byref(self.comm), ctx.size, uid, ctx.rank), "ncclCommInitRank")
        self.address = ctypes.c_void_p(net.gradient_address)
        self.count = ctypes.c_size_t(net.num_params)
        self.stream = ctypes.c_void_p(net.stream_handle)

    def __call__(self) -> None:
        # Enqueued, not waited for: allreduce_seconds counts the enqueue only.
        t0 = time.perf_counter()
        result = self.lib.ncclAllReduce(
            self.address, self.address, self.count, _NCCL_FLOAT32, _NCCL_SUM, self.comm, self.stream
        )
        _nccl_check(self.lib, result, "ncclAllReduce")
        self.ctx.allreduce_seconds += time.perf_counter() - t0
        self.ctx.allreduce_steps += 1

    def __del__(self) -> None:
        if getattr(self, "comm", None) and self.comm.value:
            self.lib.ncclCommDestroy(self.comm)


def _transport(ctx: Context, net):
    """NCCL on cuda when libnccl loads, else MPI through host memory."""
    if net.device.startswith("cuda") and net.device != "cuda-emulated":
        lib = _load_nccl()
        if lib is not None:
            return _Nccl(ctx, net, lib)
    return _Transport(ctx, net)


def train_step(model, batch_size: int):
    """The function fit calls per step with the global batch's rows (``index``): this
    rank's share, one all-reduce, the update. Outside a job, the executor's train_batch."""
    ctx, net = _context, model._net
    if not ctx.active:
        return lambda x, y, index, w: net.train_batch(x, y, index, w, model._teacher_logits)
    if model._teacher_logits is not None:
        raise ValueError("[distributed] customml.distill does not run data-parallel yet: distill in one process")
    class_weights = getattr(model._loss, "class_weights", None)
    cw = None if not class_weights else np.asarray(class_weights, np.float64)
    reduce = _transport(ctx, net)
    from mpi4py import MPI

    ends = np.empty(2, np.float32)

    def combine_range(lo: float, hi: float) -> Tuple[float, float]:
        # QAT's static input ranges (quantize.qat): the global batch's range of a layer's
        # input, the min of the ranks' lows and of their negated highs (exact) in one
        # all-reduce, so every rank moves its range as one process would.
        ends[0], ends[1] = lo, -hi
        ctx.comm.Allreduce(MPI.IN_PLACE, ends, op=MPI.MIN)
        return float(ends[0]), -float(ends[1])

    def local_step(x: np.ndarray, y: np.ndarray, index: np.ndarray, w: Optional[np.ndarray]) -> None:
        weight, rows, first = ctx._share
        net.compute_gradients(x, y, index, w, weight, rows, first, combine_range)
        reduce()
        net.apply_gradients(index.shape[0])

    def step(x: np.ndarray, y: np.ndarray, index: np.ndarray, w: Optional[np.ndarray]) -> None:
        g = index.shape[0]
        lo = min(ctx.rank * batch_size, g)
        hi = min(lo + batch_size, g)
        if w is None and cw is None:
            total, mine = float(g), float(hi - lo)
        else:
            rw = np.ones(g) if w is None else w[index].astype(np.float64)
            if cw is not None:
                rw = rw * cw[y[index]]
            total, mine = float(rw.sum()), float(rw[lo:hi].sum())
        net.compute_gradients(x, y, index[lo:hi], w, mine / total if total > 0 else 0.0, g, lo, combine_range)
        reduce()
        net.apply_gradients(hi - lo)

    return local_step if ctx.local_data else step


class _GlobalMetrics:
    """The executor's metric reads summed over the ranks (every rank calls them in the
    same order: at each epoch's end, or per batch for a callback that asks)."""

    def __init__(self, ctx: Context, net):
        self.ctx, self.net = ctx, net

    def metrics(self) -> Tuple[float, int, int]:
        loss_sum, correct, count = self.net.metrics()
        v = self.ctx.allreduce_sum(np.array([loss_sum, correct, count], np.float64))
        return float(v[0]), int(v[1]), int(v[2])

    def confusion_matrix(self) -> np.ndarray:
        return self.ctx.allreduce_sum(np.ascontiguousarray(self.net.confusion_matrix(), np.int64))

    def regression_stats(self) -> np.ndarray:
        # Sums of |e| and e^2 add over the ranks; the target moments are each about the
        # rank's own shift s_r (its first target), so each rank first moves its moments to
        # rank 0's shift s: sum (y - s) = S1 + n d, sum (y - s)^2 = S2 + 2 d S1 + n d^2
        # with d = s_r - s (r2 depends on them only through their variance, which no
        # shift changes; the sums are the single process's up to rounding).
        stats = np.array(self.net.regression_stats(), np.float64)
        n = float(self.net.metrics()[2])
        d = np.asarray(self.net.regression_shift(), np.float64) - self.ctx.bcast(self.net.regression_shift())
        s1 = stats[2].copy()
        stats[2] = s1 + n * d
        stats[3] = stats[3] + 2.0 * d * s1 + n * d * d
        return self.ctx.allreduce_sum(stats)

    def roc_auc(self) -> float:
        # The area ranks every row's score against every other's: rank 0 gathers the
        # ranks' (logits, label) rows (rows x outputs floats, once per read) and ranks them
        # with the executor's own code, whose area does not depend on the rows' order;
        # every rank gets its value.
        every = self.ctx.comm.gather(self.net.roc_scores(), root=0)
        area = None
        if every is not None:
            area = _core.roc_auc(np.concatenate([s for s, _ in every]), np.concatenate([y for _, y in every]))
        return float(self.ctx.bcast(area))


def metric_source(net):
    """What fit and evaluate read the metrics from: the executor, or the ranks' sums."""
    return _GlobalMetrics(_context, net) if _context.active else net


def _rows(ctx: Context, n: int, rank: int) -> Tuple[int, int]:
    """Rank ``rank``'s contiguous part [lo, hi) of n rows (sizes differ by one at most)."""
    return n * rank // ctx.size, n * (rank + 1) // ctx.size


def shard(x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """This rank's contiguous part of (x, y) for evaluation (the whole outside a job, and
    with local data, which is the rank's part already)."""
    ctx = _context
    if not ctx.active or ctx.local_data:
        return x, y
    lo, hi = _rows(ctx, x.shape[0], ctx.rank)
    return x[lo:hi], y[lo:hi]


def predict(model, x, batch_size: int = 1024, check_finite: bool = False) -> np.ndarray:
    """``model.predict(x)`` computed by all the ranks together: each rank predicts its
    contiguous part of the rows (as ``evaluate`` does) and **every rank gets the whole
    (samples, outputs) array**, gathered in row order (an all-gather, so that the code after
    it runs alike on every rank; rank 0 writes files). A collective: call it on every rank,
    with the same model and the same x (checked: a rank whose x or weights differ from rank
    0's is refused on every rank). With ``init(local_data=True)`` each rank predicts its
    own x, and every rank gets the ranks' predictions laid end to end in rank order.
    Outside a job, ``model.predict(x)``.

    ``model.predict`` itself stays per process (it is the serving path, safe from many
    threads, and a rank-0-only predict after fit must not wait for the other ranks)."""
    return _predict(model, x, batch_size, check_finite, "predict")


def predict_proba(model, x, batch_size: int = 1024, check_finite: bool = False) -> np.ndarray:
    """``model.predict_proba(x)`` computed by all the ranks together, as ``predict``."""
    return _predict(model, x, batch_size, check_finite, "predict_proba")


def _predict(model, x, batch_size: int, check_finite: bool, op: str) -> np.ndarray:
    ctx = _context
    local_predict = getattr(model, op)
    if not ctx.active:
        return local_predict(x, batch_size=batch_size, check_finite=check_finite)
    from mpi4py import MPI

    name = f"distributed.{op}"
    net = model._net
    if net is None:
        raise ValueError(f"[{name}] the model is not built: build it on every rank (input_dim=, or fit) first")
    x = _checks.as_features(x, "x", name)
    if check_finite:  # on the whole x, so the row named is x's own
        _checks.check_finite(x, "x", name, "pass check_finite=False to get NaN outputs for such rows")
    weights = hashlib.sha256(net.read_params(0, net.num_params).tobytes()).hexdigest()
    data = (x.shape[1], None) if ctx.local_data else (x.shape, digest(x))
    every = ctx.comm.allgather((data, weights, x.shape[0]))
    differ = [r for r, m in enumerate(every) if m[:2] != every[0][:2]]
    if differ:
        what = "x" if every[differ[0]][0] != every[0][0] else "weights"
        raise ValueError(
            f"[{name}] rank {differ[0]} of {ctx.size} has other {what} than rank 0: every rank must call it with "
            f"the same model and {'the same width of x' if ctx.local_data else 'the same x'}"
        )
    out = net.output_dim
    if ctx.local_data:
        parts = [(0, m[2]) for m in every]
        lo, hi = 0, x.shape[0]
    else:
        parts = [_rows(ctx, x.shape[0], r) for r in range(ctx.size)]
        lo, hi = parts[ctx.rank]
    # A rank whose part is empty (fewer rows than ranks) sends nothing.
    mine = local_predict(x[lo:hi], batch_size=batch_size) if hi > lo else np.empty((0, out), np.float32)
    counts = [(b - a) * out for a, b in parts]
    result = np.empty((sum(counts) // out, out), np.float32)
    ctx.comm.Allgatherv(np.ascontiguousarray(mine), [result, counts, MPI.FLOAT])
    return result
