"""bench/gpu_check.sh where there is no GPU (it must say so, write a report that records
it and succeed, without building anything), and its report writer, bench/gpu_report.py,
on canned stage results: a pytest-benchmark JSON of bench/bench_cuda.py cut short by its
time limit, a benchmark that failed its agreement check, a skipped stage and a failed
end-to-end workload."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.sh"
WRITER = REPO / "bench" / "gpu_report.py"
DOWNSTREAM = ["build", "tests", "bench", "e2e", "sanitize"]


def run_check(out: Path, path_prefix: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable)
    if path_prefix:
        env["PATH"] = path_prefix + os.pathsep + env["PATH"]
    # Detection alone takes well under a second; a minute means it went on to build.
    return subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, env=env, timeout=60)


def assert_no_gpu_report(out: Path, proc: subprocess.CompletedProcess, why: str) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"no GPU: {why}" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith("GPU check: no_gpu")
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "no_gpu"
    assert report["facts"]["no_gpu"].startswith(why)
    assert [(s["stage"], s["status"]) for s in report["stages"]] == [("detect", "passed")] + [
        (name, "skipped") for name in DOWNSTREAM
    ]
    assert all(s["detail"].startswith("no GPU") for s in report["stages"][1:])
    # nothing was built or run: no stage left a log or a result
    assert not any((out / "logs").iterdir())
    assert not any((out / name).exists() for name in ("tests.xml", "bench_cuda.json", "end_to_end.json"))
    md = (out / "report.md").read_text()
    assert md.startswith("# GPU check: no_gpu\n")
    assert f"**No GPU**: {why}" in md
    for name in DOWNSTREAM:
        assert f"| {name} | skipped | - |" in md


@pytest.mark.skipif(
    shutil.which("nvidia-smi") is not None,
    reason="this machine has nvidia-smi, so the script would run the whole GPU check; "
    "test_a_driver_without_a_device_is_no_gpu covers the no-GPU path here",
)
def test_without_nvidia_smi_the_check_reports_no_gpu(tmp_path):
    out = tmp_path / "out"
    assert_no_gpu_report(out, run_check(out), "nvidia-smi not found")


def test_a_driver_without_a_device_is_no_gpu(tmp_path):
    # what nvidia-smi prints, and its status, where the driver is installed but not loaded
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\necho \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
        'Make sure that the latest NVIDIA driver is installed and running."\nexit 9\n'
    )
    fake.chmod(0o755)
    out = tmp_path / "out"
    assert_no_gpu_report(out, run_check(out, str(fake.parent)), "nvidia-smi failed: NVIDIA-SMI has failed because")


def test_a_second_run_replaces_the_first_report(tmp_path):
    out = tmp_path / "out"
    (out / "logs").mkdir(parents=True)
    (out / "bench_cuda.json").write_text("{}")
    (out / "logs" / "build.log").write_text("an earlier run's build")
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'No devices were found'\nexit 6\n")
    fake.chmod(0o755)
    proc = run_check(out, str(fake.parent))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (out / "bench_cuda.json").exists() and not (out / "logs" / "build.log").exists()
    assert json.loads((out / "report.json").read_text())["verdict"] == "no_gpu"


def test_usage_error_exits_2(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: bench/gpu_check.sh OUTDIR")


# --- the report writer on canned input --------------------------------------------------------

COPY = 2.8e12  # bytes/s
LIMITS = {"copy": COPY, "fp32": 60e12, "fp32_clock": 67e12, "tf32": 350e12, "bf16": 700e12, "fp16": 700e12}
LIMITS_MISSING = {"int8": "cuBLAS int8 GEMM failed: CUBLASError: CUBLAS_STATUS_NOT_SUPPORTED"}


def benchmark(case: str, impl: str, median: float, nbytes: int, flops: int, peak: str = "fp32") -> dict:
    """One entry of bench_cuda.py's pytest-benchmark JSON, as its _timed() fills it."""
    peak_rate = LIMITS.get(peak)
    floor = max(nbytes / COPY, flops / peak_rate if peak_rate else 0.0)
    return {
        "group": f"cuda {case}",
        "name": f"bench_x[{impl}-{case}]",
        "fullname": f"bench/bench_cuda.py::bench_x[{impl}]",
        "params": {"impl": impl, "case": f"UNSERIALIZABLE[Case(key='{case}')]"},
        "stats": {"median": median, "min": median * 0.9, "rounds": 40},
        "extra_info": {
            "achieved_gbs": nbytes / median / 1e9,
            "achieved_gflops": flops / median / 1e9,
            "floor_s": floor,
            "achieved_over_limit": floor / median,
            "peak": peak,
            "limits": LIMITS,
            "limits_missing": LIMITS_MISSING,
        },
    }


ADAM = ("adam_update 1e7", 280_000_000, 130_000_000)  # floor 100 us: memory
BF16 = ("dense_forward bf16 gemm 4096x4096x4096 (zero bias)", 201_342_976, 137_455_730_688)  # 196.4 us: compute
S8 = ("gemm_s8 int32 4096x4096x4096", 100_712_448, 137_438_953_472)  # int8 peak missing: 35.97 us, memory
SPARSE = ("sparse_dense_forward 90% relu 128x784->256", 694_276, 5_111_808)
QUANT = ("quantize int8 per column 4096x4096", 83_902_464, 67_108_864)
BENCHMARKS = [
    benchmark(*BF16[:1], "customml", 392.8e-6, *BF16[1:], peak="bf16"),
    benchmark(*BF16[:1], "cupy", 245e-6, *BF16[1:], peak="bf16"),
    benchmark(*ADAM[:1], "customml", 125e-6, *ADAM[1:]),
    benchmark(*ADAM[:1], "cupy", 500e-6, *ADAM[1:]),
    benchmark(*S8[:1], "customml", 71.94e-6, *S8[1:], peak="int8"),
    benchmark(*S8[:1], "cupy", 47.96e-6, *S8[1:], peak="int8"),
    benchmark(*SPARSE[:1], "customml", 8e-6, *SPARSE[1:]),
    benchmark(*SPARSE[:1], "customml_raw", 10e-6, *SPARSE[1:]),
    benchmark(*SPARSE[:1], "cupy", 24e-6, *SPARSE[1:]),
    benchmark(*QUANT[:1], "cupy", 60e-6, *QUANT[1:]),  # ours failed its check: CuPy's alone
]

BENCH_JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="12">
<testcase classname="bench.bench_cuda" name="bench_adam_update[adam_update 1e7-customml]" time="0.3" />
<testcase classname="bench.bench_cuda" name="bench_quantize[quantize int8 per column 4096x4096-customml]" time="0.2">
<failure message="AssertionError: quantize codes&#10;assert False">a traceback</failure></testcase>
<testcase classname="bench.bench_cuda" name="bench_dropout[dropout rate 0.1 1e7-cupy]" time="0.0">
<skipped type="pytest.skip" message="the skip's reason">skipped</skipped></testcase>
<testcase time="0.000" />
</testsuite></testsuites>"""

END_TO_END = {
    "device": "cuda",
    "model": "mlp 784-256-256-10",
    "batch": 128,
    "steps_per_epoch": 16,
    "customml_core": "x.so",
    "workloads": {
        "train": {
            "first_call_us": 51000.0,
            "p50_us": 1600.0,
            "p99_us": 2100.0,
            "calls": 200,
            "per_step_p50_us": 100.0,
            "loss_start": 2.3967,
            "loss_after": 2.2929,
        },
        "predict_b1": {"error": "AssertionError: customml"},
    },
}


def writer(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(WRITER), *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_report_writer_on_canned_results(tmp_path):
    out = str(tmp_path)
    writer("facts", out, "gpu=NVIDIA H100 80GB HBM3", "compute_cap=9.0", "cuda_arch=90-real")
    writer("stage", out, "detect", "passed", "100", "102.5", "30", "NVIDIA H100 80GB HBM3")
    writer("stage", out, "build", "passed", "102.5", "170", "110")
    writer("stage", out, "tests", "skipped", "0", "0", "75", "missing: hypothesis")
    writer("stage", out, "bench", "timeout", "170", "235.04", "65", "stopped at its 65 s limit")
    writer("stage", out, "e2e", "failed", "235", "242", "20", "exit status 1: predict_b1: {'error': ...}")
    (tmp_path / "bench_cuda.json").write_text(json.dumps({"benchmarks": BENCHMARKS}))
    (tmp_path / "bench_cuda.xml").write_text(BENCH_JUNIT)
    (tmp_path / "end_to_end.json").write_text(json.dumps(END_TO_END))
    printed = writer("write", out).stdout

    report = json.loads((tmp_path / "report.json").read_text())
    assert report["verdict"] == "failed"
    assert [(s["stage"], s["status"], s["seconds"]) for s in report["stages"]] == [
        ("detect", "passed", 2.5),
        ("build", "passed", 67.5),
        ("tests", "skipped", 0),
        ("bench", "timeout", 65.04),
        ("e2e", "failed", 7),
    ]
    assert report["tests"] is None
    assert report["limits"] == LIMITS and report["limits_missing"] == LIMITS_MISSING
    # floors.py's order of the cases, a row per customml variant
    rows = {(r["case"], r["impl"]): r for r in report["kernels"]}
    assert list(rows) == [
        (ADAM[0], "customml"),
        (BF16[0], "customml"),
        (S8[0], "customml"),
        (QUANT[0], "customml"),
        (SPARSE[0], "customml"),
        (SPARSE[0], "customml_raw"),
    ]
    adam = rows[ADAM[0], "customml"]
    assert adam["customml_s"] == 125e-6 and adam["cupy_s"] == 500e-6
    assert adam["cupy_over_customml"] == pytest.approx(4.0)
    assert adam["floor_s"] == pytest.approx(100e-6) and adam["bound"] == "memory"
    assert adam["customml_achieved_over_limit"] == pytest.approx(0.8)
    assert adam["cupy_achieved_over_limit"] == pytest.approx(0.2)
    assert rows[BF16[0], "customml"]["bound"] == "compute"
    assert rows[S8[0], "customml"]["bound"] == "memory: int8 peak not measured"
    assert rows[SPARSE[0], "customml_raw"]["cupy_over_customml"] == pytest.approx(2.4)
    quant = rows[QUANT[0], "customml"]
    assert quant["customml_s"] is None and quant["cupy_s"] == 60e-6 and quant["cupy_over_customml"] is None
    junit = report["bench_junit"]
    assert (junit["passed"], junit["failed"], junit["errors"], junit["skipped"]) == (1, 1, 0, 1)
    quantize_test = "bench.bench_cuda::bench_quantize[quantize int8 per column 4096x4096-customml]"
    assert junit["failures"] == [{"test": quantize_test, "kind": "failed", "message": "AssertionError: quantize codes"}]
    assert junit["skip_reasons"] == {"the skip's reason": 1}
    assert report["end_to_end"]["workloads"]["predict_b1"] == {"error": "AssertionError: customml"}

    md = (tmp_path / "report.md").read_text()
    for row in [
        "| detect | passed | 2.5 | 30 | NVIDIA H100 80GB HBM3 |",
        "| tests | skipped | - | 75 | missing: hypothesis |",
        "| bench | timeout | 65.0 | 65 | stopped at its 65 s limit |",
        "| e2e | failed | 7.0 | 20 | exit status 1: predict_b1: {'error': ...} |",
        "| adam_update 1e7 | 125.0 us | 500.0 us | 4.00x | 100.0 us (memory) | 2240 GB/s | 80% | 20% |",
        f"| {BF16[0]} | 392.8 us | 245.0 us | 0.62x | 196.4 us (compute) | 349.9 TFLOP/s | 50% | 80% |",
        f"| {S8[0]} | 71.9 us | 48.0 us | 0.67x | 36.0 us (memory: int8 peak not measured) | 1400 GB/s | 50% | 75% |",
        f"| {SPARSE[0]} (customml_raw) | 10.0 us | 24.0 us | 2.40x | 0.2 us (memory) | 69 GB/s | 2% | 1% |",
        f"| {QUANT[0]} | - | 60.0 us | - | 30.0 us (memory) | - | - | 50% |",
        "| train | 1.60 ms | 2.10 ms | 100.0 us | 200 | 51.00 ms | loss 2.3967 -> 2.2929, as NumPy's |",
        "| predict_b1 | - | - | - | - | - | AssertionError: customml |",
    ]:
        assert row in md, row
    assert "- gpu: NVIDIA H100 80GB HBM3\n- compute_cap: 9.0\n- cuda_arch: 90-real\n" in md
    assert "copy 2800 GB/s, fp32 60.0 TFLOP/s, tf32 350.0 TFLOP/s" in md and "fp32_clock" not in md
    assert "int8: not measured (cuBLAS int8 GEMM failed" in md
    assert "the table has the benchmarks that finished" in md
    assert f"- `{quantize_test}`: AssertionError: quantize codes" in md
    assert "Nothing recorded: the tests stage was skipped (missing: hypothesis)." in md
    assert "GPU check: failed" in printed.splitlines()[-1]


@pytest.fixture
def gpu_report(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "bench"))  # as when it runs as a script
    import gpu_report

    return gpu_report


@pytest.mark.parametrize(
    "statuses, facts, verdict",
    [
        (["passed"] * 6, [], "passed"),
        (["passed", "passed", "passed", "skipped", "passed", "passed"], [], "partial"),  # e.g. no CuPy
        (["passed"] * 5, [], "partial"),  # a stage never recorded: cut short
        (["passed", "passed", "failed", "skipped", "passed"], [], "failed"),
        (["passed", "timeout", "skipped", "skipped", "skipped"], [], "failed"),
        (["passed", "skipped", "skipped", "skipped", "skipped"], ["no_gpu=nvidia-smi not found"], "no_gpu"),
    ],
)
def test_verdict(gpu_report, tmp_path, statuses, facts, verdict):
    if facts:
        gpu_report.add_facts(tmp_path, facts)
    for name, status in zip(gpu_report.STAGES, statuses):
        gpu_report.add_stage(tmp_path, name, status, 0.0, 1.0, 10.0, "")
    assert gpu_report.collect(tmp_path)["verdict"] == verdict


def test_files_a_killed_stage_left_broken_are_reported_as_unreadable(gpu_report, tmp_path):
    gpu_report.add_stage(tmp_path, "bench", "timeout", 0.0, 65.0, 65.0, "stopped at its 65 s limit")
    (tmp_path / "bench_cuda.json").write_text("")  # opened, never written: pytest was killed
    (tmp_path / "tests.xml").write_text("<testsuites><testsuite><testcase")
    (tmp_path / "end_to_end.json").write_text('{"device": "cu')
    report = gpu_report.write(tmp_path)
    assert report["kernels"] == []
    assert report["bench_unreadable"].startswith("bench_cuda.json: ")
    assert report["tests"]["unreadable"].startswith("tests.xml: ")
    assert report["end_to_end"]["unreadable"].startswith("end_to_end.json: ")
    md = (tmp_path / "report.md").read_text()
    assert "The benchmark JSON is unreadable: bench_cuda.json: " in md
    assert "The JUnit file is unreadable: tests.xml: " in md
    assert "Unreadable: end_to_end.json: " in md


def test_a_stage_needs_a_known_status(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(WRITER), "stage", str(tmp_path), "build", "ok", "0", "1", "10"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "invalid choice: 'ok'" in proc.stderr
    assert not (tmp_path / "stages.jsonl").exists()
