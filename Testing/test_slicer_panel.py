"""TuckerSegment.py checked against 3D Slicer's own rules without Slicer (it cannot be installed
here): every bound parameter-node field has a type Slicer's GUI connector for that widget class
accepts; the file parses as Python 3.9 and refuses Slicer < 5.10 with a message before importing
TuckerSegmentLib; the self-test cleans up and fails when it cannot run."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET

import pytest
from conftest import REPO

MODULE = REPO / "TuckerSegment"
SOURCE = (MODULE / "TuckerSegment.py").read_text()
TREE = ast.parse(SOURCE)
UI = ET.parse(MODULE / "Resources" / "UI" / "TuckerSegment.ui")

# Slicer's parameterNodeWrapper GUI connectors: widget classes -> what a field must be.
# Base/Python/slicer/parameterNodeWrapper/guiConnectors.py @ v5.10.0 (same rules in v5.12.3):
#   :165      QCheckBox, ctkCheckBox: bool
#   :279,306  QSpinBox, QSlider: int (QSlider also needs bounds)
#   :343-380  QDoubleSpinBox, ctkSliderWidget, ...: float (or int, 5.10+) with WithinRange or
#             Minimum+Maximum, else "unbounded" RuntimeError
#   :421-431  QComboBox, ctkComboBox: int/float/str/bool only with a Choice annotation, else
#             "requires the Choice annotation" RuntimeError; :435-442 the items become the choices
#   :469      QComboBox, ctkComboBox: an Enum
#   :518      QLineEdit: str
#   :748      qMRMLNodeComboBox: a vtkMRML...Node class (or a Union of them)
# validators.py @ v5.10.0:135-137: a Choice default outside the choices raises ValueError.
CONNECTORS = {
    "QCheckBox": "bool",
    "ctkCheckBox": "bool",
    "QSpinBox": "int",
    "QSlider": "bounded int",
    "QDoubleSpinBox": "bounded float",
    "ctkSliderWidget": "bounded float",
    "QComboBox": "choice",
    "ctkComboBox": "choice",
    "QLineEdit": "str",
    "qMRMLNodeComboBox": "node",
}


def _constants() -> dict:
    """Module-level list/str constants of TuckerSegment.py (the Choice lists), and the shared
    values it imports from TuckerSegmentLib."""
    from TuckerSegmentLib.engine.fidelity import DEFAULT_DF

    values = {"DEFAULT_DF": DEFAULT_DF}
    for node in TREE.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return values


def _evaluate(node: ast.AST, constants: dict):
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        return constants[node.value.id][ast.literal_eval(node.slice)]
    if isinstance(node, ast.Name):
        return constants[node.id]
    return ast.literal_eval(node)


def _parameter_fields() -> dict[str, tuple[str, dict, object]]:
    """field -> (base type, {annotation name: arguments}, default)."""
    constants = _constants()
    wrapper = next(
        n
        for n in ast.walk(TREE)
        if isinstance(n, ast.ClassDef) and n.name == "TuckerSegmentParameterNode"
    )
    fields = {}
    for stmt in wrapper.body:
        if not isinstance(stmt, ast.AnnAssign):
            continue
        annotation, extras = stmt.annotation, {}
        if (
            isinstance(annotation, ast.Subscript)
            and getattr(annotation.value, "id", "") == "Annotated"
        ):
            base, *metadata = annotation.slice.elts
            for item in metadata:
                extras[item.func.id] = [_evaluate(a, constants) for a in item.args]
            annotation = base
        default = _evaluate(stmt.value, constants) if stmt.value is not None else None
        fields[stmt.target.id] = (ast.unparse(annotation), extras, default)
    return fields


def _bound_widgets() -> dict[str, str]:
    """SlicerParameterName -> widget class, from the .ui."""
    bound = {}
    for widget in UI.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = widget.get("class")
    return bound


def _accepts(rule: str, base: str, extras: dict, default) -> str | None:
    """None if Slicer's connector accepts the field, else why not."""
    bounded = "WithinRange" in extras or {"Minimum", "Maximum"} <= set(extras)
    if rule == "bool":
        return None if base == "bool" else f"{base} is not bool"
    if rule == "int":
        return None if base == "int" else f"{base} is not int"
    if rule == "bounded int":
        return None if base == "int" and bounded else "needs a bounded int"
    if rule == "bounded float":
        if base != "float":
            return f"{base} is not float"
        if not bounded:
            return "unbounded float (RuntimeError in connectGui)"
        low, high = extras.get("WithinRange", [None, None])
        return None if low is None or low <= default <= high else "default outside the range"
    if rule == "choice":
        if "Choice" not in extras:
            return "a QComboBox needs a Choice annotation (RuntimeError in connectGui)"
        choices = extras["Choice"][0]
        return None if default in choices else f"default {default!r} is not a choice"
    if rule == "str":
        return None if base == "str" else f"{base} is not str"
    if rule == "node":
        return None if re.fullmatch(r"vtkMRML\w+Node", base) else f"{base} is not an MRML node"
    return f"no connector rule {rule}"


def test_every_bound_field_has_a_type_slicers_connector_accepts():
    fields, bound = _parameter_fields(), _bound_widgets()
    assert set(bound) <= set(fields), set(bound) - set(fields)
    assert {"inputVolume", "df", "precision", "quality", "method", "compare"} <= set(bound)
    problems = {}
    for name, widget_class in bound.items():
        base, extras, default = fields[name]
        why = _accepts(CONNECTORS[widget_class], base, extras, default)
        if why:
            problems[name] = f"{widget_class}: {why}"
    assert problems == {}


def test_unbound_fields_are_the_ones_the_panel_sets_itself():
    assert set(_parameter_fields()) - set(_bound_widgets()) == {
        "recommendationApplied",
        "roiSubset",  # the structure picker's checked rows (onStructureChecked)
    }


def test_the_connector_rules_reject_what_slicer_rejects():
    """The table above is not vacuous: the old panel's plain-str combo fields fail it."""
    assert _accepts("choice", "str", {}, "fp32") is not None
    assert _accepts("bounded float", "float", {}, 0.3) is not None
    assert _accepts("choice", "str", {"Choice": [["a", "b"]]}, "c") is not None
    assert _accepts("choice", "str", {"Choice": [["a", "b"]]}, "a") is None


def _annotation_unions(tree: ast.AST) -> list[ast.BinOp]:
    """``X | Y`` inside annotations (a flag union such as item.flags() | Qt.X is fine on 3.9)."""
    annotations = [n.annotation for n in ast.walk(tree) if isinstance(n, (ast.AnnAssign, ast.arg))]
    annotations += [n.returns for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    return [
        n
        for a in annotations
        if a is not None
        for n in ast.walk(a)
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr)
    ]


def test_module_parses_as_python_3_9():
    ast.parse(SOURCE, feature_version=(3, 9))
    assert _annotation_unions(TREE) == [], "X | Y annotations fail at run time on Python 3.9"
    # the check finds them where they are, and leaves flag unions alone
    assert len(_annotation_unions(ast.parse("class P:\n    x: int | None = None\n"))) == 1
    assert _annotation_unions(ast.parse("def f(a: int = 1):\n    return a | 2\n")) == []


def _version_problem():
    namespace = {}
    code = [
        n
        for n in TREE.body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "").startswith("MINIMUM_")
    ]
    code += [n for n in TREE.body if isinstance(n, ast.FunctionDef) and n.name == "versionProblem"]
    exec(compile(ast.Module(body=code, type_ignores=[]), "TuckerSegment.py", "exec"), namespace)
    return namespace["versionProblem"]


@pytest.mark.parametrize(
    ("slicer_version", "python", "ok"),
    [
        ((5, 8), (3, 9), False),
        ((5, 9), (3, 9), False),
        ((5, 10), (3, 12), True),
        ((5, 12), (3, 12), True),
        ((5, 10), (3, 10), False),
    ],
)
def test_old_slicer_gets_a_message_not_a_traceback(slicer_version, python, ok):
    problem = _version_problem()(slicer_version, python)
    assert (problem is None) == ok
    if not ok:
        assert "TuckerSegment needs" in problem and "\n" not in problem


def test_version_is_checked_before_tuckersegmentlib_is_imported():
    """At module level TuckerSegmentLib is imported only inside the `VERSION_PROBLEM is None`
    block, which comes after the gate (its imports need Slicer 5.10's parameterNodeWrapper)."""
    names = [
        getattr(n.targets[0], "id", None) if isinstance(n, ast.Assign) else None for n in TREE.body
    ]
    gate = names.index("VERSION_PROBLEM")
    guarded = next(
        i
        for i, n in enumerate(TREE.body)
        if isinstance(n, ast.If) and "VERSION_PROBLEM is None" in ast.unparse(n.test)
    )
    assert gate < guarded
    for i, node in enumerate(TREE.body):
        if i == guarded or isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.ImportFrom):
                assert not (inner.module or "").startswith("TuckerSegmentLib"), ast.unparse(node)


def test_the_default_df_has_one_home():
    from TuckerSegmentLib.engine.fidelity import DEFAULT_DF

    assert _parameter_fields()["df"][2] == DEFAULT_DF
    assert "= DEFAULT_DF" in SOURCE and "WithinRange(0.05, 1.0)] = 0.3" not in SOURCE
    assert 0.05 <= DEFAULT_DF <= 1.0


def _method(class_name: str, method: str) -> ast.FunctionDef:
    cls = next(n for n in TREE.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    return next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == method)


def test_table_clicks_are_connected_once_in_setup():
    connects = [m.start() for m in re.finditer(r"agreementTableView\.clicked\.connect", SOURCE)]
    assert len(connects) == 1
    assert "agreementTableView.clicked.connect" in ast.unparse(
        _method("TuckerSegmentWidget", "setup")
    )
    clicked = ast.unparse(_method("TuckerSegmentWidget", "onTableRowClicked"))
    assert "mapToSource" in clicked  # the view sorts through a proxy model


def test_devices_are_detected_again_after_installing():
    segment = ast.unparse(_method("TuckerSegmentWidget", "onSegmentButton"))
    assert segment.index("ensureDependencies") < segment.index("startDeviceProbe")


def test_recommendation_goes_to_the_parameter_node_not_the_widgets():
    apply = ast.unparse(_method("TuckerSegmentWidget", "applyDevices"))
    assert "apply_recommendation(self._parameterNode" in apply
    assert "dfSlider.value =" not in SOURCE and "precisionComboBox.currentText =" not in SOURCE


def test_scene_close_and_cleanup_cancel_the_run():
    for method in ("onSceneStartClose", "cleanup"):
        assert "cancelRun()" in ast.unparse(_method("TuckerSegmentWidget", method))


def test_self_test_uses_only_what_slicer_has_and_fails_when_it_cannot_run():
    test = next(
        n for n in TREE.body if isinstance(n, ast.ClassDef) and n.name == "TuckerSegmentTest"
    )
    text = ast.unparse(test)
    assert "nibabel" not in text and "os.environ" not in text
    assert "weights_dir" in text  # the CLI option, not an environment variable for the session
    assert "self.assertTrue(models.is_dir()" in text  # fails instead of passing silently
    assert "addVolumeFromArray" in text


def test_lib_phantom_needs_no_nibabel_for_the_self_test():
    """Slicer's Python has no nibabel: the phantom must be made with it unimportable."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['nibabel'] = None\n"
        "from TuckerSegmentLib.demo.phantom import make_phantom\n"
        "p = make_phantom(7, spacing=3.0)\n"
        "assert p.ct.ndim == 3 and p.affine.shape == (4, 4)\n"
    )
    env = {"PYTHONPATH": str(MODULE), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


def test_minimum_version_is_stated_and_the_catalog_entry_is_valid():
    """The catalog entry has no free text (Slicer's schema forbids extra keys); the minimum is in
    README and the CMake description, and the entry goes to the 5.10+ index branches."""
    import json

    assert "3D Slicer 5.10" in (REPO / "README.md").read_text()
    assert "Requires 3D Slicer 5.10 or later" in (REPO / "CMakeLists.txt").read_text()
    entry = json.loads((REPO / "Resources" / "TuckerSegment.json").read_text())
    # Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json @ v5.10.0: additionalProperties
    # false, these properties, required $schema/category/scm_url
    allowed = {
        "$schema",
        "category",
        "scm_url",
        "scm_revision",
        "scm_type",
        "build_dependencies",
        "build_subdirectory",
        "enabled",
        "tier",
    }
    assert set(entry) <= allowed and {"$schema", "category", "scm_url"} <= set(entry)


def test_requirements_file_ships_with_the_module():
    cmake = (MODULE / "CMakeLists.txt").read_text()
    assert "Resources/requirements.txt" in cmake
    assert "REQUIREMENTS_FILE" in SOURCE and "requirements.txt" in SOURCE


def test_the_task_choices_are_tss_open_ct_tasks():
    """The panel's task list is static (the module imports no TS before its first-use install);
    it must stay TotalSegmentator's own list of CT tasks that need no licence."""
    from TuckerSegmentLib.ts.tasks import open_ct_tasks

    assert _constants()["TASKS"] == open_ct_tasks()
    assert _parameter_fields()["task"][1]["Choice"][0][0] == "total"
