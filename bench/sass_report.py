"""What the compiled CUDA kernels would do on an A100 or H100, read from the machine code
without a GPU (issue 22): for each kernel of a CUDA build, its registers, shared memory
and occupancy on sm_80 and sm_90a, the instruction mix of its main loop, and for the
README MLP's shapes and 4096^3 the dense layer's grids against the SM count.

    python bench/sass_report.py build/cuda/libcustomml.so.0 [--markdown] [--kernel REGEX]

Needs cuobjdump and nvdisasm (PATH, the CUDA toolkit, or PyPI's nvidia-cuda-cuobjdump and
nvidia-cuda-nvdisasm, extra "sass"). The main loop is main_loop()'s; its mix is static (each
instruction of the body counted once, every path through it included), so it describes the
code, not a run.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Per-SM limits (CUDA C Programming Guide, "Technical Specifications per Compute Capability").
SM: dict[str, dict[str, Any]] = {
    "sm_80": dict(name="A100", sms=108, regs=65536, warps=64, blocks=32, smem=164 * 1024),
    "sm_90a": dict(name="H100 SXM", sms=132, regs=65536, warps=64, blocks=32, smem=228 * 1024),
}
# Threads per block of the kernels not launched with the common kThreads = 256
# (cuda/common.cuh); cuda/dense.cuh's kGemmThreads, kGemvThreads, cuda/gemm_tc.cuh's kTcThreads,
# cuda/gemm_wgmma.cuh's kWgThreads.
BLOCK_THREADS = {
    "gemm_kernel": 256,
    "gemv_kernel": 256,
    "gemm_tc_kernel": 128,
    "gemm_wgmma_kernel": 384,
    "accumulate_kernel": 1,
}
# Dynamic shared memory per block, which cuobjdump's resource usage does not count
# (cuda/gemm_wgmma.cuh's kWgSharedBytes: the mbarriers, 4 stages of 48 KiB, alignment).
DYNAMIC_SMEM = {"gemm_wgmma_kernel": 1024 + 4 * 49152 + 1024}
DEFAULT_THREADS = 256


def tool(name: str) -> str:
    """A CUDA binary utility: on PATH, in the toolkit, or from the nvidia-cuda-* wheels."""
    found = shutil.which(name) or shutil.which(name, path="/usr/local/cuda/bin")
    if not found:
        try:
            import nvidia  # type: ignore[import-untyped]

            for root in nvidia.__path__:
                for cand in Path(root).glob(f"*/bin/{name}"):
                    found = str(cand)
        except ImportError:
            pass
    if not found:
        sys.exit(
            f"{name} not found: install the CUDA toolkit or `pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm`"
        )
    return found


def run(args: list[str]) -> str:
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(tool("nvdisasm")) + os.pathsep + env.get("PATH", "")
    return subprocess.run(args, capture_output=True, text=True, check=True, env=env).stdout


def short_name(mangled: str) -> str:
    try:
        demangled = subprocess.run(["c++filt"], input=mangled, capture_output=True, text=True).stdout.strip()
    except OSError:
        demangled = mangled
    demangled = demangled.split("(")[0].replace("customml::cuda::", "").removeprefix("void ")
    return re.sub(r"nvcuda::wmma::precision::", "", demangled)


@dataclass
class Kernel:
    name: str
    arch: str
    regs: int = 0
    smem: int = 0
    local: int = 0
    loop: dict = field(default_factory=dict)


def resources(binary: str) -> dict[tuple[str, str], Kernel]:
    kernels: dict[tuple[str, str], Kernel] = {}
    arch = None
    for line in run([tool("cuobjdump"), "-res-usage", binary]).splitlines():
        m = re.match(r"arch = (sm_\d+a?)", line)
        if m:
            arch = m.group(1)
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            current = Kernel(short_name(m.group(1)), arch or "?")
            kernels[(current.name, current.arch)] = current
        m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", line)
        if m:
            current.regs, current.smem, current.local = int(m.group(1)), int(m.group(3)), int(m.group(4))
    return kernels


INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def classify(op: str) -> list[str]:
    parts = op.split(".")
    tags = []
    if parts[0] == "FFMA":
        tags.append("ffma")
    if parts[0] in ("HMMA", "IMMA") or parts[0].startswith("HGMMA"):
        tags.append("mma")
    if parts[0] in ("LDG", "LDS", "LD", "LDGSTS", "LDSM") and "128" in parts:
        tags.append("ld128")
    if parts[0] == "LDGSTS":
        tags.append("cp_async")
    if parts[0] == "LDSM":
        tags.append("ldmatrix")
    if parts[0] == "UTMALDG":
        tags.append("tma")
    if parts[0] == "LDG":
        tags.append("ldg")
    if parts[0] in ("F2F", "F2FP", "I2F", "F2I"):
        tags.append("convert")
    if parts[0] not in ("FFMA", "FADD", "FMUL", "HMMA") and ({"WIDE", "X", "EX", "64"} & set(parts[1:])):
        tags.append("int64")
    return tags


def main_loop(sass: str, by_loads: bool = False) -> dict:
    """The mix of the main loop: the loop with the most tensor-core instructions (else FFMA)
    of its own, outside the loops nested in it, and of equals the shortest (the fp32 GEMM's
    whole-slice loop, which interior tiles run, beside its counted twin for edge tiles). Its
    nested loops count in its mix (the backward GEMM's per-slice dz pass over a thread's 4
    elements, kept rolled). by_loads: the loop with the most global loads of its own instead
    (the GEMV's k loop: its loop over the lanes' sums is laid out around its epilogue, which
    has more FFMA)."""
    insns = [(int(m.group(1), 16), m.group(3), m.group(4)) for m in INSN.finditer(sass)]
    exits = [addr for addr, op, _ in insns if op == "EXIT"]
    loops = []
    for addr, op, rest in insns:
        if op.split(".")[0] != "BRA":
            continue
        target = re.search(r"0x([0-9a-f]+)", rest)
        # A branch back over an EXIT is no loop: ptxas puts an mbarrier wait's retry after
        # the kernel's end and branches back from there into the code that waited.
        if target and int(target.group(1), 16) <= addr and not any(int(target.group(1), 16) < e < addr for e in exits):
            loops.append((int(target.group(1), 16), addr))
    counted = []
    for lo, hi in loops:
        nested = [(a, b) for a, b in loops if (a, b) != (lo, hi) and lo <= a and b <= hi]
        body = [op for a, op, _ in insns if lo <= a <= hi]
        own = [classify(op) for a, op, _ in insns if lo <= a <= hi and not any(x <= a <= y for x, y in nested)]
        counted.append(
            (body, sum("mma" in t for t in own), sum("ffma" in t for t in own), sum("ldg" in t for t in own))
        )
    if not counted:
        return {}
    use_mma = any(c[1] for c in counted)
    holding = [c for c in counted if (c[1] if use_mma else c[2])]
    if not holding:
        return {}
    body = max(holding, key=lambda c: (c[3] if by_loads else 0, (c[1] if use_mma else c[2]), -len(c[0])))[0]
    mix = {"insns": len(body)}
    for tag in ("ffma", "mma", "ld128", "cp_async", "ldmatrix", "tma", "convert", "int64", "ldg"):
        mix[tag] = sum(1 for op in body if tag in classify(op))
    return mix


def disassemble(binary: str, kernels: dict[tuple[str, str], Kernel], pattern: re.Pattern) -> None:
    for arch in SM:
        text = run([tool("cuobjdump"), "-sass", "-arch", arch, binary])
        for chunk in re.split(r"\n\s*Function : ", text)[1:]:
            name = short_name(chunk.split(None, 1)[0])
            k = kernels.get((name, arch))
            if k and pattern.search(name):
                k.loop = main_loop(chunk, by_loads=name.startswith("gemv_kernel"))


def dynamic_smem(name: str) -> int:
    return next((b for base, b in DYNAMIC_SMEM.items() if name.startswith(base)), 0)


def occupancy(k: Kernel) -> tuple[int, float]:
    """Resident blocks per SM and the share of the SM's warps they fill."""
    lim = SM[k.arch]
    threads = next((t for base, t in BLOCK_THREADS.items() if k.name.startswith(base)), DEFAULT_THREADS)
    warps = math.ceil(threads / 32)
    regs_per_warp = math.ceil(max(k.regs, 1) * 32 / 256) * 256
    by_regs = (lim["regs"] // regs_per_warp) // warps
    # sm_90's figure includes the 1 KiB the runtime reserves per block; sm_80's does not.
    smem = k.smem + (1024 if k.arch == "sm_80" else 0)
    smem += dynamic_smem(k.name)
    by_smem = lim["smem"] // smem if smem else lim["blocks"]
    blocks = min(by_regs, by_smem, lim["blocks"], lim["warps"] // warps)
    return blocks, blocks * warps / lim["warps"]


# The estimate's assumptions (H100 SXM): a sustained 1.755 GHz; 4 warp-instructions issued
# per SM and cycle; every instruction of the main loop's body issued once a slice (the static
# count: an upper bound, it includes the paths not taken); a slice's global loads (600 cycles)
# hidden behind the arithmetic of the slices in flight before it (the FP32 kernel's 2, the
# tensor-core kernel's 1), so that a slice takes at least 600 cycles over those
# (a short grid of one block an SM waits for its loads); split-K's last block reading the
# tile's parts from L2 at 64 bytes a cycle; the GEMV latency-bound, 600 cycles a round of
# loads; launch overhead (2-4 us) excluded.
CLOCK_HZ = 1.755e9
ISSUE_PER_CYCLE = 4
L2_BYTES_PER_CYCLE = 64
LOAD_LATENCY = 600
H100_SMS = SM["sm_90a"]["sms"]

# cuda/dense.cu's choice of kernel, mirrored (tests/test_gemm_paths.py checks the same
# rule): the GEMV for float32 C of at most 4 rows or 16 columns (both problems of a pair),
# else the 64 x 64 tiles (float32 or tensor cores), split into parts below 132 tiles and
# 512 parts' tiles; below 132 blocks, the smaller split tiling (16-64 rows, 8-64 columns) with
# the fewest blocks that cover the SMs, else the most blocks.
GEMV_ROWS, GEMV_COLUMNS, COVER_BLOCKS, MAX_PARTIAL_TILES, MAX_PARTS = 4, 16, 132, 512, 32


def part_depth(k: int) -> int:
    return max(1, math.ceil(math.ceil(k / MAX_PARTS) / 16)) * 16


# cuda/gemm_wgmma.cuh's wgmma_path, mirrored (tests/test_gemm_wgmma.py runs it end to end):
# on sm_90a, bf16 / fp16 products with 16-bit copies of both operands (a forward's A: the
# previous Dense layer's c16 or the staged batch's copy, predict's too; a backward's: dz's
# copy and x's), whose rows the TMA takes whatever their width (padded to multiples of 8
# elements: backend.h's half_ld), of at least one wave of 128 x 256 tiles in all and k for
# the ring of 4 slices of 64 in each. backward: dense_backward's pair, dW (m = in + 1 with
# db's row) then dx, or either alone (layer 1: dW; a frozen layer: dx).
WG_BM, WG_BN, WG_BK, WG_STAGES, WG_MIN_TILES = 128, 256, 64, 4, 132


def wgmma_path(problems: list[tuple[int, int, int]], a16: bool, backward: bool = False) -> bool:
    if (len(problems) != 1 and not backward) or not a16:
        return False
    for _, _, k in problems:
        if k < WG_STAGES * WG_BK:
            return False
    return sum(wgmma_tiles(p) for p in problems) >= WG_MIN_TILES


def wgmma_tiles(problem: tuple[int, int, int]) -> int:
    m, n, _ = problem
    return math.ceil(m / WG_BM) * math.ceil(n / WG_BN)


def dense_path(
    problems: list[tuple[int, int, int]], gemv: bool = True, wgmma: bool = False, backward: bool = False
) -> tuple[str, int, list[int]]:
    """(kernel, blocks, blocks per tile or GEMV warps' k iterations per problem); gemv
    False: the tensor-core precisions, which have no GEMV path; wgmma: on sm_90a, for
    wgmma_path's products (backward: the backward's pair)."""
    if wgmma and wgmma_path(problems, a16=True, backward=backward):
        return "wgmma", sum(wgmma_tiles(p) for p in problems), [1] * len(problems)
    if gemv and all(m <= GEMV_ROWS or n <= GEMV_COLUMNS for m, n, _ in problems):
        warps = sum(n * math.ceil(m / GEMV_ROWS) for m, n, _ in problems)
        return "gemv", math.ceil(warps / 8), [min(part_depth(k), k) for _, _, k in problems]
    split, _, blocks, splits = dense_tiling(problems)
    return ("split" if split else "tiled"), blocks, splits


def dense_tiling(problems: list[tuple[int, int, int]]) -> tuple[bool, tuple[int, int], int, list[int]]:
    """A tiled launch's (split, (tile rows, tile columns), blocks, blocks per tile)."""
    parts = [math.ceil(k / part_depth(k)) for _, _, k in problems]

    def of(rows: int, cols: int) -> tuple[bool, tuple[int, int], int, list[int]]:
        tiles = [math.ceil(m / rows) * math.ceil(n / cols) for m, n, _ in problems]
        split = sum(tiles) < COVER_BLOCKS and sum(t * p for t, p in zip(tiles, parts)) <= MAX_PARTIAL_TILES
        splits = parts if split and max(parts) > 1 else [1] * len(problems)
        return splits != [1] * len(problems), (rows, cols), sum(t * s for t, s in zip(tiles, splits)), splits

    best = of(64, 64)
    if best[2] >= COVER_BLOCKS:
        return best
    for rows, cols in ((r, c) for r in (64, 32, 16) for c in (64, 32, 16, 8)):
        t = of(rows, cols)
        if t[0] and ((best[2] < COVER_BLOCKS or t[2] < best[2]) if t[2] >= COVER_BLOCKS else t[2] > best[2]):
            best = t
    return best


def dense_shapes() -> list[tuple[str, bool, list[tuple[int, int, int]], int]]:
    """The dense layer's GEMMs as cuda/dense.cu launches them (the backward pass's dW, with
    db's extra row, and dx in one grid): (what, backward, [(m, n, k) per problem], the
    operands a training step's bf16 launch copies: both, whatever the widths, every 16-bit copy's
    rows padded to a multiple of 8 elements by backend.h's half_ld, the README MLP's 10-wide top
    layer's twin and dz rows 16 apart; gemm_tc_kernel's kCopies 2) for the README MLP at batch
    128 and 1, and 4096^3 (as a layer between two others)."""
    out = []
    for batch in (128, 1):
        for i, (inp, units) in enumerate([(784, 256), (256, 256), (256, 10)]):
            copies = 2
            out.append((f"MLP b{batch} L{i + 1} forward {batch}x{inp}->{units}", False, [(batch, units, inp)], copies))
            back = [(inp + 1, units, batch)] + ([(batch, inp, units)] if i else [])
            out.append((f"MLP b{batch} L{i + 1} backward" + ("" if i else " (no dx)"), True, back, copies))
    out.append(("4096^3 forward", False, [(4096, 4096, 4096)], 2))
    out.append(("4096^3 backward (dW + dx)", True, [(4097, 4096, 4096), (4096, 4096, 4096)], 2))
    return out


# The wgmma kernel's estimate (H100 SXM, one block an SM: 194 KiB of shared memory): a slice
# (64 deep) is 4 HGMMA.64x256x16 a consumer warpgroup, 128 x 256 x 64 FMA at 2048 dense bf16
# FMA a cycle and SM (1024 cycles), beside its 48 KiB of operands from L2 at 64 bytes a cycle
# (768), or half that (1536); the producer warp keeps 3 slices ahead (each stage refilled once
# its consumers arrive on its empty barrier, no block-wide barrier), which covers the TMA's
# latency after the first (LOAD_LATENCY once a block); the epilogue writes the tile's float32
# C and its 16-bit copy (192 KiB) at 64 bytes a cycle. Returns (low, high) cycles.
WG_SLICE_FMA_CYCLES = WG_BM * WG_BN * WG_BK // 2048
WG_SLICE_BYTES = (WG_BM + WG_BN) * WG_BK * 2


# The backward's pair: dx's epilogue also reads y (and z) and writes dz's 16-bit copy (10 or
# 14 bytes an element, 12 here), dW's writes float32 only; the tiles holding db's row each
# sum a 256-column strip of dz in float (k x 1 KiB), 16 loads of a warp in flight per
# LOAD_LATENCY: extra SM cycles those blocks spend beside the others' waves.
def estimate_wgmma_cycles(problems: list[tuple[int, int, int]], backward: bool = False) -> tuple[float, float]:
    tiles = sum(wgmma_tiles(p) for p in problems)
    per_tile = []
    for i, (_, _, k) in enumerate(problems):
        epilogue = WG_BM * WG_BN * (6 if not backward else 4 if i == 0 else 12) / L2_BYTES_PER_CYCLE
        per_tile.append(
            [
                LOAD_LATENCY + math.ceil(k / WG_BK) * max(WG_SLICE_FMA_CYCLES, WG_SLICE_BYTES / bw) + epilogue
                for bw in (L2_BYTES_PER_CYCLE, L2_BYTES_PER_CYCLE / 2)
            ]
        )
    db = 0.0
    if backward:
        m, n, k = problems[0]
        db = math.ceil(n / WG_BN) * k * WG_BN * 4 / (8 * 16 * 128 / LOAD_LATENCY)
    # the tiles' SM cycles over the SMs, at least the waves' (one block an SM)
    low, high = (
        max(
            math.ceil(tiles / H100_SMS) * max(c[j] for c in per_tile),
            (sum(wgmma_tiles(p) * c[j] for p, c in zip(problems, per_tile)) + db) / H100_SMS,
        )
        for j in (0, 1)
    )
    return low, high


def estimate_cycles(
    kernels: dict[tuple[str, str], Kernel],
    backward: bool,
    problems: list,
    tensor_cores: bool = False,
    copies: int = 0,
) -> tuple[str, int, float]:
    """(path, blocks, estimated cycles on an H100) under the assumptions above (0 when the
    kernel's SASS was not read); tensor_cores: the bf16 kernel's (its loop a 16-deep slice
    as the FP32 kernel's) copying the operands dense_shapes says."""
    path, blocks, per = dense_path(problems, gemv=not tensor_cores)
    flag = "true" if backward else "false"
    name = (
        f"gemm_tc_kernel<__nv_bfloat16, {flag}, {copies}>"
        if tensor_cores
        else f"{'gemv' if path == 'gemv' else 'gemm'}_kernel<{flag}>"
    )
    k = kernels.get((name, "sm_90a"))
    if not k or not k.loop:
        return path, blocks, 0.0
    per_sm, _ = occupancy(k)
    warps = (128 if tensor_cores else 256) // 32
    resident = min(per_sm, math.ceil(blocks / H100_SMS))
    waves = math.ceil(blocks / (per_sm * H100_SMS))
    if path == "gemv":
        # a lane's part, four k at a time: rounds of loads (the loop body's LDGs, five per k:
        # B and four rows of A), then the issue of every warp's loop over the SMs
        unroll = max(1, k.loop.get("ldg", 5) // 5)
        iters = max(per)
        issue = waves * resident * 8 * iters / unroll * k.loop["insns"] / ISSUE_PER_CYCLE
        return path, blocks, math.ceil(iters / unroll) * LOAD_LATENCY + issue
    slices = max(math.ceil((kk if s == 1 else part_depth(kk)) / 16) for (_, _, kk), s in zip(problems, per))
    in_flight = 1 if tensor_cores else 2
    # a bf16 slice is 8 HMMA a warp (2 m16 x 4 n8 tiles, k16): a loop body with more is
    # unrolled (the instance copying both operands: 2 slices)
    per_slice = k.loop["insns"] / (max(1, k.loop.get("mma", 8) // 8) if tensor_cores else 1)
    cycles = waves * slices * max(resident * warps * per_slice / ISSUE_PER_CYCLE, LOAD_LATENCY / in_flight)
    if path == "split":
        cycles += (max(per) + 1) * math.prod(dense_tiling(problems)[1]) * 4 / L2_BYTES_PER_CYCLE
    return path, blocks, cycles


def dense_estimates(kernels: dict[tuple[str, str], Kernel]) -> list[str]:
    """Each dense GEMM's kernel and blocks against the SM count and, for the FP32 and bf16
    kernels on sm_90, an estimated time (assumptions above) beside the FMA floor."""
    lines = []
    for what, backward, problems, copies in dense_shapes():
        flops = sum(2 * m * n * kk for m, n, kk in problems)
        for tc in (False, True):
            path, blocks, cycles = estimate_cycles(kernels, backward, problems, tc, copies)
            cover = ", ".join(f"{blocks / lim['sms']:.2f}x {lim['name']}'s {lim['sms']} SMs" for lim in SM.values())
            precision = "bf16" if tc else "FP32"
            estimate = f"; estimate {cycles / CLOCK_HZ * 1e6:.1f} us" if cycles else ""
            floor = flops / (990e12 if tc else 67e12) * 1e6
            lines.append(f"  {what} {precision}: {path}, {blocks} blocks ({cover}){estimate}, FMA floor {floor:.2f} us")
            if tc and wgmma_path(problems, copies == 2, backward):
                # on an H100 gemm() takes the sm_90a kernel instead (the line above: an A100's)
                path, blocks, _ = dense_path(problems, gemv=False, wgmma=True, backward=backward)
                low, high = (c / CLOCK_HZ * 1e6 for c in estimate_wgmma_cycles(problems, backward))
                lines.append(
                    f"  {what} bf16 on sm_90a: {path}, {blocks} blocks ({blocks / H100_SMS:.2f}x the H100's "
                    f"{H100_SMS} SMs); estimate {low:.0f}-{high:.0f} us, FMA floor {floor:.2f} us"
                )
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary", help="the CUDA build's libcustomml.so.0 (the kernels; _core links it)")
    ap.add_argument("--kernel", default=".", help="only kernels whose name matches (regex)")
    ap.add_argument("--markdown", action="store_true", help="a Markdown table (docs/performance.md)")
    args = ap.parse_args()
    pattern = re.compile(args.kernel)
    kernels = resources(args.binary)
    disassemble(args.binary, kernels, pattern)
    sep = " | " if args.markdown else "  "
    head = ["kernel", "arch", "regs", "smem B", "blocks/SM", "occ", "loop insns", "FFMA", "MMA", "128-bit ld",
            "cp.async", "ldmatrix", "TMA", "cvt", "int64"]  # fmt: skip
    rows = []
    for (name, arch), k in sorted(kernels.items()):
        if not pattern.search(name) or arch not in SM:
            continue
        blocks, occ = occupancy(k)
        loop = k.loop
        n = loop.get("insns", 0)
        pct = lambda t: f"{100 * loop[t] / n:.0f}%" if n else "-"  # noqa: E731
        rows.append([name, arch, str(k.regs), str(k.smem + dynamic_smem(name)), str(blocks), f"{100 * occ:.0f}%", str(n) if n else "-",
                     pct("ffma"), pct("mma"), *(str(loop.get(t, "-")) for t in ("ld128", "cp_async", "ldmatrix",
                     "tma", "convert", "int64"))])  # fmt: skip
        if k.local:
            rows[-1][0] += f" (LOCAL {k.local} B)"
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        for r in [head, *rows]:
            print(sep.join(c.ljust(w) for c, w in zip(r, widths)))
    print()
    print("dense layer GEMMs: kernel (gemv, split-K or tiled) and blocks against the SM count; estimates")
    print(f"(not measurements) under the assumptions in {Path(__file__).name}, against 67 TFLOP/s FP32, 990 bf16:")
    print("\n".join(dense_estimates(kernels)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
