"""The Slicer module's files, checked without Slicer: CMake lists in sync with the files on disk,
the .ui parses and has every widget the module uses, the catalog entry is complete."""

import ast
import json
import re
import xml.etree.ElementTree as ET

from conftest import REPO

MODULE = REPO / "TuckerSegment"


def _cmake_list(text, variable):
    block = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S).group(1)
    return {
        line.strip().replace("${MODULE_NAME}", "TuckerSegment")
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith("#")
    }


def test_cmake_lists_every_python_file_and_resource():
    text = (MODULE / "CMakeLists.txt").read_text()
    scripts = _cmake_list(text, "MODULE_PYTHON_SCRIPTS")
    on_disk = {"TuckerSegment.py"} | {
        str(p.relative_to(MODULE)) for p in (MODULE / "TuckerSegmentLib").rglob("*.py")
    }
    assert scripts == on_disk
    resources = _cmake_list(text, "MODULE_PYTHON_RESOURCES")
    models = MODULE / "TuckerSegmentLib" / "demo" / "models"
    on_disk = {
        str(p.relative_to(MODULE))
        for folder in (MODULE / "Resources", models)
        for p in folder.rglob("*")
        if p.is_file()
    }
    assert resources == on_disk
    assert "WITH_GENERIC_TESTS" in text


def test_top_level_cmake_has_the_extension_metadata():
    text = (REPO / "CMakeLists.txt").read_text()
    for key in (
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CATEGORY",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
        "EXTENSION_DEPENDS",
    ):
        assert re.search(rf"set\({key} \S", text), key
    assert "add_subdirectory(TuckerSegment)" in text


def test_ui_has_every_widget_the_module_uses():
    tree = ET.parse(MODULE / "Resources" / "UI" / "TuckerSegment.ui")
    names = {w.get("name") for w in tree.iter("widget")}
    source = (MODULE / "TuckerSegment.py").read_text()
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    assert used, "the module uses widgets through self.ui"
    assert used <= names, used - names


def test_module_is_thin_and_parses():
    tree = ast.parse((MODULE / "TuckerSegment.py").read_text())
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert classes == {
        "TuckerSegment",
        "TuckerSegmentWidget",
        "TuckerSegmentLogic",
        "TuckerSegmentTest",
    }


def test_lib_never_imports_slicer_or_qt_at_import_time():
    for path in (MODULE / "TuckerSegmentLib").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                assert not any(m.split(".")[0] in ("slicer", "qt", "vtk") for m in modules), path


def test_catalog_entry():
    entry = json.loads((REPO / "Resources" / "TuckerSegment.json").read_text())
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.1.json#")
    for key in ("category", "scm_url", "scm_revision", "build_dependencies", "tier"):
        assert key in entry
