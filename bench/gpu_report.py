"""The report of bench/gpu_check.sh: what each stage did and why a stage was skipped, the
CUDA tests' counts, every kernel of bench/bench_cuda.py against CuPy and its floor, and
bench/end_to_end.py's training and batch-1 predict, as OUTDIR/report.json and
OUTDIR/report.md. It reports whatever the stages left in OUTDIR, so a run in which stages
failed, ran out of time or were skipped still gets a (partial) report that says so.

The script calls it for each step, so that nothing but this module reads or writes the
files it keeps in OUTDIR:

    python bench/gpu_report.py probe OUTDIR        # the Python modules the stages need
    python bench/gpu_report.py facts OUTDIR KEY=VALUE ...
    python bench/gpu_report.py stage OUTDIR NAME STATUS START END LIMIT [DETAIL]
    python bench/gpu_report.py write OUTDIR

Files in OUTDIR, each optional: facts.json (the detection's findings), stages.jsonl (one
line per stage), tests.xml (JUnit of the CUDA tests), bench_cuda.json (pytest-benchmark)
and bench_cuda.xml (its JUnit), end_to_end.json.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

# floors (bench/, on the path when this runs as a script), and through it NumPy, is
# imported only where a report with benchmark or end-to-end figures is written: recording
# a stage must work before the probe has said whether NumPy is there.

STATUSES = ("passed", "failed", "timeout", "skipped")
STAGES = ("detect", "build", "tests", "bench", "e2e", "sanitize")
# What the stages import besides customml (CuPy is probed apart: it must also see a device).
MODULES = ("numpy", "pybind11", "pytest", "hypothesis", "pytest_benchmark", "threadpoolctl")
FACT_ORDER = (
    "gpu",
    "driver",
    "memory",
    "compute_cap",
    "cuda_arch",
    "nvcc",
    "cupy",
    "python",
    "modules_missing",
    "source",
)
STATUS_WORDS = {"passed": "passed", "failed": "failed", "timeout": "ran out of time", "skipped": "was skipped"}
LISTED_FAILURES = 25  # in the Markdown; the JSON has them all (after a CUDA error, every later test may fail)


# --- recording, for the script -------------------------------------------------------------


def _read_facts(out: Path) -> dict:
    path = out / "facts.json"
    return json.loads(path.read_text()) if path.exists() else {}


def add_facts(out: Path, pairs: list) -> None:
    facts = _read_facts(out)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"gpu_report facts: expected KEY=VALUE, got {pair!r}")
        facts[key] = value
    (out / "facts.json").write_text(json.dumps(facts, indent=1))


def add_stage(out: Path, name: str, status: str, start: float, end: float, limit: float, detail: str) -> None:
    row = dict(stage=name, status=status, seconds=round(end - start, 2), limit_s=limit, detail=detail)
    with open(out / "stages.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def probe(out: Path) -> list:
    """Imports every module a stage needs, and CuPy with a device; records what is missing
    (with the error) as facts and returns the missing names (cupy among them when it
    cannot see a GPU)."""
    missing, why = [], []
    for module in MODULES:
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 -- any import failure means the stage cannot run
            missing.append(module)
            why.append(f"{module} ({type(e).__name__}: {e})")
    try:
        import cupy

        cupy_fact = f"{cupy.__version__}, {cupy.cuda.runtime.getDeviceCount()} device(s)"
    except Exception as e:  # noqa: BLE001 -- no CuPy, or a CuPy that sees no device
        missing.append("cupy")
        cupy_fact = f"not usable: {type(e).__name__}: {e}"
    add_facts(
        out,
        [
            f"cupy={cupy_fact}",
            f"modules_missing={'; '.join(why) or 'none'}",
            f"python={sys.executable} {sys.version.split()[0]}",
        ],
    )
    return missing


# --- reading what the stages left --------------------------------------------------------------


def read_stages(out: Path) -> list:
    path = out / "stages.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_junit(path: Path):
    """{"passed", "failed", "errors", "skipped": counts, "failures": [{test, message}],
    "skip_reasons": {reason: count}}; None when the file is absent, {"unreadable": why}
    when a killed run left it broken."""
    if not path.exists():
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        return {"unreadable": f"{path.name}: {e}"}
    counts = dict(passed=0, failed=0, errors=0, skipped=0)
    failures, skip_reasons = [], {}
    for case in root.iter("testcase"):
        if case.get("name") is None:  # the stub pytest writes for a test cut short by SIGINT
            continue
        test = f"{case.get('classname')}::{case.get('name')}"
        for tag, key in (("failure", "failed"), ("error", "errors"), ("skipped", "skipped")):
            node = case.find(tag)
            if node is not None:
                counts[key] += 1
                message = (node.get("message") or "").strip().splitlines()
                if tag == "skipped":
                    reason = message[0] if message else "no reason given"
                    skip_reasons[reason] = skip_reasons.get(reason, 0) + 1
                else:
                    failures.append(dict(test=test, kind=key, message=message[0] if message else ""))
                break
        else:
            counts["passed"] += 1
    return dict(counts, failures=failures, skip_reasons=skip_reasons)


def read_json(path: Path):
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        return {"unreadable": f"{path.name}: {e}"}


def kernel_rows(bench: dict) -> tuple:
    """(rows, limits, limits_missing) from bench_cuda's pytest-benchmark JSON: a row per
    case and customml variant, with CuPy's median of the same case beside it, the floor
    and what sets it, and each side's floor / median."""
    import floors

    known = {c.key: c for c in floors.CASES + floors.CUDA_CASES}
    order = {key: i for i, key in enumerate(known)}
    by_case, limits, missing = {}, {}, {}
    for b in bench.get("benchmarks", []):
        info = b.get("extra_info", {})
        case = b["group"].removeprefix("cuda ")
        by_case.setdefault(case, {})[b["params"]["impl"]] = dict(
            median_s=b["stats"]["median"],
            rounds=b["stats"]["rounds"],
            floor_s=info.get("floor_s"),
            achieved_over_limit=info.get("achieved_over_limit"),
            peak=info.get("peak"),
            achieved_gbs=info.get("achieved_gbs"),
            achieved_gflops=info.get("achieved_gflops"),
        )
        limits.update(info.get("limits", {}))
        missing.update(info.get("limits_missing", {}))
    rows = []
    for case in sorted(by_case, key=lambda k: order.get(k, len(order))):
        impls = by_case[case]
        cupy = impls.get("cupy", {})
        for impl in [i for i in impls if i != "cupy"] or ["customml"]:
            ours = impls.get(impl, {})
            any_side = ours or cupy
            peak = any_side.get("peak")
            rows.append(
                dict(
                    case=case,
                    impl=impl,
                    customml_s=ours.get("median_s"),
                    cupy_s=cupy.get("median_s"),
                    cupy_over_customml=(cupy["median_s"] / ours["median_s"] if ours and cupy else None),
                    floor_s=any_side.get("floor_s"),
                    peak=peak,
                    bound=_bound(known.get(case), limits, peak),
                    customml_achieved_over_limit=ours.get("achieved_over_limit"),
                    cupy_achieved_over_limit=cupy.get("achieved_over_limit"),
                    customml_gbs=ours.get("achieved_gbs"),
                    customml_gflops=ours.get("achieved_gflops"),
                    rounds=ours.get("rounds"),
                )
            )
    return rows, limits, missing


def _bound(case, limits: dict, peak):
    """What sets the floor, as bench_cuda computed it: "memory", "compute", or memory for
    want of the peak; None for a case floors.py does not know."""
    if case is None or "copy" not in limits:
        return None
    if not limits.get(peak):
        return f"memory: {peak} peak not measured"
    import floors

    return floors.floor_seconds(case.nbytes, case.flops, limits["copy"], limits[peak])[1]


def collect(out: Path) -> dict:
    facts = _read_facts(out)
    stages = read_stages(out)
    bench = read_json(out / "bench_cuda.json")
    kernels, limits, limits_missing = ([], {}, {}) if not bench or "unreadable" in bench else kernel_rows(bench)
    statuses = [s["status"] for s in stages]
    if any(s in ("failed", "timeout") for s in statuses):
        verdict = "failed"
    elif facts.get("no_gpu"):
        verdict = "no_gpu"
    elif statuses and all(s == "passed" for s in statuses) and {s["stage"] for s in stages} >= set(STAGES):
        verdict = "passed"
    else:
        verdict = "partial"
    return dict(
        verdict=verdict,
        facts=facts,
        stages=stages,
        tests=read_junit(out / "tests.xml"),
        bench_junit=read_junit(out / "bench_cuda.xml"),
        bench_unreadable=(bench or {}).get("unreadable"),
        limits=limits,
        limits_missing=limits_missing,
        kernels=kernels,
        end_to_end=read_json(out / "end_to_end.json"),
    )


# --- Markdown ----------------------------------------------------------------------------------


def _t(s) -> str:
    from floors import fmt_time

    return fmt_time(s)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _stage(report: dict, name: str):
    return next((s for s in report["stages"] if s["stage"] == name), None)


def _not_run(report: dict, name: str) -> str:
    s = _stage(report, name)
    if s is None:
        return f"Not run: the {name} stage never started."
    return f"Nothing recorded: the {name} stage {STATUS_WORDS[s['status']]}" + (
        f" ({s['detail']})." if s["detail"] else "."
    )


def _junit_md(junit, report: dict, stage: str) -> list:
    if junit is None:
        return [_not_run(report, stage)]
    if "unreadable" in junit:
        return [f"The JUnit file is unreadable: {junit['unreadable']}."]
    lines = [
        f"{junit['passed']} passed, {junit['failed']} failed, {junit['errors']} errors, {junit['skipped']} skipped."
    ]
    s = _stage(report, stage)
    if s is not None and s["status"] == "timeout":
        lines.append(f"The stage ran out of time ({s['detail']}): these counts are of the tests that finished.")
    lines += [f"- {f['kind']}: `{f['test']}`: {f['message']}" for f in junit["failures"][:LISTED_FAILURES]]
    if len(junit["failures"]) > LISTED_FAILURES:
        lines.append(f"- and {len(junit['failures']) - LISTED_FAILURES} more (report.json has them all)")
    if junit["skip_reasons"]:
        lines.append("")
        lines.append("Skipped, by reason:")
        for reason, n in sorted(junit["skip_reasons"].items(), key=lambda kv: -kv[1]):
            lines.append(f"- {n} x {reason}")
    return lines


def _limit_value(name: str, value: float) -> str:
    if name == "copy":
        return f"{value / 1e9:.0f} GB/s"
    return f"{value / 1e12:.1f} T{'OP' if name == 'int8' else 'FLOP'}/s"


def _achieved(r: dict) -> str:
    if r["customml_s"] is None:
        return "-"
    if r["bound"] == "compute":
        return f"{r['customml_gflops'] / 1e3:.1f} T{'OP' if r['peak'] == 'int8' else 'FLOP'}/s"
    return f"{r['customml_gbs']:.0f} GB/s"


def markdown(report: dict) -> str:
    facts = report["facts"]
    lines = [f"# GPU check: {report['verdict']}", ""]
    if facts.get("no_gpu"):
        lines += [f"**No GPU**: {facts['no_gpu']}. Nothing that needs one ran.", ""]
    lines += [f"- {key}: {facts[key]}" for key in FACT_ORDER if key in facts] + [""]

    lines += ["## Stages", "", "| stage | status | seconds | limit (s) | detail |", "|---|---|---:|---:|---|"]
    for s in report["stages"]:
        seconds = "-" if s["status"] == "skipped" else f"{s['seconds']:.1f}"
        lines.append(f"| {s['stage']} | {s['status']} | {seconds} | {s['limit_s']:g} | {_cell(s['detail'])} |")
    lines.append("")

    lines += [
        "## CUDA tests",
        "",
        '`pytest tests -k "cuda and not emulated" -m "not slow"`: the device '
        'fixture\'s "cuda" cases and the tests of real CUDA memory.',
        "",
    ]
    lines += _junit_md(report["tests"], report, "tests") + [""]

    lines += ["## Kernels against CuPy (bench/bench_cuda.py)", ""]
    if report["limits"]:
        lines += [
            "Limits measured on the device: "
            + ", ".join(f"{k} {_limit_value(k, v)}" for k, v in report["limits"].items() if k != "fp32_clock")
            + "."
            + "".join(f" {k}: not measured ({v})." for k, v in report["limits_missing"].items()),
            "",
        ]
    if report["kernels"]:
        lines += [
            "floor = max(bytes / copy bandwidth, FLOPs / the measured peak of the case's precision); "
            "achieved / limit = floor / median; CuPy / customml above 1: customml is faster.",
            "",
            "| case | customml | CuPy | CuPy / customml | floor (bound) | customml achieved | "
            "customml achieved / limit | CuPy achieved / limit |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in report["kernels"]:
            name = r["case"] if r["impl"] == "customml" else f"{r['case']} ({r['impl']})"
            ratio = "-" if r["cupy_over_customml"] is None else f"{r['cupy_over_customml']:.2f}x"
            floor = "-" if r["floor_s"] is None else f"{_t(r['floor_s'])} ({r['bound'] or r['peak']})"
            lines.append(
                f"| {_cell(name)} | {_t(r['customml_s'])} | {_t(r['cupy_s'])} | {ratio} | {floor} | "
                f"{_achieved(r)} | {_pct(r['customml_achieved_over_limit'])} | "
                f"{_pct(r['cupy_achieved_over_limit'])} |"
            )
    elif report["bench_unreadable"]:
        lines.append(f"The benchmark JSON is unreadable: {report['bench_unreadable']}.")
    else:
        lines.append(_not_run(report, "bench"))
    bench_stage = _stage(report, "bench")
    if report["kernels"] and bench_stage is not None and bench_stage["status"] == "timeout":
        lines += [
            "",
            f"The stage ran out of time ({bench_stage['detail']}): the table has the benchmarks that finished.",
        ]
    if report["bench_junit"] is not None and "unreadable" not in report["bench_junit"]:
        bad = report["bench_junit"]["failures"]
        if bad:
            lines += ["", "Benchmarks that failed (their agreement check with CuPy, or an error; not timed):"]
            lines += [f"- `{f['test']}`: {f['message']}" for f in bad[:LISTED_FAILURES]]
            if len(bad) > LISTED_FAILURES:
                lines.append(f"- and {len(bad) - LISTED_FAILURES} more (report.json has them all)")
    lines.append("")

    lines += ["## End to end (bench/end_to_end.py)", ""]
    e2e = report["end_to_end"]
    if e2e is None or "unreadable" in e2e:
        lines.append(_not_run(report, "e2e") if e2e is None else f"Unreadable: {e2e['unreadable']}.")
    else:
        lines += [
            f"{e2e['model']} on `{e2e['device']}`; fit: one epoch of {e2e['steps_per_epoch']} steps of "
            f"batch {e2e['batch']}; predict: batch 1 into a preallocated output. p50 / p99 of single calls.",
            "",
            "| workload | p50 | p99 | p50 per step | calls | first call | result |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for name, w in e2e["workloads"].items():
            if "error" in w:
                lines.append(f"| {name} | - | - | - | - | - | {_cell(w['error'])} |")
                continue
            step = _t(w["per_step_p50_us"] / 1e6) if "per_step_p50_us" in w else "-"
            result = (
                f"loss {w['loss_start']:.4f} -> {w['loss_after']:.4f}, as NumPy's"
                if "loss_after" in w
                else "agrees with NumPy"
            )
            lines.append(
                f"| {name} | {_t(w['p50_us'] / 1e6)} | {_t(w['p99_us'] / 1e6)} | {step} | {w['calls']} | "
                f"{_t(w['first_call_us'] / 1e6)} | {result} |"
            )
    lines.append("")
    return "\n".join(lines)


def write(out: Path) -> dict:
    report = collect(out)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(markdown(report))
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe", help="record which needed Python modules are missing; print their names")
    p.add_argument("out", type=Path)
    p = sub.add_parser("facts", help="merge KEY=VALUE facts into OUTDIR/facts.json")
    p.add_argument("out", type=Path)
    p.add_argument("pairs", nargs="+")
    p = sub.add_parser("stage", help="append one stage's outcome to OUTDIR/stages.jsonl")
    p.add_argument("out", type=Path)
    p.add_argument("name")
    p.add_argument("status", choices=STATUSES)
    p.add_argument("start", type=float, help="seconds since the epoch")
    p.add_argument("end", type=float)
    p.add_argument("limit", type=float, help="the stage's time limit, seconds")
    p.add_argument("detail", nargs="?", default="")
    p = sub.add_parser("write", help="write OUTDIR/report.json and OUTDIR/report.md and print the stages")
    p.add_argument("out", type=Path)
    args = ap.parse_args(argv)

    if args.command == "probe":
        print(" ".join(probe(args.out)))
    elif args.command == "facts":
        add_facts(args.out, args.pairs)
    elif args.command == "stage":
        add_stage(args.out, args.name, args.status, args.start, args.end, args.limit, args.detail)
    else:
        report = write(args.out)
        for s in report["stages"]:
            print(f"  {s['stage']:<7} {s['status']:<8} {s['detail']}")
        print(f"GPU check: {report['verdict']}; report in {args.out / 'report.md'} and report.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
