"""Swap a network's convolutions for Tucker blocks (decomposed, or empty to be loaded)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from ..errors import TuckerSegmentError
from .factorize import METHODS, explained_variance, factorize
from .layer_policy import check_policy, should_factorize
from .ranks import DEFAULT_RANK_FLOOR, check_df, check_rank_floor, tucker_ranks
from .tucker_block import TuckerConv3d, mode_ranks


@dataclass(frozen=True)
class CompressionSettings:
    """DF, rank floor, method and layer policy of one compression."""

    df: float = 0.3
    rank_floor: int = DEFAULT_RANK_FLOOR
    method: str = "hosvd"
    policy: str = "default"

    def __post_init__(self) -> None:
        object.__setattr__(self, "df", check_df(self.df))
        object.__setattr__(self, "rank_floor", check_rank_floor(self.rank_floor))
        if self.method not in METHODS:
            raise TuckerSegmentError(
                f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}"
            )
        check_policy(self.policy)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LayerRanks:
    """One replaced layer: its module name, kind, channels and Tucker ranks."""

    name: str
    kind: str
    in_channels: int
    out_channels: int
    kernel_size: list[int]
    rank_in: int
    rank_out: int
    explained_variance: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _replace_everywhere(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Point every reference to ``old`` in ``root`` at ``new`` (nnU-Net keeps two per conv)."""
    for parent in root.modules():
        for key, child in list(parent._modules.items()):
            if child is old:
                parent._modules[key] = new


def _conv_layers(network: nn.Module, policy: str) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in network.named_modules() if should_factorize(m, policy)]


def compress_network(
    network: nn.Module, settings: CompressionSettings, decompose: bool = True
) -> list[LayerRanks]:
    """Replace, in place, each conv chosen by the layer policy by a Tucker block.

    With ``decompose`` the blocks get the factorized weights; otherwise they stay empty
    (for counting on the meta device). Returns the layers replaced, in network order.
    """
    layers = []
    for name, conv in _conv_layers(network, settings.policy):
        rank_in, rank_out = tucker_ranks(
            conv.in_channels, conv.out_channels, settings.df, settings.rank_floor
        )
        block = TuckerConv3d(conv, rank_in, rank_out)
        variance = None
        if decompose:
            factors = factorize(conv.weight, mode_ranks(conv, rank_in, rank_out), settings.method)
            block.load_factors(factors, conv.bias)
            variance = explained_variance(conv.weight, factors)
        _replace_everywhere(network, conv, block)
        layers.append(
            LayerRanks(
                name,
                "transposed" if block.transposed else "conv",
                conv.in_channels,
                conv.out_channels,
                list(conv.kernel_size),
                rank_in,
                rank_out,
                variance,
            )
        )
    return layers


def compress_layers(network: nn.Module, layers: list[LayerRanks], method: str = "hosvd") -> None:
    """Decompose exactly ``layers`` (names and ranks, e.g. another fold's manifest) in place."""
    modules = dict(network.named_modules())
    for layer in layers:
        conv = modules[layer.name]
        block = TuckerConv3d(conv, layer.rank_in, layer.rank_out)
        factors = factorize(conv.weight, mode_ranks(conv, layer.rank_in, layer.rank_out), method)
        block.load_factors(factors, conv.bias)
        _replace_everywhere(network, conv, block)


def apply_layer_ranks(network: nn.Module, layers: list[LayerRanks]) -> None:
    """Insert empty Tucker blocks with the given ranks (to load saved weights into)."""
    modules = dict(network.named_modules())
    for layer in layers:
        conv = modules.get(layer.name)
        if conv is None or not isinstance(conv, (nn.Conv3d, nn.ConvTranspose3d)):
            raise TuckerSegmentError(
                f"layer {layer.name!r} of the manifest is not a conv of this network"
            )
        if (conv.in_channels, conv.out_channels) != (layer.in_channels, layer.out_channels):
            raise TuckerSegmentError(
                f"layer {layer.name!r}: manifest says {layer.in_channels}→{layer.out_channels} "
                f"channels, network has {conv.in_channels}→{conv.out_channels}"
            )
        _replace_everywhere(network, conv, TuckerConv3d(conv, layer.rank_in, layer.rank_out))
