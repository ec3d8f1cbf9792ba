"""Milliseconds per patch from GFLOPs, measured on this device: a latency budget for `plan`.

A plan's latency cannot be read from its FLOPs alone — a device has fixed costs (norms,
activations, memory traffic) and its own speed per FLOP. Timing the model's original network and
one compressed at a uniform DF on one patch gives a line ``ms = fixed + per_gflop · GFLOPs``
for this model, device and precision; a latency budget becomes the GFLOP budget the line allows.
Measured once and cached (per checkpoint, device, CPU/GPU model and thread count), since devices
differ (AVX2 vs AVX-512, GPUs) and nothing is hard-coded.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import TuckerSegmentError

PROBE_DF = 0.3  # the second point of the line


@dataclass(frozen=True)
class LatencyLine:
    fixed_ms: float
    ms_per_gflop: float
    points: list[list[float]]  # [gflops, ms] measured
    device: str

    def gflops_for(self, milliseconds: float) -> float:
        """The GFLOPs per patch that fit in ``milliseconds`` (one line if none do)."""
        if self.ms_per_gflop <= 0:
            (g1, t1), (g0, t0) = self.points
            raise TuckerSegmentError(
                f"on {self.device} the network at DF 0.3 ({g0:.1f} GFLOPs) took {t0:.0f} ms and "
                f"the original ({g1:.1f} GFLOPs) {t1:.0f} ms: time does not fall with FLOPs "
                "here, so ranks can't meet a latency budget; use --max-gflops or --max-params"
            )
        budget = (milliseconds - self.fixed_ms) / self.ms_per_gflop
        if budget <= 0:
            raise TuckerSegmentError(
                f"{milliseconds:g} ms per patch is below what this device needs whatever the "
                f"ranks ({self.fixed_ms:.0f} ms measured as the fixed cost of a patch)"
            )
        return budget

    def milliseconds(self, gflops: float) -> float:
        return self.fixed_ms + self.ms_per_gflop * gflops


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    from .devices import _cpu_info

    return f"{_cpu_info().model} ({torch.get_num_threads()} threads)"


def _median_ms(network: nn.Module, x: torch.Tensor, device: str, precision: str) -> float:
    from .latency_policy import _median_time

    return 1000 * _median_time(network, x, device.split(":")[0], precision, repeats=3)


def line_key(checkpoint_sha256: str, device: str, precision: str) -> str:
    """The cache name of a line: the model's weights, the device (its model and threads), the
    precision."""
    return hashlib.sha256(
        json.dumps([checkpoint_sha256, device, precision, _device_name(device)]).encode()
    ).hexdigest()[:24]


def latency_line(
    network: nn.Module,
    patch_size: list[int],
    checkpoint_sha256: str,
    device: str = "cpu",
    precision: str = "fp32",
    in_channels: int = 1,
    cache: Path | None = None,
) -> LatencyLine:
    """The line for this model on this device: from the cache, or timed now (two networks,
    three patches each after a warm-up)."""
    from ..engine.compress import CompressionSettings, compress_network
    from ..engine.counting import count_network

    path = (cache / f"{line_key(checkpoint_sha256, device, precision)}.json") if cache else None
    if path is not None and path.is_file():
        try:
            return LatencyLine(**json.loads(path.read_text()))
        except (ValueError, TypeError):
            pass  # damaged: measured again
    x = torch.randn(1, in_channels, *patch_size, device=device)
    compressed = copy.deepcopy(network)
    compress_network(compressed, CompressionSettings(df=PROBE_DF))
    points = []
    for net in (network, compressed):
        gflops = count_network(net, patch_size, in_channels).gflops
        points.append([gflops, _median_ms(net.to(device).eval(), x, device, precision)])
    (g1, t1), (g0, t0) = points
    per_gflop = (t1 - t0) / max(g1 - g0, 1e-9)  # ≤ 0: not faster with fewer FLOPs (refused)
    line = LatencyLine(t0 - per_gflop * g0, per_gflop, points, device)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(json.dumps(asdict(line)))
        partial.replace(path)
    return line
