"""Maximum error of the vectorized float32 math (cpp/cpu/vmath.h) against NumPy float64,
over every STRIDE-th float32 bit pattern, at each ISA level the CPU has.

    python bench/vmath_error.py [--stride 64] [--levels portable,avx2,avx512]

Errors are in ulps of the float32 result (np.spacing of the rounded true value); gelu's
are relative to ulp + 2^-22 |z| (its stated bound's form, see vmath.h). A true result
beyond float32's range must come back as the infinity it rounds to. Stride 64 (67 M
inputs) takes about a minute per level here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import customml
from customml import _core

# The float64 specification the tests use (tests/reference.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import reference  # noqa: E402

ISA_ORDER = ("portable", "avx2", "avx512", "avx512_vnni", "amx")


def domain(name, x):
    if name == "exp_nonpositive":
        return x[x <= 0]
    if name == "log":
        return x[x > 0]
    if name == "log1p":
        return x[x > -1]
    if name == "log1p_unit":
        return x[(x >= 0) & (x <= 1)]
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stride", type=int, default=64)
    ap.add_argument("--levels", default="portable,avx2,avx512")
    args = ap.parse_args()
    detected = ISA_ORDER.index(customml.build_info()["isa_detected"])
    bits = np.arange(0, 2**32, args.stride, dtype=np.uint64).astype(np.uint32)
    xs = bits.view(np.float32)
    xs = xs[np.isfinite(xs)]
    print(f"{xs.size} finite inputs (every {args.stride}th float32)")
    for level in args.levels.split(","):
        if ISA_ORDER.index(level) > detected:
            print(f"{level}: not on this CPU, skipped")
            continue
        for name in ("exp", "exp_nonpositive", "log", "log1p", "log1p_unit", "tanh", "sigmoid", "gelu"):
            x = domain(name, xs)
            y = _core._vmath(name, x, level).astype(np.float64)
            r = reference.vmath(name, x)
            with np.errstate(all="ignore"):
                ulp = np.spacing(np.minimum(np.abs(r), np.finfo(np.float32).max).astype(np.float32)).astype(np.float64)
                scale = ulp + (2.0**-22 * np.abs(x) if name == "gelu" else 0.0)
                exact = (y == r) | (y == r.astype(np.float32)) | (np.isnan(y) & np.isnan(r))
                err = np.where(exact, 0.0, np.abs(y - r) / scale)
            err = np.nan_to_num(err, nan=np.inf)
            i = int(np.argmax(err))
            print(f"{level:9s} {name:10s} max {err[i]:.3f} at x = {x[i]!r}")


if __name__ == "__main__":
    main()
