"""Dependencies point one way and names live once: checked on the source, with the ast module."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "vstain"
MAGNIFICATIONS = {"20x", "40x", "60x"}
TARGETS = {"nuclei", "lipids", "cytoplasm"}
SUBSETS = {"train", "validation", "test", "calibration"}


def modules() -> list[tuple[str, ast.Module]]:
    return [(path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(), str(path)))
            for path in sorted(PACKAGE.rglob("*.py"))]


def imported_modules(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_library_code_never_imports_the_commands():
    offenders = [
        f"{name} imports {module}"
        for name, tree in modules()
        if not name.startswith("commands/") and name != "cli.py"
        for module in imported_modules(tree)
        if module == "vstain.commands" or module.startswith("vstain.commands.")
    ]
    assert offenders == []


def test_the_check_sees_an_import_of_the_commands():
    tree = ast.parse("from vstain.commands.evaluate import run\nimport vstain.commands.demo as d\n")
    assert {"vstain.commands.evaluate", "vstain.commands.demo"} <= imported_modules(tree)


def _constant_strings(node: ast.AST) -> set[str]:
    return {e.value for e in getattr(node, "elts", ()) if isinstance(e, ast.Constant) and isinstance(e.value, str)}


def spelled_out_lists(tree: ast.Module, names: set[str]) -> list[int]:
    """Lines where a tuple/list/set literal (argparse choices, ``Literal[...]``) lists two or more of ``names``."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(_constant_strings(node) & names) >= 2:
            lines.append(node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if any(f"{a}|{b}" in node.value for a in names for b in names if a != b):  # a regex alternation
                lines.append(node.lineno)
    return lines


#: (module, kind) pairs whose lists are other things with the same names.
NOT_VOCABULARY = {
    ("demo/summary.py", "targets"): "CellProfiler object groups (nuclei, cells, lipids), not stains",
}


def test_magnifications_targets_and_subsets_are_spelled_out_only_in_the_vocabulary():
    found = {
        f"{name}:{line} ({kind})"
        for name, tree in modules()
        if name != "vocabulary.py"
        for kind, names in (("magnifications", MAGNIFICATIONS), ("targets", TARGETS), ("subsets", SUBSETS))
        if (name, kind) not in NOT_VOCABULARY
        for line in spelled_out_lists(tree, names)
    }
    assert found == set()


def test_the_vocabulary_check_sees_choices_literals_and_regexes():
    source = ('a = ("20x", "40x", "60x")\nb: Literal["nuclei", "lipids"]\nc = re.compile(r"^(20x|40x)_images$")\n'
              'd = {"20x": 1, "40x": 2}\n')
    tree = ast.parse(source)
    assert spelled_out_lists(tree, MAGNIFICATIONS) == [1, 3]
    assert spelled_out_lists(tree, TARGETS) == [2]
