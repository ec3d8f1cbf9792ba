"""Latency-aware layer policy: keep the original conv wherever its Tucker block is not faster
on this device, so no DF runs slower than the original network.

Each replaced layer is timed both ways on its real input shape for one patch (median of a few
runs after a warm-up); a block that does not beat the original conv by ``margin`` is reverted.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from ..engine.compress import LayerRanks, _replace_everywhere
from ..ts.network_spec import NetworkSpec
from .precision import autocast


def layer_input_shapes(spec: NetworkSpec, names: list[str]) -> dict[str, tuple[int, ...]]:
    """Input shape of each named module for one patch (meta device, instant)."""
    network = spec.build("meta")
    modules = dict(network.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str):  # noqa: ANN202
        def hook(module: nn.Module, args: tuple) -> None:  # a pre-hook must return None
            shapes.setdefault(name, tuple(args[0].shape))

        return hook

    handles = [modules[n].register_forward_pre_hook(record(n)) for n in names if n in modules]
    with torch.no_grad():
        network(torch.empty(1, spec.input_channels, *spec.patch_size, device="meta"))
    for handle in handles:
        handle.remove()
    return shapes


def _median_time(
    module: nn.Module, x: torch.Tensor, device: str, precision: str, repeats: int
) -> float:
    runs = []
    with torch.no_grad(), autocast(device, precision):
        for i in range(repeats + 1):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            module(x)
            if device == "cuda":
                torch.cuda.synchronize()
            if i:  # the first run is the warm-up
                runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def keep_faster_layers(
    network: nn.Module,
    originals: dict[str, nn.Module],
    layers: list[LayerRanks],
    spec: NetworkSpec,
    device: str = "cpu",
    precision: str = "fp32",
    repeats: int = 3,
    margin: float = 0.05,
) -> tuple[list[LayerRanks], dict[str, tuple[float, float]]]:
    """Revert, in ``network``, the Tucker blocks that are not faster than their original conv.

    Returns the layers that stay factorized and the timings (original s, block s) per layer.
    """
    shapes = layer_input_shapes(spec, [layer.name for layer in layers])
    modules = dict(network.named_modules())
    kept, timings = [], {}
    for layer in layers:
        block, conv = modules[layer.name], originals[layer.name]
        x = torch.randn(shapes[layer.name], device=device)
        conv_s = _median_time(conv.to(device), x, device, precision, repeats)
        block_s = _median_time(block.to(device), x, device, precision, repeats)
        timings[layer.name] = (conv_s, block_s)
        if block_s < (1.0 - margin) * conv_s:
            kept.append(layer)
        else:
            _replace_everywhere(network, block, conv)
    return kept, timings
