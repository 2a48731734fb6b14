"""Fails when ptxas reports register spills, a stack frame or local memory for any
kernel of the CUDA backend, or when a kernel defined in cuda/*.cuh is missing for an
architecture (a .cu file dropped from the CMake source list would otherwise pass
unnoticed). Reads the build log (nvcc -Xptxas -v output) on stdin or from a file and
prints each kernel's resources for the log."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ARCHS = ("sm_80", "sm_90a")
KERNEL_SOURCES = Path(__file__).resolve().parent.parent / "cuda"


def expected_kernels() -> set[str]:
    """Every kernel defined in cuda/*.cuh, by name (without namespace or template arguments)."""
    pattern = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(")
    return {name for f in KERNEL_SOURCES.glob("*.cuh") for name in pattern.findall(f.read_text())}


def demangle(names):
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
        return out.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return list(names)


def main() -> int:
    text = open(sys.argv[1]).read() if len(sys.argv) > 1 else sys.stdin.read()
    rows = []
    current = None
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '([^']+)' for '(sm_\d+a?)'", line)
        if m:
            current = {
                "kernel": m.group(1),
                "arch": m.group(2),
                "stack": None,
                "spill_st": None,
                "spill_ld": None,
                "regs": None,
                "lmem": 0,
            }
            rows.append(current)
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            current["stack"], current["spill_st"], current["spill_ld"] = map(int, m.groups())
        m = re.search(r"Used (\d+) registers", line)
        if m:
            current["regs"] = int(m.group(1))
            lm = re.search(r"(\d+) bytes lmem", line)
            current["lmem"] = int(lm.group(1)) if lm else 0
    if not rows:
        print("ptxas gate: no kernel resource report found in the build log (was -Xptxas -v passed?)")
        return 1
    names = demangle([r["kernel"] for r in rows])
    bad = 0
    print(f"{'kernel':<60} {'arch':<6} {'regs':>4} {'stack':>5} {'spill st/ld':>11} {'lmem':>4}")
    for r, name in zip(rows, names):
        short = re.sub(r"\(.*", "", name)
        ok = r["stack"] == 0 and r["spill_st"] == 0 and r["spill_ld"] == 0 and r["lmem"] == 0
        bad += not ok
        print(
            f"{short:<60} {r['arch']:<6} {r['regs']!s:>4} {r['stack']!s:>5} "
            f"{str(r['spill_st']) + '/' + str(r['spill_ld']):>11} {r['lmem']:>4}{'' if ok else '  <-- FAIL'}"
        )
    built = {(re.sub(r"<.*", "", re.sub(r"\(.*", "", name)).split("::")[-1], r["arch"]) for r, name in zip(rows, names)}
    missing = sorted(f"{k} ({a})" for k in sorted(expected_kernels()) for a in ARCHS if (k, a) not in built)
    if missing:
        print("ptxas gate: expected kernels missing from the build: " + ", ".join(missing))
    if bad:
        print(f"ptxas gate: {bad} kernel build(s) spill registers or use local memory")
    if bad or missing:
        return 1
    print(f"ptxas gate: {len(rows)} kernel builds, no spills, no stack frames, no local memory")
    return 0


if __name__ == "__main__":
    sys.exit(main())
