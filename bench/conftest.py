"""Benchmark-suite set-up: every library on one thread, the customml import, and the
machine facts (thread counts, OpenBLAS kernel, ISA variant, FMA peak, bandwidths, which
build) written into the pytest-benchmark JSON for bench/report.py."""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import threadpoolctl

import customml
import floors
from customml import ops

try:
    import torch
except ImportError:
    torch = None

# Every library runs on one thread, customml included, so the comparisons are like for like. The limit is held for the
# whole session (threadpoolctl caps OpenBLAS / OpenMP / MKL pools at run time; NumPy's
# ufuncs are single-threaded already).
_THREAD_LIMITS = threadpoolctl.threadpool_limits(limits=1)
# customml's pool too (CUSTOMML_BENCH_THREADS for a multi-threaded comparison, with the
# other libraries' limits raised to match by hand).
customml.set_num_threads(int(os.environ.get("CUSTOMML_BENCH_THREADS", "1")))
if torch is not None:
    torch.set_num_threads(1)

_ENV_VARS = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUSTOMML_ISA",
)


def _provenance() -> dict:
    """Which build was measured: the installed _core's hash and time, and the source
    tree's commit (the package is reinstalled while others work, so say which)."""
    core = Path(customml._core.__file__)
    out = {
        "core_file": str(core),
        "core_sha256": hashlib.sha256(core.read_bytes()).hexdigest(),
        "core_mtime": datetime.datetime.fromtimestamp(core.stat().st_mtime, datetime.timezone.utc).isoformat(),
        "ops_file": ops.__file__,
    }
    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        out["source_head"] = head
        out["source_dirty"] = bool(dirty)
    except (OSError, subprocess.SubprocessError):
        out["source_head"] = None
    return out


_PROVENANCE = _provenance()


def _environment() -> dict:
    info = customml._core.build_info()
    env = {
        "customml_build_info": info,
        "provenance": _PROVENANCE,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "threadpool_info": threadpoolctl.threadpool_info(),
        "env": {k: os.environ.get(k) for k in _ENV_VARS},
        "torch": None if torch is None else {"version": torch.__version__, "num_threads": torch.get_num_threads()},
    }
    return env


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["customml_bench"] = _environment()


def pytest_benchmark_update_json(config, benchmarks, output_json):
    import fma_peak

    peak, source = fma_peak.peak_flops_1core()
    env = _environment()  # again at the end: the thread limits are in force here
    env.update(
        peak_flops_1core=peak,
        peak_source=source,
        fma_peak_measured={k: v for k, v in fma_peak.measure().items()},
        quoted_peak_flops_1core=floors.QUOTED_PEAK_FLOPS_1CORE,
        bandwidth={f"{p}:{n}": v for (p, n), v in sorted(floors.BANDWIDTHS.items())},
    )
    output_json["customml_bench"] = env


def pytest_report_header(config):
    info = customml._core.build_info()
    blas = "; ".join(
        f"{d.get('internal_api')} {d.get('version')} {d.get('architecture')} x{d.get('num_threads')}"
        for d in threadpoolctl.threadpool_info()
    )
    env = " ".join(f"{k}={os.environ[k]}" for k in _ENV_VARS if k in os.environ) or "none set"
    torch_line = "not importable" if torch is None else f"{torch.__version__}, {torch.get_num_threads()} thread(s)"
    prov = _PROVENANCE
    return [
        f"customml {info['version']}: isa {info['isa']} (detected {info['isa_detected']}), "
        f"gemm {info['kernels']['gemm']}, {info['num_threads']} thread(s); ops from {ops.__file__}",
        f"customml _core sha256 {prov['core_sha256'][:16]}, installed {prov['core_mtime']}; "
        f"source HEAD {prov.get('source_head')}{' (dirty)' if prov.get('source_dirty') else ''}",
        f"numpy {np.__version__}: {blas}",
        f"torch: {torch_line}",
        f"thread/BLAS environment: {env}",
    ]
