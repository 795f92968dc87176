"""Package-wide conventions (STYLE.md): small constructors, documented modules, shapes in forward."""

import ast
import dataclasses
import importlib
import inspect
import pkgutil
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
from torch import nn

import torchrec_gnn

PACKAGE_DIR = Path(torchrec_gnn.__file__).parent
MAX_CONSTRUCTOR_ARGS = 5


def package_modules() -> List[str]:
    return [m.name for m in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="torchrec_gnn.") if m.name != "torchrec_gnn.__main__"]


def package_nn_modules() -> Iterator[Tuple[str, type]]:
    for name in package_modules():
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__ == name:
                yield f"{name}.{attr}", obj


def test_every_nn_module_has_at_most_five_constructor_arguments() -> None:
    too_many = {}
    for qualname, cls in package_nn_modules():
        if not cls.__init__.__module__.startswith("torchrec_gnn"):
            continue  # a drop-in for a PyG or torch layer keeps its constructor (CSRSAGEConv)
        params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
        if len(params) > MAX_CONSTRUCTOR_ARGS:
            too_many[qualname] = [p.name for p in params]
    assert not too_many, f"use a config dataclass or a sub-module instead: {too_many}"
    assert len(list(package_nn_modules())) >= 10  # the check really sees the modules


# Plain classes over the limit: the PyG-facing ones keep PyG's signatures (a drop-in takes the
# same arguments).
WIDE_CONSTRUCTORS = {
    "torchrec_gnn.graph.sampler.NeighborSampler": "PyG's NeighborSampler arguments",
    "torchrec_gnn.pyg.loader.NeighborLoader": "PyG's NeighborLoader signature",
    "torchrec_gnn.pyg.loader.LinkNeighborLoader": "PyG's LinkNeighborLoader signature",
}


def package_plain_classes() -> Iterator[Tuple[str, type]]:
    """Classes that are neither nn.Modules, dataclasses nor exceptions."""
    for name in package_modules():
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if (inspect.isclass(obj) and obj.__module__ == name and not issubclass(obj, (nn.Module, BaseException))
                    and not dataclasses.is_dataclass(obj) and "__init__" in vars(obj)):
                yield f"{name}.{attr}", obj


def test_plain_classes_take_a_handful_of_arguments_or_a_config() -> None:
    wide = {}
    for qualname, cls in package_plain_classes():
        params = [p for p in inspect.signature(cls.__init__).parameters.values()
                  if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if len(params) > MAX_CONSTRUCTOR_ARGS + 1:
            wide[qualname] = [p.name for p in params]
    too_many = {name: params for name, params in wide.items() if name not in WIDE_CONSTRUCTORS}
    assert not too_many, f"group the settings in a dataclass config: {too_many}"
    assert set(wide) == set(WIDE_CONSTRUCTORS)  # no stale exception
    assert len(list(package_plain_classes())) >= 20  # the check really sees the classes


def _public_definitions(tree: ast.Module) -> Iterator[ast.AST]:
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and not node.name.startswith("_"):
            yield node


@pytest.mark.parametrize("path", sorted(PACKAGE_DIR.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE_DIR)))
def test_docstrings(path: Path) -> None:
    tree = ast.parse(path.read_text())
    if path.name != "__main__.py":
        assert ast.get_docstring(tree), f"{path}: module docstring missing"
    problems = []
    for node in _public_definitions(tree):
        doc = ast.get_docstring(node) or ""
        if not doc:
            problems.append(f"{node.name}: no docstring")
        if isinstance(node, ast.ClassDef):
            init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
            if init is not None and len(init.args.args) > 1 and "Args:" not in doc:
                problems.append(f"{node.name}: constructor takes arguments but the docstring has no Args section")
            forward = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "forward"), None)
            if forward is not None:
                forward_doc = ast.get_docstring(forward) or ""
                if "Returns:" not in forward_doc and "Returns:" not in doc:
                    problems.append(f"{node.name}.forward: no Returns section with shapes")
    assert not problems, f"{path}: {problems}"
