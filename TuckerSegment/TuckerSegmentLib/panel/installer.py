"""First-use install inside 3D Slicer: torch through the PyTorch extension, then the pinned
packages (install_plan.py), every failure turned into one message and Slicer left usable.

The Slicer calls are seams (:class:`SlicerInstallSeams`), filled from ``slicer.util``,
``slicer.packaging`` and PyTorchUtils by TuckerSegment.py and by small fakes in the tests.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .install_plan import (
    TORCH_REQUIREMENT,
    TORCHVISION_REQUIREMENT,
    Pin,
    frozen_constraints,
    installed_distributions,
    missing,
    pip_commands,
    torch_status,
)


@dataclass
class SlicerInstallSeams:
    """What the installer needs from Slicer.

    ``pip_install(args)``: ``slicer.util.pip_install`` (raises on failure);
    ``pip_ensure(requirements, constraints)``: ``slicer.packaging.pip_ensure`` (Slicer 5.12+;
    None on 5.10); ``torch_logic()``: ``PyTorchUtils.PyTorchUtilsLogic()`` (raises ImportError
    without the PyTorch extension); ``confirm(text)``: an OK/Cancel question."""

    pip_install: Callable[[list[str]], Any]
    pip_ensure: Callable[[list[str], str], Any] | None
    torch_logic: Callable[[], Any]
    confirm: Callable[[str], bool]
    installed: Callable[[], dict[str, str]] = installed_distributions


@dataclass
class InstallOutcome:
    """``ok``: everything is installed; ``message``: what to tell the user (empty if nothing)."""

    ok: bool
    message: str = ""
    installed_something: bool = False


def needs_install(pins: Sequence[Pin], installed: dict[str, str]) -> bool:
    return bool(missing(list(pins), installed)) or "torch" not in installed


def install(pins: Sequence[Pin], seams: SlicerInstallSeams) -> InstallOutcome:
    """Install what is missing, after asking; never raises."""
    pins = list(pins)
    installed = seams.installed()
    todo = missing(pins, installed)
    torch = torch_status(installed.get("torch"))
    if not todo and torch.ok:
        return InstallOutcome(True)
    what = ", ".join(p.requirement for p in todo) or "nothing else"
    question = (
        "TuckerSegment needs PyTorch (from the PyTorch extension), TotalSegmentator, nnU-Net and "
        f"tensorly in 3D Slicer's Python. It will install: {what}"
        + ("" if torch.ok else f"; {torch.message}")
        + ". Packages that 3D Slicer ships (VTK, SimpleITK, numpy, ...) are not changed. "
        "Needs an internet connection once. Install now?"
    )
    if not seams.confirm(question):
        return InstallOutcome(False, "Installation cancelled; nothing was changed.")
    changed = False
    outside_series = torch.installed is not None and not torch.ok
    keep_current = outside_series and not seams.confirm(
        f"{torch.message}\n\nInstall the tested PyTorch now? (Cancel keeps PyTorch {torch.installed})"
    )
    if not torch.ok and not keep_current:
        try:
            torch_logic = seams.torch_logic()
        except ImportError:
            return InstallOutcome(
                False,
                "TuckerSegment needs the PyTorch extension: install 'PyTorch' from the Extensions "
                "Manager, restart 3D Slicer, then click Segment again.",
            )
        try:
            result = torch_logic.installTorch(
                askConfirmation=False,
                torchVersionRequirement=TORCH_REQUIREMENT,
                torchvisionVersionRequirement=TORCHVISION_REQUIREMENT,
            )
        except Exception as error:  # noqa: BLE001 - pip/light-the-torch failures vary
            return InstallOutcome(False, f"PyTorch could not be installed: {_one_line(error)}")
        if result is None:
            return InstallOutcome(
                False,
                "PyTorch was not installed (the PyTorch extension returned nothing); install it "
                "from the PyTorch module, then click Segment again.",
            )
        changed = True
        if outside_series:  # the old torch is already imported in this process
            return InstallOutcome(
                False,
                "The tested PyTorch was installed; restart 3D Slicer, then click Segment again.",
                installed_something=True,
            )
    if not todo:
        return InstallOutcome(True, installed_something=changed)
    with tempfile.TemporaryDirectory(prefix="TuckerSegment-install-") as folder:
        constraints = Path(folder) / "keep-installed.txt"
        # frozen after torch: pip must never replace the PyTorch extension's build
        constraints.write_text(frozen_constraints(seams.installed(), pins))
        try:
            for command in pip_commands(todo, constraints):
                args = command[1:]  # Slicer's pip_install adds "install"
                if seams.pip_ensure is not None and "-c" in args:
                    seams.pip_ensure([a for a in args[2:]], str(constraints))
                else:
                    seams.pip_install(args)
        except Exception as error:  # noqa: BLE001 - CalledProcessError, RuntimeError, OSError
            return InstallOutcome(
                False,
                f"Installing the Python packages failed: {_one_line(error)}. 3D Slicer's own "
                "packages were not changed; see the Python console for pip's output.",
                installed_something=True,
            )
    still = missing(pins, seams.installed())
    if still:
        return InstallOutcome(
            False,
            "After installing, still missing: " + ", ".join(p.requirement for p in still),
            installed_something=True,
        )
    return InstallOutcome(True, "Packages installed.", installed_something=True)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]
