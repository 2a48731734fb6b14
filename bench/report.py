"""Markdown tables from a pytest-benchmark JSON written by this suite: the environment
(ISA variant, thread counts, OpenBLAS kernel, peak), the floors (bytes, FLOPs, copy
bandwidth at size, floor time) and the measured medians against the floors. Runs
nothing heavy: everything it needs was recorded during the run (bench/conftest.py).

    python -m pytest bench --benchmark-json=/tmp/bench.json
    python bench/report.py /tmp/bench.json [/tmp/other.json ...]

With several files, each is reported in turn, then one table puts their medians side
by side (e.g. a run with OPENBLAS_CORETYPE set and one without).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import floors  # noqa: E402
from floors import CASE_ORDER, QUOTED_PEAK_FLOPS_1CORE, floor_seconds, fmt_count, fmt_time  # noqa: E402

IMPLS = ("customml", "numpy", "torch")


def load(path: str) -> dict:
    with open(path) as f:
        data = json.load(f)
    if "customml_bench" not in data:
        raise SystemExit(
            f"{path}: not written by bench/ (no customml_bench section); "
            "run `python -m pytest bench --benchmark-json=...`"
        )
    return data


def by_case(data: dict) -> dict:
    """case -> {"nbytes", "flops", "bw", "pattern", impl: median seconds}."""
    cases: dict = {}
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        if "case" not in info:
            continue
        row = cases.setdefault(info["case"], {"nbytes": info["bytes"], "flops": info["flops"]})
        if "bw" in info:
            row["bw"], row["pattern"] = info["bw"], info["pattern"]
        row[info["impl"]] = b["stats"]["median"]
        row[info["impl"] + "_rounds"] = b["stats"]["rounds"]
    return dict(sorted(cases.items(), key=lambda kv: CASE_ORDER.get(kv[0], len(CASE_ORDER))))


def environment(data: dict) -> str:
    env = data["customml_bench"]
    info = env["customml_build_info"]
    prov = env.get("provenance", {})
    cpu = data.get("machine_info", {}).get("cpu", {})
    blas = (
        "; ".join(
            f"{d.get('internal_api')} {d.get('version')}, kernel `{d.get('architecture')}`, {d.get('num_threads')} thread(s)"
            for d in env["threadpool_info"]
        )
        or "none loaded"
    )
    set_vars = ", ".join(f"`{k}={v}`" for k, v in env["env"].items() if v is not None) or "none set"
    torch = env.get("torch")
    measured = env.get("fma_peak_measured", {})
    detail = ", ".join(f"{k} {v / 1e9:.1f}" for k, v in measured.items() if k != "error")
    peak_line = (
        f"{env['peak_flops_1core'] / 1e9:.1f} GFLOP/s single-core float32 FMA peak, "
        + (
            f"measured by bench/fma_peak.py ({detail} GFLOP/s)"
            if env["peak_source"] == "measured"
            else f"quoted, not measured ({measured.get('error', '')})"
        )
        + f"; the quoted figure is {QUOTED_PEAK_FLOPS_1CORE / 1e9:.0f} GFLOP/s"
    )
    lines = [
        f"- run: {data.get('datetime', '?')}; CPU `{cpu.get('brand_raw', '?')}`, "
        f"{cpu.get('count', '?')} logical CPUs; Python {env['python']}, NumPy {env['numpy']}",
        f"- customml {info['version']} ({info['compiler']}): ISA `{info['isa']}` (detected `{info['isa_detected']}`), "
        f"GEMM `{info['kernels']['gemm']}`, other kernels "
        + ", ".join(sorted({v for k, v in info["kernels"].items() if k != "gemm"}))
        + f"; {info['num_threads']} thread",
        f"- build measured: `_core` sha256 `{prov.get('core_sha256', '?')[:16]}`, installed {prov.get('core_mtime', '?')}; "
        f"source tree HEAD `{prov.get('source_head')}`"
        + (" with uncommitted changes" if prov.get("source_dirty") else ""),
        f"- NumPy BLAS: {blas} (threadpoolctl.threadpool_limits(1) for the whole session)",
        "- torch: "
        + (
            "not importable; its benchmarks were skipped"
            if torch is None
            else f"{torch['version']}, {torch['num_threads']} thread(s)"
        ),
        f"- thread/BLAS environment variables: {set_vars}",
        f"- peak: {peak_line}",
    ]
    return "\n".join(lines)


def floors_table(data: dict) -> str:
    env = data["customml_bench"]
    bandwidths = {(k.split(":")[0], int(k.split(":")[1])): v for k, v in env["bandwidth"].items()}
    return floors.floors_table(bandwidths, env["peak_flops_1core"], env["peak_source"])


def bandwidth_table(data: dict) -> str:
    """Every bandwidth measured, by working-set size and pattern."""
    bws: dict = {}
    for k, v in data["customml_bench"]["bandwidth"].items():
        pattern, n = k.split(":")
        bws.setdefault(int(n), {})[pattern] = v
    rows = ["| working set | copy | inplace | read |", "|---:|---:|---:|---:|"]
    for n in sorted(bws):
        cells = [f"{bws[n][p] / 1e9:.1f} GB/s" if p in bws[n] else "-" for p in ("copy", "inplace", "read")]
        rows.append(f"| {fmt_count(n)}B | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _pct(floor: float, t) -> str:
    return "-" if t is None else f"{100.0 * floor / t:.0f}%"


def measured_table(data: dict) -> str:
    env = data["customml_bench"]
    peak = env["peak_flops_1core"]
    cases = by_case(data)
    has_torch = any("torch" in r for r in cases.values())
    head = (
        "| case | customml | NumPy |"
        + (" torch |" if has_torch else "")
        + " NumPy / customml | floor (bound) | customml achieved/limit | NumPy achieved/limit |"
        + (" torch achieved/limit |" if has_torch else "")
    )
    sep = "|---|---:|---:|" + ("---:|" if has_torch else "") + "---:|---:|---:|---:|" + ("---:|" if has_torch else "")
    rows = [head, sep]
    for case, r in cases.items():
        cm, np_, th = r.get("customml"), r.get("numpy"), r.get("torch")
        ratio = f"{np_ / cm:.2f}x" if cm and np_ else "-"
        bw = r.get("bw")
        if bw is None:
            floor_s, cm_pct, np_pct, th_pct = "-", "-", "-", "-"
        else:
            floor, bound = floor_seconds(r["nbytes"], r["flops"], bw, peak)
            floor_s = f"{fmt_time(floor)} ({bound})"
            cm_pct, np_pct, th_pct = _pct(floor, cm), _pct(floor, np_), _pct(floor, th)
        rows.append(
            f"| {case} | {fmt_time(cm)} | {fmt_time(np_)} |"
            + (f" {fmt_time(th)} |" if has_torch else "")
            + f" {ratio} | {floor_s} | {cm_pct} | {np_pct} |"
            + (f" {th_pct} |" if has_torch else "")
        )
    return "\n".join(rows)


def side_by_side(datas: list, labels: list) -> str:
    all_cases = [by_case(d) for d in datas]
    keys = sorted({k for c in all_cases for k in c}, key=lambda k: CASE_ORDER.get(k, len(CASE_ORDER)))
    head = "| case | " + " | ".join(f"customml ({label}) | NumPy ({label})" for label in labels) + " |"
    sep = "|---|" + "---:|---:|" * len(labels)
    rows = [head, sep]
    for k in keys:
        cells = []
        for c in all_cases:
            r = c.get(k, {})
            cells += [fmt_time(r.get("customml")), fmt_time(r.get("numpy"))]
        rows.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", nargs="+", help="pytest-benchmark JSON files written with --benchmark-json")
    ap.add_argument("--label", action="append", default=[], help="a label per file, in order (default: file name)")
    args = ap.parse_args(argv)
    datas = [load(p) for p in args.json]
    labels = args.label + [Path(p).stem for p in args.json[len(args.label) :]]
    for label, data in zip(labels, datas):
        print(f"### {label}\n")
        print(environment(data) + "\n")
        print("Bandwidth measured at each working-set size, one thread (bench/floors.py).\n")
        print(bandwidth_table(data) + "\n")
        print("Floors: floor = max(bytes / bandwidth of the case's pattern at its size, FLOPs / peak).\n")
        print(floors_table(data) + "\n")
        print("Medians (times are per call; achieved/limit = floor / median).\n")
        print(measured_table(data) + "\n")
    if len(datas) > 1:
        print("### Medians side by side\n")
        print(side_by_side(datas, labels))


if __name__ == "__main__":
    main()
