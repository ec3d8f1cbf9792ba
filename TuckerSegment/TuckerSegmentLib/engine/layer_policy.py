"""Which convolutions get a Tucker block.

``default``: every 3D (transposed) conv except 1×1×1 convs (the segmentation heads), whose
factorization only adds work. ``paper``: every 3D conv, as the paper's code did. ``latency``:
the default candidates, then each block is kept only where it is faster than the original conv
on the user's device (see latency_policy.py).
"""

from __future__ import annotations

from torch import nn

from ..errors import TuckerSegmentError
from .tucker_block import CONV_TYPES

POLICIES = ("default", "paper", "latency")


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
