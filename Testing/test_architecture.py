"""The package's rooms keep their doors: the engine depends on torch and tensorly only, the seam
to TotalSegmentator and nnU-Net is the only room that names them, and no public function name
means two things."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import REPO

LIB = REPO / "TuckerSegment" / "TuckerSegmentLib"
ROOMS = (
    "engine",
    "ts",
    "storage",
    "runtime",
    "pipeline",
    "panel",
    "cli",
    "demo",
    "finetune",
    "cohort",
    "review",
)


def _imports(path: Path) -> list[str]:
    """Absolute names of every import in ``path`` except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    package = ["TuckerSegmentLib", *path.relative_to(LIB).parent.parts]
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for n in ast.walk(node)
    }
    names = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                names.append(".".join([*base, node.module] if node.module else base))
            else:
                names.append(node.module or "")
    return names


def _room_files(room: str) -> list[Path]:
    return sorted((LIB / room).rglob("*.py"))


def test_every_module_lives_in_a_room():
    loose = {p.name for p in LIB.glob("*.py")}
    assert loose == {"__init__.py", "__main__.py", "errors.py"}
    assert {p.name for p in LIB.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(ROOMS)


def test_the_engine_needs_only_torch_and_tensorly():
    # torch_pruning: DepGraph for structured pruning (prune.py), instead of graph surgery
    allowed_third_party = {"torch", "tensorly", "numpy", "torch_pruning"}
    for path in _room_files("engine"):
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "TuckerSegmentLib":
                assert name.startswith(("TuckerSegmentLib.engine", "TuckerSegmentLib.errors")), (
                    path.name,
                    name,
                )
            else:
                assert top in allowed_third_party or _is_stdlib(top), (path.name, name)


@pytest.mark.parametrize("room", [r for r in ROOMS if r != "ts"])
def test_only_the_seam_names_totalsegmentator_and_nnunet(room):
    """Everything of TotalSegmentator's and nnU-Net's goes through TuckerSegmentLib.ts."""
    for path in _room_files(room):
        for name in _imports(path):
            top = name.split(".")[0]
            assert top not in {"totalsegmentator", "nnunetv2", "dynamic_network_architectures"}, (
                f"{path.relative_to(LIB)} imports {name}"
            )


def test_no_public_function_name_means_two_things():
    where = defaultdict(list)
    for path in LIB.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                where[node.name].append(str(path.relative_to(LIB)))
    twice = {name: files for name, files in where.items() if len(files) > 1 and name != "main"}
    assert twice == {}


def _is_stdlib(name: str) -> bool:
    import sys

    return name in sys.stdlib_module_names or name == "__future__"
