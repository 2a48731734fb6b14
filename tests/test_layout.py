"""The size limits the restructure set (issue 14): no C++ or CUDA source of ours over 700
lines, no Python module of the package over 600, so that no file grows back into one that
does several jobs. Vendored code (third_party/) is not ours and is not counted."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIMITS = [
    ("cpp", ("*.cpp", "*.h", "*.def"), 700),
    ("cuda", ("*.cpp", "*.h", "*.cu", "*.cuh"), 700),
    ("python/customml", ("*.py",), 600),
]


@pytest.mark.parametrize("folder, patterns, limit", LIMITS)
def test_no_source_file_is_over_its_limit(folder, patterns, limit):
    files = [p for pattern in patterns for p in (ROOT / folder).rglob(pattern)]
    assert files, f"no sources found under {folder}"
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > limit}
    assert not long, f"over {limit} lines: {long}"
