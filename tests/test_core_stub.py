"""python/customml/_core.pyi, the stub mypy reads for the compiled module, matches the
binding: every public function, class and method of ``customml._core`` is in it, and
each signature has the binding's parameters (names, order, positional or keyword-only,
which have defaults). Types are not compared (the binding's ``SupportsFloat |
SupportsIndex`` is the stub's ``float``, its ``object`` an array type); mypy.stubtest
(run by .ci/run) checks the rest, but cannot read pybind11 signatures, which live only in
the docstrings (``name(a: int, *, b: str = 'cpu') -> None``, one numbered line per
overload).
"""

from __future__ import annotations

import ast
import functools
import inspect
import pathlib
import re
from typing import Dict, List, Tuple

import pytest

from customml import _core

STUB = pathlib.Path(__file__).resolve().parent.parent / "python" / "customml" / "_core.pyi"

# (name, kind, has a default) per parameter, self left out; kind is "arg" or "kwonly".
Signature = Tuple[Tuple[str, str, bool], ...]


def _signature(args: ast.arguments, method: bool) -> Signature:
    positional = list(args.posonlyargs) + list(args.args)
    defaults = [False] * (len(positional) - len(args.defaults)) + [True] * len(args.defaults)
    params = [(a.arg, "arg", d) for a, d in zip(positional, defaults)]
    params += [(a.arg, "kwonly", d is not None) for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    return tuple(params[1:] if method else params)


def _binding_signatures(name: str, obj: object, method: bool) -> List[Signature]:
    """The signatures in a pybind11 docstring, parsed as Python (their annotations and
    defaults are Python expressions)."""
    found = []
    for line in (obj.__doc__ or "").splitlines():
        m = re.match(rf"^(?:\d+\. )?{re.escape(name)}(\(.*\)) -> .+$", line)
        if m:
            tree = ast.parse(f"def f{m.group(1)}: ...")
            found.append(_signature(tree.body[0].args, method))
    return found


@functools.cache
def _stub() -> Dict[str, List[Signature]]:
    """Dotted name (``f``, ``Class``, ``Class.method``) -> its signatures in the stub
    (properties and classes map to no signature)."""
    out: Dict[str, List[Signature]] = {}

    def visit(body: List[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef):
                sigs = out.setdefault(prefix + node.name, [])
                if not any(isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list):
                    sigs.append(_signature(node.args, method=bool(prefix)))
            elif isinstance(node, ast.ClassDef):
                out.setdefault(prefix + node.name, [])
                visit(node.body, prefix + node.name + ".")
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                out.setdefault(prefix + node.target.id, [])

    visit(ast.parse(STUB.read_text()).body, "")
    return out


@functools.cache
def _binding() -> Dict[str, List[Signature]]:
    """The same map for the compiled module: its functions, classes, their methods and
    properties (pybind11's own members left out)."""
    out: Dict[str, List[Signature]] = {}
    for name, obj in vars(_core).items():
        if name.startswith("__"):
            continue
        if inspect.isclass(obj):
            out[name] = []
            if issubclass(obj, BaseException):
                continue
            for member, attr in vars(obj).items():
                if (
                    member.startswith("_")
                    and member != "__init__"
                    and not member.startswith("__dlpack")
                    and member not in ("__array__", "__cuda_array_interface__")
                ):
                    continue
                if member == "__init__" and not _binding_signatures("__init__", attr, method=True):
                    continue  # no constructor bound (PackedS8, PackedCsr)
                out[f"{name}.{member}"] = (
                    [] if isinstance(attr, property) else _binding_signatures(member, attr, method=True)
                )
        elif callable(obj):
            out[name] = _binding_signatures(name, obj, method=False)
        else:
            out[name] = []
    return out


def test_stub_names_the_binding():
    stub, binding = _stub(), _binding()
    assert sorted(set(binding) - set(stub)) == [], "in _core but not in _core.pyi"
    # The stub's private helpers (underscored, type-checking only) exist nowhere at run time.
    extra = [
        n
        for n in set(stub) - set(binding)
        if not n.split(".")[-1].startswith("_") and not n.split(".")[0].startswith("_")
    ]
    assert sorted(extra) == [], "in _core.pyi but not in _core"


@pytest.mark.parametrize("name", sorted(n for n, sigs in _binding().items() if sigs))
def test_stub_signature_matches_the_binding(name):
    stub = _stub()
    assert name in stub, f"{name} missing from _core.pyi"
    # Overloads that differ only in types (OptimizerConfig: SgdConfig or AdamConfig) are one Union in the stub.
    assert sorted(set(stub[name])) == sorted(set(_binding()[name]))
