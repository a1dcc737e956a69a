"""Dependencies point one way: checked on every ``import`` of the package's source, lazy ones included.

* benchmarks sit on top: nothing outside ``vstain.bench`` imports it;
* ``inference`` does not import ``losses``, ``evaluation`` or ``synth`` (training meets inference
  only through the model bundle; benchmarks of both live in ``bench``);
* ``evaluation`` does not import ``synth`` (the synthetic benchmark field lives in ``bench``);
* ``alignment`` imports neither torch nor the packages that use its offsets.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "vstain"

#: (package whose modules are checked, packages they must not import)
FORBIDDEN = [
    ("vstain.inference", ("vstain.losses", "vstain.evaluation", "vstain.synth", "vstain.bench",
                          "vstain.uncertainty")),
    ("vstain.evaluation", ("vstain.synth", "vstain.bench", "vstain.uncertainty")),
    # calibration sits on inference and evaluation; neither knows it (coverage lives in evaluation)
    ("vstain.uncertainty", ("vstain.training", "vstain.data", "vstain.synth", "vstain.bench", "vstain.commands")),
    # offsets are plate data: no torch, no training or inference (both read the offsets table)
    ("vstain.alignment", ("torch", "vstain.data", "vstain.training", "vstain.inference", "vstain.bench")),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, package: str) -> set[str]:
    """Every module ``source`` imports, at any depth (function-level imports too), as absolute
    names; relative imports are resolved against ``package`` (the importing module's package)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            names.add(origin)
            names.update(f"{origin}.{alias.name}" for alias in node.names)
    return names


def imports_of(path: Path) -> set[str]:
    """:func:`imported_modules` of one source file of the package."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return imported_modules(path.read_text(encoding="utf-8"), package)


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


MODULES = sorted(SOURCE.rglob("*.py"))


def test_the_source_tree_is_found():
    names = {module_name(path) for path in MODULES}
    assert {"vstain.inference.engine", "vstain.evaluation.table", "vstain.bench.training"} <= names


@pytest.mark.parametrize("package, forbidden", FORBIDDEN)
def test_package_does_not_import(package, forbidden):
    offenders = [
        f"{module_name(path)} imports {name}"
        for path in MODULES if _within(module_name(path), package)
        for name in sorted(imports_of(path))
        if any(_within(name, other) for other in forbidden)
    ]
    assert offenders == []


def test_nothing_imports_the_benchmarks():
    offenders = [
        f"{module_name(path)} imports {name}"
        for path in MODULES
        if not _within(module_name(path), "vstain.bench") and module_name(path) != "vstain.commands.bench"
        for name in sorted(imports_of(path))
        if _within(name, "vstain.bench")
    ]
    assert offenders == []


def test_the_checker_sees_lazy_relative_and_aliased_imports():
    source = (
        "import numpy as np\n"
        "import vstain.synth.field as synthetic\n"
        "def f():\n"
        "    from vstain.losses import build_loss\n"
        "    from . import tiler\n"
        "    from ..evaluation.table import FeatureTable\n"
    )
    names = imported_modules(source, "vstain.inference")
    assert {"numpy", "vstain.synth.field", "vstain.losses", "vstain.losses.build_loss", "vstain.inference.tiler",
            "vstain.evaluation.table.FeatureTable"} <= names
