"""What the panel installs into 3D Slicer's Python on first use, and how, without breaking Slicer.

Slicer bundles its own VTK (a dist-info without RECORD: pip cannot replace it), SimpleITK build,
numpy, scipy, requests, pydicom and more. TotalSegmentator's requirement list pulls fury -> vtk<9.4,
so a plain ``pip install TotalSegmentator`` would try to replace Slicer's VTK and abort half-done.
The plan therefore (1) installs the packages marked ``no-deps`` without dependencies, (2) installs
the rest with pip resolving their dependencies under a constraints file that freezes every
distribution already in Slicer's Python at its installed version: pip can add packages but
never change one that Slicer (or SlicerPyTorch's torch) put there; on a conflict it refuses
before installing anything. The pins live in one file (``Resources/requirements.txt``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# torch comes from the PyTorch extension (the build for the user's GPU), within the series CI tests
TORCH_REQUIREMENT = ">=2.14,<2.15"
TORCHVISION_REQUIREMENT = ">=0.29,<0.30"
_TORCH_SERIES = (2, 14)


def normalize(name: str) -> str:
    """PEP 503 name: ``Pillow`` and ``pillow``, ``scikit_image`` and ``scikit-image`` match."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    """One line of requirements.txt: an exact version, optionally installed without deps."""

    name: str
    version: str
    no_deps: bool = False
    slicer_pin: str = ""  # why Slicer gets another version than CI runs (documented exceptions)

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


def read_pins(path: Path) -> list[Pin]:
    """Parse requirements.txt: ``name==version`` lines, ``# no-deps`` marks no dependencies."""
    pins = []
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line, _, comment = raw.partition("#")
        line = line.strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)", line)
        if match is None:
            raise ValueError(f"{path}:{number}: expected name==version, got {line!r}")
        note = comment.strip()
        slicer_pin = (
            note.removeprefix("slicer-pin:").strip() if note.startswith("slicer-pin:") else ""
        )
        pins.append(Pin(match[1], match[2], no_deps=note == "no-deps", slicer_pin=slicer_pin))
    return pins


def installed_distributions() -> dict[str, str]:
    """Normalized name -> version of every distribution this Python can import from."""
    from importlib.metadata import distributions

    found: dict[str, str] = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(normalize(name), dist.version)
    return found


def missing(pins: list[Pin], installed: dict[str, str]) -> list[Pin]:
    """Pins not installed at exactly the pinned version."""
    return [p for p in pins if installed.get(normalize(p.name)) != p.version]


def frozen_constraints(installed: dict[str, str], pins: list[Pin]) -> str:
    """A pip constraints file: every installed distribution that is not one of ours, at its
    installed version (Slicer's bundled packages, torch, anything the user added)."""
    ours = {normalize(p.name) for p in pins}
    lines = [
        f"{name}=={version}" for name, version in sorted(installed.items()) if name not in ours
    ]
    return "\n".join(lines) + "\n"


def pip_commands(pins: list[Pin], constraints_file: Path) -> list[list[str]]:
    """pip argument lists, run in order: no-deps pins first, then the rest under constraints."""
    commands = []
    no_deps = [p.requirement for p in pins if p.no_deps]
    resolved = [p.requirement for p in pins if not p.no_deps]
    if no_deps:
        commands.append(["install", "--no-deps", *no_deps])
    if resolved:
        commands.append(["install", "-c", str(constraints_file), *resolved])
    return commands


@dataclass(frozen=True)
class TorchStatus:
    """Whether torch is usable as installed, and what to tell the user if not."""

    ok: bool
    installed: str | None
    message: str


def torch_status(installed_version: str | None) -> TorchStatus:
    """torch missing, inside the tested series, or outside it (then offer the tested one
    through the PyTorch extension: pip must never pull a PyPI torch over its build)."""
    if installed_version is None:
        return TorchStatus(
            False,
            None,
            f"PyTorch is not installed; the PyTorch extension installs torch{TORCH_REQUIREMENT}.",
        )
    match = re.match(r"(\d+)\.(\d+)", installed_version)
    series = (int(match[1]), int(match[2])) if match else None
    if series == _TORCH_SERIES:
        return TorchStatus(True, installed_version, f"PyTorch {installed_version}")
    return TorchStatus(
        False,
        installed_version,
        f"PyTorch {installed_version} is installed, but TuckerSegment is tested with "
        f"torch{TORCH_REQUIREMENT}. Install the tested version with the PyTorch extension "
        "(then restart 3D Slicer), or continue at your own risk.",
    )
