"""The API reference (docs/api, Sphinx) documents every public name of customml (issue #15).

Public: each name in the ``__all__`` of customml and of each public submodule (every
module of the package whose name has no leading underscore), except that a submodule whose
every name the package re-exports (customml.array, customml.models) is documented through
the package (``customml.Array``, ``customml.Sequential``). Every public module must declare
``__all__``.

Two checks:

- the pages' source: each public name has its ``auto*`` (or ``py:*``) directive, and
  nothing else is documented; no Sphinx needed, instant;
- the built reference: its object inventory (objects.inv) holds every public name, either
  under that name or, for a re-export documented with ``:no-index:`` (customml.load,
  customml.History, customml.callbacks.GradualPruning), under another public name of the
  same object. It uses the build in ``CUSTOMML_API_DOCS_HTML`` when set (.ci/run builds
  first), else builds the reference itself (warnings as errors, about 5 s) when Sphinx is
  installed (``pip install ".[docs]"``), else skips.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
import zlib
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Set

import pytest

import customml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "api"

_DIRECTIVE = re.compile(
    r"^\.\. (?P<kind>auto(?:module|class|exception|function|decorator|data|attribute|method|property)"
    r"|py:(?:module|currentmodule|class|exception|function|decorator|data|attribute|method|property)"
    r"|module|currentmodule)::\s*(?P<name>\S+)\s*$"
)
_SETS_MODULE = ("automodule", "py:module", "module", "py:currentmodule", "currentmodule")


def public_modules() -> Dict[str, ModuleType]:
    """Dotted name -> module, for customml and each submodule the reference documents."""
    out = {"customml": customml}
    for info in pkgutil.iter_modules(customml.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"customml.{info.name}")
        assert hasattr(module, "__all__"), (
            f"customml.{info.name} is public (no leading underscore) but declares no __all__: "
            "list its public names, or rename it with a leading underscore"
        )
        if all(getattr(customml, n, None) is getattr(module, n) for n in module.__all__):
            continue  # re-exported wholesale: documented as customml.<name>
        out[module.__name__] = module
    return out


def public_names() -> Set[str]:
    """Every public dotted name: the modules, and each name in each one's __all__."""
    names = set()
    for module_name, module in public_modules().items():
        names.add(module_name)
        names.update(f"{module_name}.{n}" for n in module.__all__)
    return names


def documented(docs: Path = DOCS) -> Dict[str, List[str]]:
    """Dotted name -> the places ("page.rst:line") that document it, from every page's
    directives; each name is qualified by the module the page is in at that point."""
    found: Dict[str, List[str]] = {}
    for page in sorted(docs.glob("*.rst")):
        module = None
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            match = _DIRECTIVE.match(line)
            if not match:
                continue
            kind, name = match.group("kind"), match.group("name")
            if kind in _SETS_MODULE:
                module = name
                if kind in ("py:currentmodule", "currentmodule"):
                    continue
            elif not name.startswith("customml"):
                assert module, f"{page.name}:{number}: {name} comes before any module directive"
                name = f"{module}.{name}"
            found.setdefault(name, []).append(f"{page.name}:{number}")
    return found


def test_the_pages_document_every_public_name_and_nothing_else():
    public, docs = public_names(), documented()
    missing = sorted(public - set(docs))
    assert not missing, (
        f"public names missing from the API reference: {missing}. Add a directive for each to "
        "its module's page in docs/api (e.g. '.. autofunction:: name'; a second listing of an "
        "object documented elsewhere takes ':no-index:')"
    )
    extra = {name: places for name, places in docs.items() if name not in public}
    assert not extra, (
        f"the API reference documents names that are not public (in no __all__): {extra}; "
        "remove them from docs/api or add them to their module's __all__"
    )


def test_every_page_is_reachable_from_the_index():
    index = (DOCS / "index.rst").read_text(encoding="utf-8")
    listed = set(re.findall(r"^   ([\w.]+)\s*$", index, flags=re.M))
    pages = {p.stem for p in DOCS.glob("*.rst")} - {"index"}
    assert pages <= listed, f"pages not in index.rst's toctrees: {sorted(pages - listed)}"


def read_inventory(path: Path) -> Set[str]:
    """The Python object names of a Sphinx objects.inv (version 2: four header lines, then
    zlib'd lines "name domain:role priority uri dispname")."""
    data = path.read_bytes()
    header = data.split(b"\n", 4)
    assert header[0] == b"# Sphinx inventory version 2", header[0]
    names = set()
    for line in zlib.decompress(header[4]).decode("utf-8").splitlines():
        name, role = line.split(" ", 2)[:2]
        if role.startswith("py:"):
            names.add(name)
    return names


def _resolve(name: str):
    module, _, attr = name.rpartition(".")
    if not module or name in public_modules():
        return importlib.import_module(name)
    return getattr(importlib.import_module(module), attr)


def _aliasable(obj) -> bool:
    return inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isroutine(obj)


@pytest.fixture(scope="module")
def built_reference(tmp_path_factory) -> Path:
    given = os.environ.get("CUSTOMML_API_DOCS_HTML")
    if given:
        return Path(given)
    pytest.importorskip("sphinx", reason='Sphinx is the optional extra customml[docs]: pip install ".[docs]"')
    out = tmp_path_factory.mktemp("api-docs")
    # The build imports the customml this test imported.
    package_parent = str(Path(inspect.getfile(customml)).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])))
    run = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, f"the API reference build failed (warnings are errors):\n{run.stdout}{run.stderr}"
    return out


def test_the_built_reference_holds_every_public_name(built_reference):
    inventory = read_inventory(built_reference / "objects.inv")
    # A re-exported class, function or module may be indexed under its other public name;
    # a constant (an int may be another constant's object) only under its own.
    aliased = {id(_resolve(name)) for name in inventory & public_names()}
    missing = sorted(
        name
        for name in public_names()
        if name not in inventory and not (_aliasable(_resolve(name)) and id(_resolve(name)) in aliased)
    )
    assert not missing, f"public names the built reference does not document: {missing}"
