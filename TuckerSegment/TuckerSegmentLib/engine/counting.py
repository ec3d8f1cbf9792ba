"""Parameter and FLOP counts of a network for one patch, computed on the meta device (instant).

Counting follows the paper's fvcore convention: a (transposed) convolution costs one FLOP per
multiply-add (batch · prod(weight shape) · output spatial size, input spatial size for a
transposed conv; bias free), an instance norm 5 FLOPs per output element (4 without affine),
everything else nothing. Parameters are those of the modules that actually run in inference,
so unused deep-supervision heads are not counted.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from ..ts.network_spec import NetworkSpec
    from .compress import LayerRanks

_NORMS = (nn.InstanceNorm3d, nn.InstanceNorm2d, nn.InstanceNorm1d)


@dataclass
class NetworkCount:
    """Totals for one forward pass, and per-module FLOPs and parameters by module name."""

    params: int
    flops: int
    module_flops: dict[str, int] = field(default_factory=dict)
    module_params: dict[str, int] = field(default_factory=dict)

    @property
    def gflops(self) -> float:
        return self.flops / 1e9


def _conv_flops(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    spatial = inp.shape[2:] if isinstance(module, nn.ConvTranspose3d) else out.shape[2:]
    return int(inp.shape[0]) * math.prod(module.weight.shape) * math.prod(spatial)


def count_network(
    network: nn.Module, patch_size: list[int] | tuple[int, ...], in_channels: int = 1
) -> NetworkCount:
    """Count ``network`` for one patch of ``patch_size`` voxels (batch 1)."""
    meta = copy.deepcopy(network).to("meta") if _has_data(network) else network
    names = {id(m): n for n, m in meta.named_modules()}
    flops: dict[str, int] = {}
    params: dict[str, int] = {}
    seen: set[int] = set()

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        name = names[id(module)]
        own = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in own)
        params[name] = params.get(name, 0) + sum(p.numel() for p in own)
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d, nn.Conv2d, nn.Conv1d)):
            f = _conv_flops(module, inputs[0], output)
        elif isinstance(module, _NORMS):
            f = output.numel() * (5 if module.affine else 4)
        else:
            f = 0
        flops[name] = flops.get(name, 0) + f

    handles = [m.register_forward_hook(hook) for m in meta.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            meta(torch.empty(1, in_channels, *patch_size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return NetworkCount(sum(params.values()), sum(flops.values()), flops, params)


def _has_data(network: nn.Module) -> bool:
    return any(not p.is_meta for p in network.parameters())


def count_original_and_compressed(
    spec: NetworkSpec, layers: list[LayerRanks]
) -> tuple[NetworkCount, NetworkCount]:
    """Counts of ``spec``'s network before and after inserting Tucker blocks with ``layers``'
    ranks, both built on the meta device (no weights are copied)."""
    from .compress import apply_layer_ranks

    before = count_network(spec.build("meta"), spec.patch_size, spec.input_channels)
    network = spec.build("meta")
    apply_layer_ranks(network, layers)
    return before, count_network(network, spec.patch_size, spec.input_channels)
