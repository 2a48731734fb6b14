"""The README's code runs as written: every ```python and ```bash block, in order, in one
temporary directory (the README says so: later blocks read the files earlier ones save), each
Python block in a fresh interpreter. The first ```bash block, the two set-up commands, is
checked to be exactly those commands and skipped: CI runs them itself (.ci/run), and they
install packages as root. Also holds the length limits issue #15 set for the docs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import pytest

import customml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

SETUP = (
    'apt-get update && apt-get install -y dataset-fashion-mnist && python3 -m pip install ".[datasets]"'
    " && python3 -m customml train --dataset fashion_mnist --output model.cml\n"
    'python3 -m pip install ".[test]" && HYPOTHESIS_PROFILE=ci python3 -m pytest tests -m "not slow and not timing"\n'
)
RUNNABLE = ("python", "bash")
# A block in any other language would escape this test; "text" is for output shown as is.
KNOWN = RUNNABLE + ("text",)
TIMEOUT_S = 600  # a block takes seconds to a minute; CI runs it beside another xdist worker: this only stops a hang


@dataclass
class Block:
    index: int
    lang: str
    line: int  # of the opening fence, 1-based
    code: str

    @property
    def id(self) -> str:
        return f"{self.index}-{self.lang}-line{self.line}"


def readme_blocks(text: str) -> List[Block]:
    blocks, lines, i = [], text.splitlines(keepends=True), 0
    while i < len(lines):
        fence = re.match(r"^```(\S*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"README.md:{start + 1}: the code block is never closed"
        blocks.append(Block(len(blocks), fence.group(1), start + 1, "".join(body)))
        i += 1
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


def test_every_block_has_a_known_language():
    unknown = [f"README.md:{b.line}: ```{b.lang}" for b in BLOCKS if b.lang not in KNOWN]
    assert not unknown, f"blocks this test would not run (use one of {KNOWN}): {unknown}"


def test_the_first_bash_block_is_the_two_setup_commands():
    first = next(b for b in BLOCKS if b.lang == "bash")
    assert first.code == SETUP, "CI runs these two commands as they stand; change .ci/run and this test with them"


def test_ci_runs_the_readmes_test_command():
    # .ci/run installs with its own pip line, then runs the README's test command as written
    # (its timing step comes after, on the tests that command leaves out).
    command = SETUP.splitlines()[1].split(" && ", 1)[1]
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert command in lines, f".ci/run does not run the README's test command {command!r}"


def _environment(bindir: Path) -> Dict[str, str]:
    """The environment of the README's commands: this interpreter as python3, and the
    customml this test imported first on the path, so the blocks test the same build."""
    env = dict(os.environ)
    package_parent = str(Path(customml.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    env["PATH"] = os.pathsep.join((str(bindir), env.get("PATH", "")))
    env["MPLBACKEND"] = "Agg"
    return env


class ReadmeRun:
    """Runs the blocks in order on demand, so that selecting one block runs those before it."""

    def __init__(self, directory: Path):
        self.directory = directory
        bindir = directory / ".bin"
        bindir.mkdir()
        (bindir / "python3").symlink_to(sys.executable)
        self.env = _environment(bindir)
        self.results: Dict[int, subprocess.CompletedProcess] = {}

    def run_through(self, index: int) -> subprocess.CompletedProcess:
        for block in BLOCKS[: index + 1]:
            if block.index in self.results or block.lang not in RUNNABLE or block.code == SETUP:
                continue
            if block.lang == "python":
                script = self.directory / f".block{block.index}.py"
                script.write_text(block.code, encoding="utf-8")
                argv = [sys.executable, script.name]
            else:
                argv = ["bash", "-e", "-u", "-o", "pipefail", "-c", block.code]
            self.results[block.index] = subprocess.run(
                argv, cwd=self.directory, env=self.env, capture_output=True, text=True, timeout=TIMEOUT_S
            )
        return self.results[index]


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory) -> ReadmeRun:
    # The blocks load the digits dataset, which scikit-learn bundles (the "datasets" extra).
    pytest.importorskip("sklearn", reason="the README's blocks load the digits dataset: pip install '.[datasets]'")
    return ReadmeRun(tmp_path_factory.mktemp("readme"))


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang in RUNNABLE], ids=lambda b: b.id)
def test_block_runs_as_written(block: Block, readme_run: ReadmeRun):
    if block.code == SETUP:
        pytest.skip("the set-up commands are what CI runs itself (.ci/run); they install packages as root")
    result = readme_run.run_through(block.index)
    assert result.returncode == 0, (
        f"README.md:{block.line}: the {block.lang} block exited with {result.returncode}\n"
        f"--- stdout (end) ---\n{result.stdout[-3000:]}\n--- stderr (end) ---\n{result.stderr[-3000:]}"
    )


# Issue #15: the docs are references, short enough to read.
@pytest.mark.parametrize("path, limit", [("README.md", 150), ("docs/performance.md", 400)])
def test_doc_is_under_its_length_limit(path: str, limit: int):
    lines = len((ROOT / path).read_text(encoding="utf-8").splitlines())
    assert lines < limit, f"{path} has {lines} lines; issue #15 asks for under {limit}"
