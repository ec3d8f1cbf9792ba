"""Which convolutions get a Tucker block.

``default``: every 3D (transposed) conv except 1×1×1 convs (the segmentation heads), whose
factorization only adds work. ``paper``: every 3D conv, as the paper's code did. ``latency``:
the default candidates, then each block is kept only where it is faster than the original conv
on the user's device (see latency_policy.py). ``auto`` (what `segment` and `benchmark` use
unless told otherwise): ``latency`` on a GPU, ``default`` on the CPU — on an H200 the plain
blocks ran 0.66–0.79× the original at every DF (a data-center GPU's convs are bound by memory
and launches, not FLOPs), the measured choice ≥ 1.0× (README, Performance); on CPUs the fused
runtime's dense-composition rule already keeps the original where a block would not pay.
"""

from __future__ import annotations

from torch import nn

from ..errors import TuckerSegmentError
from .tucker_block import CONV_TYPES

POLICIES = ("default", "paper", "latency")


def resolve_policy(policy: str, device_kind: str) -> str:
    """``auto`` → ``latency`` on a GPU (cuda, mps), ``default`` on the CPU; others unchanged."""
    if policy == "auto":
        return "default" if device_kind == "cpu" else "latency"
    return check_policy(policy)


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise TuckerSegmentError(
            f"unknown layer policy {policy!r}; choose one of {', '.join(POLICIES)}"
        )
    return policy


def should_factorize(module: nn.Module, policy: str = "default") -> bool:
    """True if ``module`` is a conv the policy replaces by a Tucker block."""
    if not isinstance(module, CONV_TYPES) or module.groups != 1:
        return False
    if check_policy(policy) == "paper":
        return True
    return any(k != 1 for k in module.kernel_size)
