"""Pruning baselines on the same networks: the paper's L2 filter pruning and the thesis's
random pruning of the widest layers, both as zeroed filters (same shapes).

* ``l2`` (the Tucker paper, §2.3): per layer, the L2 norm of each output channel of the kernel;
  the given fraction with the smallest norms is removed — here zeroed, the paper's comparison.
* ``random-widest`` (the STAMP/Flat U-Net thesis): filters removed at random, but always from
  the currently widest layers, until the given fraction of the layers' kernel weights is gone.

The layers are those the Tucker compression factorizes (every k×k×k conv, the layer policy), so
the three methods are compared on the same weights. Zeroed (the paper's comparison), a zeroed
filter's instance norm outputs only its bias: the network keeps its shapes and runs anywhere the
original runs. Structured (:func:`remove_channels`), the same filters are removed for real:
Torch-Pruning's dependency graph shrinks everything that depends on them — the instance norm,
the next conv's inputs, the decoder's skip concatenations and transposed convs — so the network
is smaller and faster; :func:`module_shapes` / :func:`reshape_modules` store and rebuild it.
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


SHAPED = (nn.Conv3d, nn.ConvTranspose3d, nn.InstanceNorm3d)


def remove_channels(
    network: nn.Module, pruned: list[PrunedLayer], input_channels: int, strides: list
) -> None:
    """Remove the chosen output channels of each pruned layer, and with them every input,
    norm and concatenation slice that depends on them (Torch-Pruning's DepGraph; nnU-Net's
    U-Net has skip concatenations that hand-written surgery would have to track)."""
    import torch_pruning as tp

    for module in network.modules():
        if getattr(module, "inplace", False):
            module.inplace = False  # the graph is traced from values: in-place ops hide them
    # one forward traces the graph: the smallest input every stride divides, twice over
    size = [2 * math.prod(int(s[axis]) for s in strides) for axis in range(3)]
    example = torch.zeros(1, input_channels, *size)
    # traced with deep supervision on, so the lower decoder stages' heads (used in training,
    # e.g. when fine-tuning the pruned network) shrink with their inputs too
    decoder = getattr(network, "decoder", None)
    supervised = getattr(decoder, "deep_supervision", None)
    if supervised is not None:
        decoder.deep_supervision = True
    try:
        graph = tp.DependencyGraph().build_dependency(network, example_inputs=example)
    finally:
        if supervised is not None:
            decoder.deep_supervision = supervised
    modules = dict(network.named_modules())
    for layer in pruned:
        if not layer.zeroed:
            continue
        conv = modules[layer.name]
        group = graph.get_pruning_group(
            conv, graph.get_pruner_of_module(conv).prune_out_channels, idxs=list(layer.zeroed)
        )
        if not graph.check_pruning_group(group):
            raise TuckerSegmentError(f"{layer.name}: pruning would remove every channel")
        group.prune()


def module_shapes(network: nn.Module) -> dict[str, list[int]]:
    """Channels of every conv ([in, out]) and instance norm ([features]): enough to rebuild a
    structurally pruned network from its original architecture."""
    shapes = {}
    for name, module in network.named_modules():
        if isinstance(module, nn.InstanceNorm3d):
            shapes[name] = [module.num_features]
        elif isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            shapes[name] = [module.in_channels, module.out_channels]
    return shapes


def shapes_in_state(network: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    """The channels ``state`` (a state dict of ``network``'s architecture, pruned or not) was
    saved with, as :func:`module_shapes` gives them: a checkpoint's weights carry its shapes, so
    no record beside it can fall out of step with them."""
    shapes = {}
    for name, module in network.named_modules():
        weight = state.get(f"{name}.weight")
        if weight is None:
            continue
        if isinstance(module, nn.InstanceNorm3d):
            shapes[name] = [int(weight.shape[0])]
        elif isinstance(module, nn.Conv3d):
            shapes[name] = [int(weight.shape[1]) * module.groups, int(weight.shape[0])]
        elif isinstance(module, nn.ConvTranspose3d):
            shapes[name] = [int(weight.shape[0]), int(weight.shape[1]) * module.groups]
    return shapes


def reshape_modules(network: nn.Module, shapes: dict[str, list[int]]) -> None:
    """Give the original architecture the pruned channel counts (modules rebuilt with the
    same kernel, stride and padding, on the device the network is on — meta for loading)."""
    modules = dict(network.named_modules())
    device = next(network.parameters()).device
    replaced: dict[int, nn.Module] = {}
    for name, shape in shapes.items():
        module = modules.get(name)
        if not isinstance(module, SHAPED):
            raise TuckerSegmentError(f"{name}: not a conv or instance norm of this network")
        with torch.device(device):
            if isinstance(module, nn.InstanceNorm3d):
                new = nn.InstanceNorm3d(
                    shape[0],
                    module.eps,
                    module.momentum,
                    module.affine,
                    module.track_running_stats,
                )
            else:
                kind = type(module)
                new = kind(
                    shape[0],
                    shape[1],
                    module.kernel_size,
                    module.stride,
                    module.padding,
                    **(
                        {"output_padding": module.output_padding}
                        if kind is nn.ConvTranspose3d
                        else {}
                    ),
                    groups=module.groups,
                    bias=module.bias is not None,
                    dilation=module.dilation,
                )
        replaced[id(module)] = new
    # nnU-Net holds each conv and norm twice (`conv` and `all_modules.0`): every reference goes
    for parent in list(network.modules()):
        for child_name, child in list(parent._modules.items()):
            if child is not None and id(child) in replaced:
                parent._modules[child_name] = replaced[id(child)]
