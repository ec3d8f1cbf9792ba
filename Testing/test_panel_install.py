"""First-use install decisions with fakes of the installer's own seams (what TuckerSegment.py
fills from slicer.util, slicer.packaging and PyTorchUtils): every failure becomes one message."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import REPO
from TuckerSegmentLib.panel.install_plan import read_pins
from TuckerSegmentLib.panel.installer import SlicerInstallSeams, install

PINS = read_pins(REPO / "TuckerSegment" / "Resources" / "requirements.txt")
SLICER = {"numpy": "2.0.2", "simpleitk": "2.5.2", "vtk": "9.5.2", "requests": "2.32.3"}


class FakeSlicerPython:
    """Installed distributions and the pip calls made, like Slicer's Python would see them."""

    def __init__(self, installed: dict[str, str], fail_pip: bool = False) -> None:
        self.installed = dict(installed)
        self.calls: list[tuple[str, list[str], str]] = []
        self.fail_pip = fail_pip

    def pip_install(self, args: list[str]) -> None:
        constraints = ""
        if "-c" in args:
            constraints = Path(args[args.index("-c") + 1]).read_text()
        self.calls.append(("pip_install", list(args), constraints))
        if self.fail_pip:
            raise subprocess.CalledProcessError(1, ["PythonSlicer", "-m", "pip", *args])
        for arg in args:
            if "==" in arg:
                name, version = arg.split("==")
                self.installed[name.lower()] = version

    def pip_ensure(self, requirements: list[str], constraints: str) -> None:
        self.calls.append(("pip_ensure", list(requirements), Path(constraints).read_text()))
        self.pip_install(requirements)


class FakeTorchLogic:
    def __init__(self, python: FakeSlicerPython, result: str = "module") -> None:
        self.python, self.result, self.calls = python, result, []

    def installTorch(self, **kwargs):  # noqa: N802 - PyTorchUtils' name
        self.calls.append(kwargs)
        if self.result == "raise":
            raise subprocess.CalledProcessError(1, ["light_the_torch"])
        if self.result == "none":
            return None
        self.python.installed["torch"] = "2.14.1+cu130"
        return object()


def _seams(python, torch_logic=None, answers=(True, True), ensure=False):
    replies = list(answers)

    def confirm(text: str) -> bool:
        return replies.pop(0)

    def torch_factory():
        if torch_logic is None:
            raise ImportError("No module named 'PyTorchUtils'")
        return torch_logic

    return SlicerInstallSeams(
        pip_install=python.pip_install,
        pip_ensure=python.pip_ensure if ensure else None,
        torch_logic=torch_factory,
        confirm=confirm,
        installed=lambda: dict(python.installed),
    )


@pytest.mark.parametrize("ensure", [False, True], ids=["slicer-5.10", "slicer-5.12"])
def test_fresh_slicer_installs_torch_then_pins_and_never_touches_bundled(ensure):
    python = FakeSlicerPython(SLICER)
    torch = FakeTorchLogic(python)
    outcome = install(PINS, _seams(python, torch, ensure=ensure))
    assert outcome.ok and outcome.installed_something, outcome.message
    assert torch.calls == [
        {
            "askConfirmation": False,
            "torchVersionRequirement": ">=2.14,<2.15",
            "torchvisionVersionRequirement": ">=0.29,<0.30",
        }
    ]
    first, second = python.calls[0], python.calls[1]
    assert first == ("pip_install", ["--no-deps", "TotalSegmentator==2.18.0"], "")
    assert second[0] == ("pip_ensure" if ensure else "pip_install")
    assert {p.requirement for p in PINS if not p.no_deps} <= set(second[1])
    frozen = dict(line.split("==") for line in second[2].split())
    assert frozen["vtk"] == "9.5.2" and frozen["numpy"] == "2.0.2"
    assert frozen["torch"] == "2.14.1+cu130"  # frozen after the PyTorch extension installed it
    assert not {p.name.lower() for p in PINS} & set(frozen)


def test_everything_present_asks_nothing():
    python = FakeSlicerPython(
        {**SLICER, "torch": "2.14.1", **{p.name.lower(): p.version for p in PINS}}
    )
    outcome = install(PINS, _seams(python, None, answers=()))
    assert outcome.ok and not outcome.installed_something and python.calls == []


def test_declined_changes_nothing():
    python = FakeSlicerPython(SLICER)
    outcome = install(PINS, _seams(python, FakeTorchLogic(python), answers=(False,)))
    assert not outcome.ok and "cancelled" in outcome.message and python.calls == []


def test_without_the_pytorch_extension_says_what_to_install():
    python = FakeSlicerPython(SLICER)
    outcome = install(PINS, _seams(python, None))
    assert not outcome.ok and "PyTorch extension" in outcome.message
    assert "Extensions Manager" in outcome.message and python.calls == []


@pytest.mark.parametrize("result", ["none", "raise"])
def test_torch_install_failure_is_one_message(result):
    python = FakeSlicerPython(SLICER)
    outcome = install(PINS, _seams(python, FakeTorchLogic(python, result)))
    assert not outcome.ok and "PyTorch" in outcome.message and "\n" not in outcome.message
    assert python.calls == []


def test_pip_failure_is_one_message_and_names_what_stayed_safe():
    python = FakeSlicerPython({**SLICER, "torch": "2.14.1"}, fail_pip=True)
    outcome = install(PINS, _seams(python, None))
    assert not outcome.ok and "failed" in outcome.message and "not changed" in outcome.message
    assert "\n" not in outcome.message


def test_torch_outside_the_tested_series_is_offered_the_tested_one():
    python = FakeSlicerPython({**SLICER, "torch": "2.5.1"})
    torch = FakeTorchLogic(python)
    outcome = install(PINS, _seams(python, torch, answers=(True, True)))
    assert torch.calls and not outcome.ok and "restart" in outcome.message
    assert python.calls == []  # nothing else until Slicer runs the new torch


def test_torch_outside_the_series_can_be_kept():
    python = FakeSlicerPython({**SLICER, "torch": "2.5.1"})
    torch = FakeTorchLogic(python)
    outcome = install(PINS, _seams(python, torch, answers=(True, False)))
    assert outcome.ok and torch.calls == []
    frozen = python.calls[1][2]
    assert "torch==2.5.1" in frozen.split()  # pip still may not replace it
