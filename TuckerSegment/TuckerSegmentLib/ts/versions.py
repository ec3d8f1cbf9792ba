"""The start-up version gate: the libraries TuckerSegment reaches into, at the versions CI tests.

Outside the tested versions a run goes ahead with a one-line warning (TS and nnU-Net change
often in small ways, and a user may have a reason for another version); a missing private
symbol (private_symbols.py) stops it with a one-line error before any work, instead of a deep
traceback halfway through a segmentation.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ..errors import TuckerSegmentError

# the versions in .ci/constraints.txt (a test keeps them equal); a series for torch, whose
# builds for the user's GPU come from the PyTorch extension or the user's own choice
TESTED = {
    "TotalSegmentator": "2.18.0",
    "nnunetv2": "2.8.1",
    "dynamic_network_architectures": "0.4.4",
    "tensorly": "0.10.0",
    "torch": "2.14",
}


def _installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def untested_versions(installed: dict[str, str | None] | None = None) -> list[str]:
    """One message per library installed at a version CI does not test."""
    installed = installed if installed is not None else {n: _installed(n) for n in TESTED}
    found = []
    for name, tested in TESTED.items():
        have = installed.get(name)
        if have is None:
            continue
        same = have.split("+")[0].startswith(tested + ".") if name == "torch" else have == tested
        if not same:
            found.append(
                f"{name} {have} is not the tested version ({tested}{'.x' if name == 'torch' else ''})"
            )
    return found


def check_versions() -> list[str]:
    """Refuse when a private symbol is gone; return warnings for untested versions."""
    from .private_symbols import CHECKED_WITH, missing_symbols

    gone = missing_symbols()
    if gone:
        names = ", ".join(f"{s.module}.{s.name}" for s in gone)
        raise TuckerSegmentError(
            f"the installed TotalSegmentator/nnU-Net/torch lack {names}, which TuckerSegment "
            f"needs (checked with {CHECKED_WITH}); install the tested versions "
            "(.ci/constraints.txt)"
        )
    return untested_versions()
