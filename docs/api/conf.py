"""Sphinx configuration of the API reference (docs/api).

Build it, warnings as errors, from the repository root with customml importable
(installed, or ``PYTHONPATH=python`` in a checkout with ``_core`` built in place)::

    python3 -m pip install ".[docs]"
    python3 -m sphinx -W --keep-going -b html docs/api build/docs

autodoc reads the docstrings of the imported package, so pybind11 signatures (customml.Array)
and re-exported names come out as Python sees them; napoleon reads NumPy-style sections
(Parameters, Returns) where a docstring has them. Every public name is listed by hand in
the pages (one ``auto*`` directive each); tests/test_api_docs.py checks the lists against
the ``__all__`` of customml and of each public submodule.
"""

import customml

project = "customml"
author = "the customml authors"
copyright = "the customml authors"
version = release = customml.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
exclude_patterns = ["_build"]

# The docstrings are prose with NumPy-style sections where they have any.
napoleon_google_docstring = False
napoleon_numpy_docstring = True

# Classes list every public method and property, documented or not (an undocumented one
# still shows its signature). Inherited members are left to the base class's entry (the
# "Bases:" line links it), except where the base is private: Sequential's fit and evaluate
# come from customml._trainer.Trainer, so its directive adds :inherited-members:.
autodoc_default_options = {
    "members": True,
    "undoc-members": True,
    "show-inheritance": True,
    "member-order": "bysource",
}
autodoc_preserve_defaults = True  # ``print_fn=print``, not ``<built-in function print>``
autodoc_typehints_format = "short"

# Every cross reference must resolve, except to NumPy and scikit-learn (third-party
# packages: no intersphinx, so that the build needs no network).
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(np|numpy|sklearn)(\..*)?"),
    # Opaque handles from the extension (ops.gemm_s8_pack's PackedS8, ops.sparse_pack's
    # PackedCsr): their docs are the ops that make and take them.
    (r"py:class", r"customml\._core\..*"),
]

html_theme = "alabaster"
html_title = f"customml {release} API reference"
html_show_sourcelink = False


def _private(cls) -> bool:
    return any(part.startswith("_") for part in cls.__module__.split(".")) or cls.__name__.startswith("_")


def public_modules():
    """The modules the reference documents: customml, then each submodule whose name has
    no leading underscore, except those whose every public name the package re-exports
    (customml.array, customml.models: documented as customml.Array, customml.Sequential)."""
    import importlib
    import pkgutil

    out = []
    for info in pkgutil.iter_modules(customml.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"customml.{info.name}")
        names = getattr(module, "__all__", [])
        if names and all(getattr(customml, n, None) is getattr(module, n) for n in names):
            continue
        out.append(module)
    return [customml] + out


def _public_homes():
    """Where each public class and function defined in a private module (customml._core,
    customml._history, customml._callback) is documented: customml.callbacks.History
    rather than customml._history.History. The first public module listing it wins, the
    submodules before the package (History: customml.callbacks, Array: customml)."""
    homes = {}
    modules = public_modules()
    for module in modules[1:] + modules[:1]:
        for attr in getattr(module, "__all__", []):
            obj = getattr(module, attr)
            if isinstance(getattr(obj, "__module__", None), str) and callable(obj) and _private(obj) \
                    and not obj.__name__.startswith("_"):
                homes.setdefault(obj, module.__name__)
    return homes


# The pages name objects as users import them; so do the "Bases:" lines and canonical names,
# which autodoc derives from __module__ (set here in the Sphinx process only).
for _obj, _home in _public_homes().items():
    _obj.__module__ = _home


def _public_bases(bases):
    """The bases, each private one (layers._Preprocessing, models' _trainer.Trainer,
    sklearn._BaseMLP) replaced by its own public bases, so that no private name reaches a
    page; pybind11's common base of bound classes (customml.Array's) is left out too."""
    out = []
    for base in bases:
        for b in (_public_bases(base.__bases__) if _private(base) else [base]):
            if b not in out and b is not object and b.__module__ != "pybind11_builtins":
                out.append(b)
    return out


def _process_bases(app, name, obj, options, bases):
    bases[:] = _public_bases(bases) or [object]


def _skip_foreign_members(app, what, name, obj, skip, options):
    """Skip class members that another package defines: scikit-learn puts its
    metadata-routing methods (set_fit_request, ...) on every estimator class, with
    docstrings in its own roles and references; their documentation is scikit-learn's."""
    target = obj.fget if isinstance(obj, property) else obj
    module = getattr(target, "__module__", None)
    if what == "class" and isinstance(module, str) and module.split(".")[0] not in ("customml", "builtins",
                                                                                    "pybind11_builtins"):
        return True
    return None


def _drop_builtin_docstrings(app, what, name, obj, options, lines):
    """A constant (``METHODS = (...)``) has no docstring of its own, and autodoc would show
    its type's (tuple's, int's); the page's text after the directive describes it instead."""
    if what in ("data", "attribute") and lines and type(obj).__module__ == "builtins" \
            and "\n".join(lines).strip() == (type(obj).__doc__ or "").strip():
        lines.clear()


def setup(app):
    app.connect("autodoc-process-bases", _process_bases)
    app.connect("autodoc-skip-member", _skip_foreign_members)
    app.connect("autodoc-process-docstring", _drop_builtin_docstrings)
