"""Inference precision: fp32 with autocast really off, or fp16/bf16 autocast.

nnU-Net's predictor autocasts on CUDA by default; the network is wrapped so that its forward
runs inside the autocast setting the user chose (an inner autocast overrides an outer one).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import TuckerSegmentError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
# The dtype in which the CPU runtimes (OpenVINO, fused) hand a patch's logits to nnU-Net, whatever
# precision they compute in: nnU-Net sums the Gaussian-weighted logits in fp16 (and under CUDA
# autocast the network itself returns fp16), so fp32 logits are rounded there anyway; rounded
# here, they are half the bytes to write, and nnU-Net's CPU accumulation runs without mixed
# dtypes (PyTorch's slow path). One more rounding than with fp32 logits: labels match eager's on
# ~99.99 % of voxels (README); with nnU-Net's test-time mirroring (off in TS) the mirrored passes
# are summed in fp16 too, as under CUDA autocast. Eager torch (what TS runs) keeps its own dtype.
LOGITS_DTYPE = torch.float16
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` → the recommendation for ``device``; refuse combinations that cannot work."""
    if precision not in PRECISIONS:
        raise TuckerSegmentError(
            f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}"
        )
    if precision == "auto":
        from .devices import detect, recommend

        rec = recommend(detect())
        precision = rec.precision if rec.device == device else "fp32"
    if precision == "fp16" and device == "cpu":
        raise TuckerSegmentError(
            "fp16 is not supported on the CPU (PyTorch has no fast fp16 CPU kernels); "
            "use fp32, or bf16 (fast on CPUs with AMX)"
        )
    if precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise TuckerSegmentError("bf16 needs an Ampere (compute capability 8.0) or newer GPU")
    return precision


def autocast(device_type: str, precision: str):  # noqa: ANN201
    """Autocast to fp16/bf16, or autocast switched off for fp32."""
    dtype = _DTYPES.get(precision)
    return torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None)


class PrecisionNetwork(nn.Module):
    """Runs the wrapped network under the chosen precision and counts forward passes."""

    def __init__(self, network: nn.Module, device_type: str, precision: str) -> None:
        super().__init__()
        self.network = network
        self.device_type = device_type
        self.precision = precision
        self.calls = 0
        self.seconds = 0.0
        self.on_forward: Callable[[int], None] | None = None  # called with the pass count

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import time

        start = time.perf_counter()
        if self.precision == "fp32":
            with torch.autocast(self.device_type, enabled=False):
                out = self.network(x.float())
        else:
            with torch.autocast(self.device_type, dtype=_DTYPES[self.precision]):
                out = self.network(x)
        if self.device_type == "cuda":
            torch.cuda.synchronize(out.device)  # the GPU it ran on (cuda:N), not GPU 0
        self.seconds += time.perf_counter() - start
        self.calls += 1
        if self.on_forward is not None:
            self.on_forward(self.calls)
        return out
