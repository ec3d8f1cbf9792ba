"""Parameters and FLOPs of a compressed network for any DF, without building it.

Counting a compressed network on the meta device takes 0.3–0.5 s per model (2.5 s for the five
experts), too slow for a slider. The original network is counted once; a Tucker block's cost is
then closed-form in its ranks (first 1×1×1 conv at the input grid, the core conv where the
original conv ran, last 1×1×1 conv at the output grid), so each DF costs microseconds. The
result equals :func:`stats.compressed_count` exactly (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from .layer_policy import should_factorize
from .ranks import DEFAULT_RANK_FLOOR, tucker_ranks

if TYPE_CHECKING:  # a spec is anything with build(), patch_size, input_channels
    from ..ts.network_spec import NetworkSpec


@dataclass(frozen=True)
class ConvGeometry:
    """One conv the layer policy replaces: channels, kernel volume, grids, bias."""

    in_channels: int
    out_channels: int
    kernel_volume: int
    in_voxels: int
    out_voxels: int
    bias: bool
    transposed: bool

    def original(self) -> tuple[int, int]:
        """(parameters, FLOPs) of the original conv (fvcore: transposed convs at the input grid)."""
        weights = self.in_channels * self.out_channels * self.kernel_volume
        voxels = self.in_voxels if self.transposed else self.out_voxels
        return weights + (self.out_channels if self.bias else 0), weights * voxels

    def tucker(self, rank_in: int, rank_out: int) -> tuple[int, int]:
        """(parameters, FLOPs) of the Tucker block with these ranks."""
        first = self.in_channels * rank_in
        core = rank_in * rank_out * self.kernel_volume
        last = rank_out * self.out_channels
        core_voxels = self.in_voxels if self.transposed else self.out_voxels
        params = first + core + last + (self.out_channels if self.bias else 0)
        return params, first * self.in_voxels + core * core_voxels + last * self.out_voxels


@dataclass
class SizeTable:
    """The original network's totals and the geometry of each conv the policy replaces."""

    name: str
    params: int
    flops: int
    convs: list[ConvGeometry]

    def compressed(self, df: float, rank_floor: int = DEFAULT_RANK_FLOOR) -> tuple[int, int]:
        """(parameters, FLOPs per patch) at ``df``; DF 1 is the original network."""
        if df >= 1.0:
            return self.params, self.flops
        params, flops = self.params, self.flops
        for conv in self.convs:
            ranks = tucker_ranks(conv.in_channels, conv.out_channels, df, rank_floor)
            p0, f0 = conv.original()
            p1, f1 = conv.tucker(*ranks)
            params, flops = params - p0 + p1, flops - f0 + f1
        return params, flops


def size_table(spec: NetworkSpec, policy: str = "default") -> SizeTable:
    """Count ``spec``'s original network once and record each replaced conv's geometry."""
    from .counting import count_network

    network = spec.build("meta")
    count = count_network(network, spec.patch_size, spec.input_channels)
    convs: list[ConvGeometry] = []
    seen: set[int] = set()

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        convs.append(
            ConvGeometry(
                module.in_channels,
                module.out_channels,
                math.prod(module.kernel_size),
                math.prod(inputs[0].shape[2:]),
                math.prod(output.shape[2:]),
                module.bias is not None,
                isinstance(module, nn.ConvTranspose3d),
            )
        )

    handles = [
        m.register_forward_hook(hook) for m in network.modules() if should_factorize(m, policy)
    ]
    try:
        with torch.no_grad():
            network(torch.empty(1, spec.input_channels, *spec.patch_size, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return SizeTable(spec.name, count.params, count.flops, convs)
