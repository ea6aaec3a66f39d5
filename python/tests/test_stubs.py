"""The type stubs of the extension module (``_datafusion_bam.pyi``) against the module itself:
every class and function the extension has is declared, with the parameters it takes, and the
stubs declare nothing it lacks."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import datafusion_bam
from datafusion_bam import _datafusion_bam as extension

STUBS = Path(datafusion_bam.__file__).with_name("_datafusion_bam.pyi")


def _stub_functions() -> dict[str, list[str]]:
    """Top-level functions, class constructors and constants of the stubs, with the functions'
    parameter names."""
    tree = ast.parse(STUBS.read_text())
    declared: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            declared[node.name] = [a.arg for a in node.args.args + node.args.kwonlyargs]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            declared[node.target.id] = []
        elif isinstance(node, ast.ClassDef):
            init = next((f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
            args = [] if init is None else [a.arg for a in init.args.args[1:] + init.args.kwonlyargs]
            declared[node.name] = args
    return declared


def _extension_parameters(obj: object) -> list[str] | None:
    """The parameter names pyo3 records for a function or a class's constructor."""
    try:
        signature = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return [name for name in signature.parameters if name != "self"]


def test_the_stubs_declare_the_extension() -> None:
    declared = _stub_functions()
    public = {name for name in dir(extension) if not name.startswith("_")}
    assert public == set(declared), (
        f"missing from the stubs: {sorted(public - set(declared))}; "
        f"not in the extension: {sorted(set(declared) - public)}"
    )
    checked = 0
    for name, parameters in declared.items():
        found = _extension_parameters(getattr(extension, name))
        if found is None or (not found and parameters):
            continue  # constants and exception classes: no recorded signature
        assert found == parameters, f"{name}: the extension takes {found}, the stubs declare {parameters}"
        checked += 1
    assert checked >= 10, f"only {checked} signatures compared"
