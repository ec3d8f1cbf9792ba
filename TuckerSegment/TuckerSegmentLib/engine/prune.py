"""Pruning baselines on the same networks: the paper's L2 filter pruning and the thesis's
random pruning of the widest layers, both as zeroed filters (same shapes).

* ``l2`` (the Tucker paper, §2.3): per layer, the L2 norm of each output channel of the kernel;
  the given fraction with the smallest norms is removed — here zeroed, the paper's comparison.
* ``random-widest`` (the STAMP/Flat U-Net thesis): filters removed at random, but always from
  the currently widest layers, until the given fraction of the layers' kernel weights is gone.

The layers are those the Tucker compression factorizes (every k×k×k conv, the layer policy), so
the three methods are compared on the same weights. A zeroed filter's instance norm outputs only
its bias: the network keeps its shapes and runs anywhere the original runs. Real structured
pruning (channels removed, the next layer shrunk) is not here yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import TuckerSegmentError
from .compress import _conv_layers

METHODS = ("l2", "random-widest")


@dataclass
class PrunedLayer:
    name: str
    out_channels: int
    zeroed: list[int]


def _out_mode(conv: nn.Module) -> int:
    return 1 if isinstance(conv, nn.ConvTranspose3d) else 0


def channel_norms(conv: nn.Module) -> torch.Tensor:
    """L2 norm of each output channel of the kernel."""
    w = conv.weight.detach()
    mode = _out_mode(conv)
    return w.movedim(mode, 0).reshape(w.shape[mode], -1).norm(dim=1)


@torch.no_grad()
def _zero(conv: nn.Module, channels: list[int]) -> None:
    if not channels:
        return
    index = torch.tensor(channels, dtype=torch.long)
    conv.weight.index_fill_(_out_mode(conv), index, 0.0)
    if conv.bias is not None:
        conv.bias.index_fill_(0, index, 0.0)


def prune_network(
    network: nn.Module, method: str, ratio: float, seed: int = 0, policy: str = "default"
) -> list[PrunedLayer]:
    """Zero filters of ``network`` in place; returns what was zeroed per layer."""
    if method not in METHODS:
        raise TuckerSegmentError(f"unknown pruning method {method!r}; choose {', '.join(METHODS)}")
    if not 0.0 < ratio < 1.0:
        raise TuckerSegmentError(f"--ratio must be between 0 and 1 (exclusive), got {ratio:g}")
    layers = _conv_layers(network, policy)
    if method == "l2":
        pruned = []
        for name, conv in layers:
            norms = channel_norms(conv)
            count = int(math.floor(ratio * norms.numel()))
            chosen = torch.argsort(norms, stable=True)[:count].tolist()
            _zero(conv, chosen)
            pruned.append(PrunedLayer(name, norms.numel(), sorted(chosen)))
        return pruned
    return _random_widest(layers, ratio, seed)


def _random_widest(layers: list, ratio: float, seed: int) -> list[PrunedLayer]:
    generator = torch.Generator().manual_seed(seed)
    alive = {name: list(range(conv.out_channels)) for name, conv in layers}
    size = {name: conv.weight.numel() // conv.out_channels for name, conv in layers}
    total = sum(conv.weight.numel() for _, conv in layers)
    removed = 0
    zeroed: dict[str, list[int]] = {name: [] for name, _ in layers}
    while removed < ratio * total:
        widest = max(len(channels) for channels in alive.values())
        if widest <= 1:
            break
        candidates = [name for name, channels in alive.items() if len(channels) == widest]
        name = candidates[int(torch.randint(len(candidates), (1,), generator=generator))]
        channels = alive[name]
        channel = channels.pop(int(torch.randint(len(channels), (1,), generator=generator)))
        zeroed[name].append(channel)
        removed += size[name]
    modules = dict(layers)
    for name, channels in zeroed.items():
        _zero(modules[name], channels)
    return [PrunedLayer(name, conv.out_channels, sorted(zeroed[name])) for name, conv in layers]


def zeroed_share(network: nn.Module, pruned: list[PrunedLayer]) -> float:
    """Share of the pruned layers' kernel weights that are zeroed filters."""
    modules = dict(network.named_modules())
    total = sum(modules[p.name].weight.numel() for p in pruned)
    gone = sum(modules[p.name].weight.numel() // p.out_channels * len(p.zeroed) for p in pruned)
    return gone / total if total else 0.0
