"""What the panel installs into 3D Slicer's Python: the pins, the constraints that freeze what
Slicer bundles, and (one test, marked ``package_index``) pip's real resolver on a stand-in of
Slicer 5.10's and 5.12's Python, followed by a CLI run that may import only what that leaves."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from conftest import GUARD_DIR, REPO, SEGMENT_CPU
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from TuckerSegmentLib.panel.install_plan import (
    TORCH_REQUIREMENT,
    TORCHVISION_REQUIREMENT,
    Pin,
    frozen_constraints,
    installed_distributions,
    missing,
    normalize,
    pip_commands,
    read_pins,
    torch_status,
)

REQUIREMENTS = REPO / "TuckerSegment" / "Resources" / "requirements.txt"
CI_CONSTRAINTS = REPO / ".ci" / "constraints.txt"
BUNDLED_FILE = Path(__file__).with_name("slicer_bundled_packages.json")
SLICER_VERSIONS = ("5.10", "5.12")
# never pinned by the panel: the PyTorch extension's packages and Slicer's own VTK/SimpleITK, and
# fury (TotalSegmentator's preview pictures; it asks for vtk<9.4, see requirements.txt)
NEVER_PINNED = {"torch", "torchvision", "vtk", "simpleitk", "fury"}
NEVER_PLANNED = {"torch", "torchvision", "vtk", "simpleitk", "numpy"}

PINS = read_pins(REQUIREMENTS)


def _read_ci_constraints() -> dict[str, str]:
    versions = {}
    for line in CI_CONSTRAINTS.read_text().splitlines():
        line = line.partition("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            versions[normalize(name)] = version
    return versions


CI_VERSIONS = _read_ci_constraints()
BUNDLED = {
    version: {name: entry["version"] for name, entry in entries["packages"].items()}
    for version, entries in json.loads(BUNDLED_FILE.read_text()).items()
    if not version.startswith("_")
}


# --- A. offline ---------------------------------------------------------------------------------


def test_every_pin_is_the_version_ci_tests():
    names = [normalize(p.name) for p in PINS]
    assert len(names) == len(set(names)), "a package is pinned twice"
    wrong = {
        p.name: (p.version, CI_VERSIONS.get(normalize(p.name)))
        for p in PINS
        if CI_VERSIONS.get(normalize(p.name)) != p.version and not p.slicer_pin
    }
    assert not wrong, f"requirements.txt vs .ci/constraints.txt (pin, CI): {wrong}"
    # a Slicer-only pin is a documented exception for a package CI also runs
    exceptions = {p.name: p.slicer_pin for p in PINS if p.slicer_pin}
    assert set(exceptions) == {"dicom2nifti"}, exceptions
    assert all(len(why) > 20 for why in exceptions.values())
    assert normalize("dicom2nifti") in CI_VERSIONS


def test_the_pytorch_extensions_versions_in_ci_are_in_the_tested_series():
    assert CI_VERSIONS["torch"] in SpecifierSet(TORCH_REQUIREMENT)
    assert CI_VERSIONS["torchvision"] in SpecifierSet(TORCHVISION_REQUIREMENT)
    assert torch_status(CI_VERSIONS["torch"]).ok


def test_totalsegmentator_alone_is_installed_without_dependencies():
    assert [p.requirement for p in PINS if p.no_deps] == ["TotalSegmentator==2.18.0"]


def test_the_bundled_package_list_covers_both_slicer_versions():
    assert set(BUNDLED) == set(SLICER_VERSIONS)
    for packages in BUNDLED.values():
        assert {"vtk", "simpleitk", "numpy", "scipy", "requests", "pydicom"} <= set(packages)
        assert all(name == normalize(name) for name in packages)


@pytest.mark.parametrize("slicer", SLICER_VERSIONS)
def test_no_pin_is_a_package_slicer_or_the_pytorch_extension_installs(slicer):
    pinned = {normalize(p.name) for p in PINS}
    assert not pinned & set(BUNDLED[slicer]), f"Slicer {slicer} bundles these"
    assert not pinned & NEVER_PINNED


def test_read_pins_parses_no_deps_and_refuses_anything_but_exact_pins(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("# a comment\n\nA_b.c==1.0  # no-deps\nd==2.0.post1 # just a note\n")
    assert read_pins(good) == [Pin("A_b.c", "1.0", no_deps=True), Pin("d", "2.0.post1")]
    for line in ("e>=1.0", "f", "g==1.0; python_version>'3'", "-r other.txt"):
        bad = tmp_path / "bad.txt"
        bad.write_text(line + "\n")
        with pytest.raises(ValueError, match="bad.txt:1"):
            read_pins(bad)


def test_normalize_matches_pep_503_names():
    assert normalize("Pillow") == normalize("pillow") == "pillow"
    assert normalize("scikit_image") == normalize("Scikit.Image") == "scikit-image"
    assert normalize("dynamic__network-.architectures") == "dynamic-network-architectures"


def test_installed_distributions_are_normalized_and_include_this_environment():
    found = installed_distributions()
    assert all(name == normalize(name) for name in found)
    assert found["torch"].startswith(CI_VERSIONS["torch"])
    assert found["tensorly"] == CI_VERSIONS["tensorly"]


def test_missing_lists_absent_pins_and_pins_at_another_version():
    pins = [Pin("Scikit_Image", "0.26.0"), Pin("nibabel", "5.4.2"), Pin("tqdm", "4.70.1")]
    installed = {"scikit-image": "0.26.0", "nibabel": "5.0.0"}
    assert missing(pins, installed) == pins[1:]
    assert missing(pins, {"scikit-image": "0.26.0", "nibabel": "5.4.2", "tqdm": "4.70.1"}) == []


def test_frozen_constraints_freeze_everything_installed_except_the_pins():
    installed = {
        "vtk": "9.5.2",
        "numpy": "2.0.2",
        "torch": "2.14.1+cu130",
        "nibabel": "5.0.0",  # one of ours at another version: pip may change it
        "scikit-image": "0.20.0",  # pinned as scikit-image; names compare normalized
    }
    text = frozen_constraints(installed, PINS)
    assert text.endswith("\n")
    assert text.splitlines() == ["numpy==2.0.2", "torch==2.14.1+cu130", "vtk==9.5.2"]
    # every package of a Slicer release is frozen, at exactly its bundled version
    lines = frozen_constraints(BUNDLED["5.10"], PINS).splitlines()
    assert lines == [f"{name}=={version}" for name, version in sorted(BUNDLED["5.10"].items())]


def test_pip_commands_install_the_no_deps_pins_first_then_the_rest_constrained(tmp_path):
    constraints = tmp_path / "constraints.txt"
    commands = pip_commands(PINS, constraints)
    assert commands[0] == ["install", "--no-deps", "TotalSegmentator==2.18.0"]
    assert commands[1] == [
        "install",
        "-c",
        str(constraints),
        *(p.requirement for p in PINS if not p.no_deps),
    ]
    assert len(commands) == 2
    assert pip_commands([Pin("a", "1")], constraints) == [
        ["install", "-c", str(constraints), "a==1"]
    ]
    assert pip_commands([Pin("a", "1", no_deps=True)], constraints) == [
        ["install", "--no-deps", "a==1"]
    ]
    assert pip_commands([], constraints) == []


@pytest.mark.parametrize("version", ["2.14.1+cu130", "2.14.0", "2.14.1", "2.14.2+cpu"])
def test_torch_in_the_tested_series_is_ok(version):
    status = torch_status(version)
    assert status.ok and status.installed == version
    assert version in status.message


@pytest.mark.parametrize("version", ["2.5.0", "2.13.0+cu121", "2.15.0", "3.14.1", "2.140.0", "x"])
def test_torch_outside_the_tested_series_names_the_tested_requirement(version):
    status = torch_status(version)
    assert not status.ok and status.installed == version
    assert version in status.message
    assert f"torch{TORCH_REQUIREMENT}" in status.message
    assert "PyTorch extension" in status.message


def test_no_torch_is_not_ok_and_names_the_pytorch_extension():
    status = torch_status(None)
    assert not status.ok and status.installed is None
    assert "not installed" in status.message
    assert f"torch{TORCH_REQUIREMENT}" in status.message and "PyTorch extension" in status.message


# --- B. pip's resolver on a stand-in of Slicer's Python (reaches the package index) -------------


def _env_without_guard() -> dict[str, str]:
    """This process's environment less the network guard: for pip, which must reach the index."""
    env = dict(os.environ)
    env.pop("TUCKERSEGMENT_NETWORK_GUARD", None)
    paths = [
        p
        for p in env.get("PYTHONPATH", "").split(os.pathsep)
        if p and Path(p).resolve() != GUARD_DIR.resolve()
    ]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    else:
        env.pop("PYTHONPATH", None)
    return env


def _pip(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def _pip_messages(result: subprocess.CompletedProcess) -> str:
    """pip's output without its notes on file indexes that lack a package."""
    lines = (result.stdout + result.stderr).splitlines()
    return "\n".join(line for line in lines if "is ignored: it is neither" not in line)[-8000:]


def _python_like_slicers() -> Path:
    """A Python 3.12 (Slicer 5.10 and 5.12 ship 3.12.10) where this machine has one (its pyenv
    versions), else this test run's own Python."""
    candidates = [
        shutil.which("python3.12"),
        *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12"))),
        "/usr/bin/python3.12",
    ]
    for candidate in filter(None, candidates):
        try:
            version = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            continue
        if version == "(3, 12)":
            return Path(candidate)
    return Path(sys.executable)


def _make_standin(folder: Path, packages: dict[str, str]) -> Path:
    """A Python environment holding only ``packages``, each a dist-info with METADATA and
    INSTALLER but no RECORD (how Slicer ships VTK: pip sees it but cannot uninstall it)."""
    subprocess.run(
        [str(_python_like_slicers()), "-m", "venv", "--without-pip", str(folder)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    python = folder / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    for name, version in packages.items():
        info = Path(site) / f"{normalize(name).replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "INSTALLER").write_text("pip\n")
    return python


def _torch_dependencies() -> set[str]:
    """torch, torchvision and what they require, as in this environment: what the PyTorch
    extension installs (with pip, dependencies included) before the panel's pip runs."""
    found: set[str] = set()
    todo = ["torch", "torchvision"]
    while todo:
        name = normalize(todo.pop())
        if name in found:
            continue
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue
        found.add(name)
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return found


@pytest.fixture(scope="module")
def package_index(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """pip's environment for the index, after checking that the index answers: TotalSegmentator
    is in no file index of this machine's pip configuration (tqdm is), so it comes from the index."""
    env = _env_without_guard()
    folder = tmp_path_factory.mktemp("index-probe")
    probe = _pip(
        "download",
        "--no-deps",
        "--retries",
        "1",
        "--timeout",
        "30",
        "-d",
        str(folder),
        "TotalSegmentator==2.18.0",
        env=env,
        timeout=180,
    )
    if probe.returncode != 0:
        pytest.skip(
            "the package index cannot be reached (pip download TotalSegmentator==2.18.0 failed):\n"
            + _pip_messages(probe)[-2000:]
        )
    return env


@pytest.fixture(scope="module")
def phantom_ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small phantom CT at 3 mm, written here so that the import-checked child reads it only."""
    import nibabel as nib
    from TuckerSegmentLib.demo.phantom import make_phantom

    ct, _ = make_phantom(7, spacing=3.0).to_nifti()
    path = tmp_path_factory.mktemp("plan-phantom") / "ct.nii.gz"
    nib.save(ct, str(path))
    return path


# Runs the CLI in a Python that can import only the distributions named in the JSON file of
# TUCKERSEGMENT_ONLY_DISTRIBUTIONS: pip's path finder is replaced by one that does not find a
# top-level module that installed distributions provide, none of them allowed (nor lists those
# distributions' metadata). Module level, so that nnU-Net's spawned workers get it too.
ONLY_THESE_DISTRIBUTIONS = '''
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import os
import re
import sys

CONFIG = os.environ["TUCKERSEGMENT_ONLY_DISTRIBUTIONS"]
with open(CONFIG) as handle:
    ALLOWED = set(json.load(handle))
OWNERS = importlib.metadata.packages_distributions()  # before the finder hides any metadata
LOG_REFUSED = True


def normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def outside(top):
    """True for a module that only distributions outside the allowed set provide."""
    if top in sys.stdlib_module_names:
        return False
    owners = OWNERS.get(top)
    return bool(owners) and not any(normalize(owner) in ALLOWED for owner in owners)


class OnlyAllowedPathFinder:
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        top = fullname.partition(".")[0]
        if outside(top):
            if LOG_REFUSED:
                with open(CONFIG + ".refused", "a") as log:
                    log.write(top + "\\n")
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, path, target)

    @classmethod
    def find_distributions(cls, *args, **kwargs):
        for dist in importlib.machinery.PathFinder.find_distributions(*args, **kwargs):
            if normalize(dist.metadata["Name"] or "") in ALLOWED:
                yield dist

    @classmethod
    def invalidate_caches(cls):
        importlib.machinery.PathFinder.invalidate_caches()


sys.meta_path[:] = [
    OnlyAllowedPathFinder if finder is importlib.machinery.PathFinder else finder
    for finder in sys.meta_path
]

if __name__ == "__main__":
    from TuckerSegmentLib.cli.main import main

    code = main(sys.argv[1:])
    LOG_REFUSED = False
    hidden = sorted(top for top in OWNERS if top.isidentifier() and outside(top))
    found = [top for top in hidden if importlib.util.find_spec(top) is not None]
    loaded = sorted({m.partition(".")[0] for m in list(sys.modules) if outside(m.partition(".")[0])})
    with open(CONFIG + ".report", "w") as handle:
        json.dump({"hidden": hidden, "found_anyway": found, "loaded": loaded}, handle)
    sys.exit(code)
'''


def _planned(report: Path) -> dict[str, str]:
    install = json.loads(report.read_text())["install"]
    return {normalize(i["metadata"]["name"]): i["metadata"]["version"] for i in install}


@pytest.mark.package_index
@pytest.mark.parametrize("slicer", SLICER_VERSIONS)
def test_pip_plans_only_additions_and_the_cli_runs_on_the_result(
    slicer, package_index, phantom_ct, isolated_home, tmp_path
):
    """pip's resolver, with the panel's exact commands, on a stand-in of Slicer's Python: every
    package Slicer bundles (per slicer_bundled_packages.json) plus the PyTorch extension's torch
    and torchvision, as dist-infos without RECORD. The stand-in runs Python 3.12 like Slicer's
    where this machine has one (pyenv's; printed below), else the CI's own Python 3.11 (then
    the resolver picks wheels for 3.11). pip must plan TotalSegmentator alone, then every other
    pin at its version and nothing Slicer bundles; then the CLI must segment with only the
    distributions that result: the stand-ins, torch's own dependencies (the PyTorch extension
    installs them with torch; taken from this environment's torch), the plan and tuckersegment.
    That run uses this environment's copies of those distributions, so it checks which
    distributions the CLI needs, not the versions pip picked for each Slicer."""
    standins = {**BUNDLED[slicer], "torch": CI_VERSIONS["torch"]}
    standins["torchvision"] = CI_VERSIONS["torchvision"]
    python = _make_standin(tmp_path / "slicer-python", standins)
    version = subprocess.run(
        [str(python), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
    ).stdout.strip()

    # pip sees the stand-ins as installed (offline, under the guard); the caller's own
    # PYTHONPATH stays out (a source tree there, with its egg-info, would be listed too)
    listed = _pip(
        "--disable-pip-version-check",
        "--python",
        str(python),
        "list",
        "--format",
        "json",
        env={**os.environ, "PYTHONPATH": str(GUARD_DIR)},
    )
    assert listed.returncode == 0, listed.stderr
    assert {normalize(d["name"]): d["version"] for d in json.loads(listed.stdout)} == standins

    constraints = tmp_path / "constraints.txt"
    constraints.write_text(frozen_constraints(standins, PINS))
    plans = []
    for number, command in enumerate(pip_commands(PINS, constraints)):
        report = tmp_path / f"plan{number}.json"
        plan = ["--python", str(python), *command, "--dry-run", "--report", str(report)]
        if _pip(*plan, "--quiet", env=package_index).returncode != 0:
            result = _pip(*plan, env=package_index)  # again, with pip's reasons
            pytest.fail(
                f"pip {' '.join(command)} on Slicer {slicer}'s packages failed:\n"
                + _pip_messages(result),
                pytrace=False,
            )
        plans.append(_planned(report))
    assert len(plans) == 2
    no_deps, resolved = plans

    assert no_deps == {"totalsegmentator": "2.18.0"}
    wanted = {normalize(p.name): p.version for p in PINS if not p.no_deps}
    assert {name: resolved.get(name) for name in wanted} == wanted
    assert not set(resolved) & set(BUNDLED[slicer]), f"would change what Slicer {slicer} bundles"
    assert not set(resolved) & NEVER_PLANNED
    assert not set(resolved) & set(standins)
    print(f"Slicer {slicer} stand-in on Python {version}: pip plans {len(resolved) + 1} installs:")
    for name, planned_version in sorted({**no_deps, **resolved}.items()):
        print(f"  {name}=={planned_version}")

    # the CLI runs with only what is there after the plan
    allowed = set(standins) | set(no_deps) | set(resolved) | _torch_dependencies()
    allowed.add("tuckersegment")
    config = tmp_path / "allowed.json"
    config.write_text(json.dumps(sorted(allowed)))
    script = tmp_path / "only_these_distributions.py"
    script.write_text(ONLY_THESE_DISTRIBUTIONS)
    out = tmp_path / "out.seg.nrrd"
    env = {
        **os.environ,  # the network guard stays on for this child and its workers
        **isolated_home,
        "TUCKERSEGMENT_CACHE": str(tmp_path / "cache"),  # compress here, not from the cache
        "TUCKERSEGMENT_ONLY_DISTRIBUTIONS": str(config),
    }
    run = subprocess.run(
        [sys.executable, str(script), *SEGMENT_CPU, "-i", str(phantom_ct), "-o", str(out)]
        + ["--fast", "--df", "0.5"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-6000:]
    import nibabel as nib
    import slicerio

    segmentation = slicerio.read_segmentation(str(out))
    assert segmentation["segments"]
    assert segmentation["voxels"].shape == nib.load(str(phantom_ct)).shape
    report = json.loads(Path(str(config) + ".report").read_text())
    assert report["loaded"] == [] and report["found_anyway"] == []
    assert "pytest" in report["hidden"], "the finder hides what the plan leaves out"
    refused = Path(str(config) + ".refused")
    print(f"CLI ran with {len(allowed)} distributions; hid {len(report['hidden'])} modules;")
    tried = sorted(set(refused.read_text().split())) if refused.exists() else []
    print(f"  tried and refused (the CLI did without them): {tried}")


@pytest.mark.package_index
@pytest.mark.parametrize(("slicer", "pydicom"), [("5.10", "2.4.4"), ("5.12", "3.0.2")])
def test_slicer_only_pins_import_what_the_cli_imports(
    slicer, pydicom, package_index, tmp_path, _guard_environment
):
    """A pin that differs from CI's (a documented slicer-pin) must still let TotalSegmentator's
    nnunet module import next to the pydicom that Slicer bundles."""
    assert BUNDLED[slicer]["pydicom"] == pydicom
    target = tmp_path / "site"
    pins = [p.requirement for p in PINS if p.slicer_pin]
    result = _pip(
        "install",
        "--no-deps",
        "--target",
        str(target),
        f"pydicom=={pydicom}",
        *pins,
        env=package_index,
    )
    assert result.returncode == 0, _pip_messages(result)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(GUARD_DIR), str(target)])}
    code = (
        "import pydicom, dicom2nifti, totalsegmentator.nnunet; "
        "print(pydicom.__version__, dicom2nifti.__file__)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split()[0] == pydicom and str(target) in run.stdout
