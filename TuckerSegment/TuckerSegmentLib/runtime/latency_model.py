"""Milliseconds per patch, measured layer by layer on this device: a latency budget for `plan`.

A plan's latency cannot be read from its FLOPs: a device has fixed costs (norms, activations,
memory traffic), its own speed per FLOP, and layers where a Tucker block is no faster than the
conv it replaces (small channel counts, large volumes; a GPU's fused kernels). So every
factorizable conv is timed on its real input for one patch — the original conv, and its Tucker
block at DF 0.3 ranks — and the whole network once as it is and once with every block; the
planner prices each layer's ranks from its own two points (engine/planner.py:LayerLatency),
the blocks scaled to what they take inside the network, and the rest of the network as the
whole time less the convs'. Measured once and cached (per checkpoint, device, CPU/GPU model,
thread count and precision), since devices differ (AVX2 vs AVX-512, GPUs) and nothing is
hard-coded.
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

from ..engine.planner import LayerLatency, LayerSpectrum
from ..ts.network_spec import NetworkSpec

PROBE_DF = 0.3  # the block's point of each layer's line
FORMAT_VERSION = 2  # 1 was a whole-network line (ms against GFLOPs), replaced by per-layer times


@dataclass(frozen=True)
class LatencyTable:
    """The measured times of one model on one device: the whole original network, the whole
    network with every layer at the probe ranks, and each factorizable conv both ways (name →
    conv ms, block ms, block GFLOPs)."""

    device: str
    original_ms: float
    probe_ms: float
    layers: dict[str, list[float]]
    format_version: int = FORMAT_VERSION

    @property
    def block_scale(self) -> float:
        """Blocks timed alone run warmer (caches, no neighbours) than inside the network: the
        factor that makes the layers' block times add up to the whole probe network's time
        (0.8–1.4 on the 2-core CI machine's test models, as loaded; 1 where the sums can't
        say)."""
        fixed = self.original_ms - sum(conv for conv, _, _ in self.layers.values())
        blocks = sum(block for _, block, _ in self.layers.values())
        inside = self.probe_ms - fixed
        return inside / blocks if blocks > 0 and inside > 0 else 1.0

    def attach(self, spectra: list[LayerSpectrum]) -> list[LayerSpectrum]:
        """The spectra with each layer's measured latency, for `plan_network(…, "ms", …)`."""
        scale = self.block_scale
        for spectrum in spectra:
            conv, block, gflops = self.layers[spectrum.name]
            spectrum.latency = LayerLatency(conv, block * scale, gflops)
        return spectra


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    from .devices import _cpu_info

    return f"{_cpu_info().model} ({torch.get_num_threads()} threads)"


def _median_ms(module: nn.Module, x: torch.Tensor, device: str, precision: str) -> float:
    from .latency_policy import _median_time

    return 1000 * _median_time(module, x, device.split(":")[0], precision, repeats=3)


def table_key(checkpoint_sha256: str, device: str, precision: str) -> str:
    """The cache name of a table: the model's weights, the device (its model and threads), the
    precision."""
    return hashlib.sha256(
        json.dumps(
            [checkpoint_sha256, device, precision, _device_name(device), FORMAT_VERSION]
        ).encode()
    ).hexdigest()[:24]


def latency_table(
    network: nn.Module,
    spec: NetworkSpec,
    spectra: list[LayerSpectrum],
    checkpoint_sha256: str,
    device: str = "cpu",
    precision: str = "fp32",
    cache: Path | None = None,
) -> LatencyTable:
    """The table for this model on this device: from the cache, or timed now (each layer's
    conv and block on its input shape, and the whole network; three runs each after a
    warm-up)."""
    from ..engine.compress import compress_layers
    from ..engine.ranks import tucker_ranks
    from .latency_policy import layer_input_shapes

    path = (cache / f"{table_key(checkpoint_sha256, device, precision)}.json") if cache else None
    if path is not None and path.is_file():
        try:
            table = LatencyTable(**json.loads(path.read_text()))  # the key names the version
            if {s.name for s in spectra} <= set(table.layers):
                return table
        except (ValueError, TypeError):
            pass  # damaged: measured again
    probes = [s.ranks(*tucker_ranks(s.in_channels, s.out_channels, PROBE_DF)) for s in spectra]
    compressed = copy.deepcopy(network)
    compress_layers(compressed, probes)
    originals, blocks = dict(network.named_modules()), dict(compressed.named_modules())
    shapes = layer_input_shapes(spec, [s.name for s in spectra])
    layers = {}
    for spectrum, probe in zip(spectra, probes, strict=True):
        x = torch.randn(shapes[spectrum.name], device=device)
        conv_ms = _median_ms(originals[spectrum.name].to(device), x, device, precision)
        block_ms = _median_ms(blocks[spectrum.name].to(device), x, device, precision)
        gflops = spectrum.flops(probe.rank_in, probe.rank_out) / 1e9
        layers[spectrum.name] = [conv_ms, block_ms, gflops]
    x = torch.randn(1, spec.input_channels, *spec.patch_size, device=device)
    table = LatencyTable(
        device,
        _median_ms(network.to(device).eval(), x, device, precision),
        _median_ms(compressed.to(device).eval(), x, device, precision),
        layers,
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(json.dumps(asdict(table)))
        partial.replace(path)
    return table
