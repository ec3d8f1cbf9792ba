"""Per-layer Tucker ranks for a budget, chosen without training.

One DF for every layer spends parameters where they buy nothing: some kernels keep almost all
their energy in a few channel directions, others need many. The planner measures, for every
factorizable conv, how much of the kernel's energy each pair of ranks keeps (the paper's
Appendix B explained variance, exact for every rank pair from one rotation of the kernel into
its HOSVD bases), and spends the budget — parameters or GFLOPs per patch — step by step where
the next step keeps the most energy per unit of cost (a greedy knapsack on a concave gain). For
a latency budget each layer's cost is its measured milliseconds on the device (`LayerLatency`,
timed by runtime/latency_model.py), so a layer whose Tucker block is not faster there keeps its
original conv and the time is bought where the device actually saves it.
The result is a list of `LayerRanks` that `compress_layers` applies like any manifest's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import TuckerSegmentError
from .agreement_prediction import rank_signals
from .compress import LayerRanks, _conv_layers
from .factorize import _leading_left_vectors
from .ranks import DEFAULT_RANK_FLOOR, tucker_ranks

if TYPE_CHECKING:
    from .counting import NetworkCount

BUDGET_KINDS = ("params", "gflops", "ms")


@dataclass(frozen=True)
class LayerLatency:
    """A layer's measured milliseconds for one patch on a device: its original conv, and its
    Tucker block at probe ranks (``block_gflops``). A block's time at other ranks is read off
    the line through those two points against the layer's FLOPs (a block has fixed costs —
    three kernels, memory traffic — that FLOPs miss, which the line's intercept carries); a block
    not faster than the conv at the probe is priced at the conv's time at every rank, so a plan
    buys no time there and keeps the conv."""

    conv_ms: float
    block_ms: float
    block_gflops: float

    def milliseconds(self, gflops: float, full_gflops: float, at_full_rank: bool) -> float:
        if at_full_rank or self.block_ms >= self.conv_ms:
            return self.conv_ms
        span = full_gflops - self.block_gflops
        if span < 0.01 * full_gflops:  # the probe saved (almost) no FLOPs: no line to read
            return self.block_ms  # (a slope over a vanishing span would price ranks at ~∞)
        slope = (self.conv_ms - self.block_ms) / span
        return max(0.0, self.block_ms + slope * (gflops - self.block_gflops))


@dataclass
class LayerSpectrum:
    """One conv: channels, the spatial sizes it runs at, and the kept-energy table."""

    name: str
    kind: str  # "conv" or "transposed"
    in_channels: int
    out_channels: int
    kernel_size: list[int]
    voxels_in: int  # spatial size of the input, for one patch
    voxels_core: int  # where the core conv's multiply-adds are counted (FLOP convention)
    voxels_out: int
    bias: bool
    kept: torch.Tensor  # kept[r0, r1]: energy share kept with ranks r0, r1 of weight modes 0, 1
    latency: LayerLatency | None = None  # measured on a device, for latency budgets

    @property
    def kernel_volume(self) -> int:
        return math.prod(self.kernel_size)

    def ranks(self, rank_in: int, rank_out: int) -> LayerRanks:
        """This layer at these ranks, as `compress_layers` applies it."""
        return LayerRanks(
            self.name,
            self.kind,
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            rank_in,
            rank_out,
            self.explained_variance(rank_in, rank_out),
        )

    def explained_variance(self, rank_in: int, rank_out: int) -> float:
        r0, r1 = self._modes(rank_in, rank_out)
        return float(self.kept[r0, r1])

    def _modes(self, rank_in: int, rank_out: int) -> tuple[int, int]:
        # the weight's layout (tucker_block.py): Conv3d (C_out, C_in, …), transposed (C_in, C_out, …)
        return (rank_in, rank_out) if self.kind == "transposed" else (rank_out, rank_in)

    def params(self, rank_in: int, rank_out: int, original_at_full_rank: bool = True) -> int:
        """Parameters of the layer at these ranks: the Tucker block's, or the original conv's
        at full ranks (a plan keeps it; one DF for all layers replaces it all the same)."""
        bias = self.out_channels if self.bias else 0
        full = self.in_channels * self.out_channels * self.kernel_volume + bias
        at_full = rank_in == self.in_channels and rank_out == self.out_channels
        if at_full and original_at_full_rank:
            return full
        return (
            self.in_channels * rank_in
            + rank_in * rank_out * self.kernel_volume
            + rank_out * self.out_channels
            + bias
        )

    def flops(self, rank_in: int, rank_out: int) -> int:
        """Multiply-adds for one patch (counting.py's convention)."""
        core = self.kernel_volume * self.voxels_core
        if rank_in == self.in_channels and rank_out == self.out_channels:
            return self.in_channels * self.out_channels * core
        return (
            self.in_channels * rank_in * self.voxels_in
            + rank_in * rank_out * core
            + rank_out * self.out_channels * self.voxels_out
        )


def _unfold(weight: torch.Tensor, mode: int) -> torch.Tensor:
    return weight.movedim(mode, 0).reshape(weight.shape[mode], -1)


def _kept_table(weight: torch.Tensor) -> torch.Tensor:
    """kept[a, b] = ‖W ×₀ U₀[:, :a]ᵀ ×₁ U₁[:, :b]ᵀ‖² / ‖W‖² with U the left singular vectors
    of the two channel unfoldings: HOSVD's explained variance for every rank pair at once."""
    w = weight.detach().to("cpu", torch.float64)
    total = float(w.pow(2).sum())
    # every left singular vector, strongest first (from the Gram matrix, as factorize does)
    u0 = _leading_left_vectors(_unfold(w, 0), w.shape[0])
    u1 = _leading_left_vectors(_unfold(w, 1), w.shape[1])
    first = torch.tensordot(u0.T, w, dims=([1], [0]))  # (a, C1, k…): mode 0 rotated
    rotated = torch.tensordot(u1.T, first.movedim(1, 0), dims=([1], [0])).movedim(0, 1)
    energy = rotated.pow(2).reshape(rotated.shape[0], rotated.shape[1], -1).sum(-1)
    cumulative = energy.cumsum(0).cumsum(1)
    # a mode with more channels than its unfolding has columns (a first conv: one input
    # channel) has fewer singular vectors than channels: ranks beyond them keep everything
    rows = torch.arange(w.shape[0]).clamp(max=cumulative.shape[0] - 1)
    cols = torch.arange(w.shape[1]).clamp(max=cumulative.shape[1] - 1)
    table = torch.zeros(w.shape[0] + 1, w.shape[1] + 1, dtype=torch.float64)
    table[1:, 1:] = cumulative[rows][:, cols]
    return table / total if total > 0 else torch.ones_like(table)


def layer_spectra(
    network: nn.Module, patch_size: list[int], in_channels: int = 1, policy: str = "default"
) -> list[LayerSpectrum]:
    """The spectra of every conv the layer policy factorizes (network order); spatial sizes from
    one pass of a meta-device copy (shapes only, instant)."""
    import copy

    convs = _conv_layers(network, policy)
    meta = copy.deepcopy(network).to("meta")
    twins = dict(meta.named_modules())
    sizes: dict[str, tuple[int, int]] = {}
    handles = []
    for name, _ in convs:

        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor, name: str = name) -> None:
            sizes[name] = (math.prod(inputs[0].shape[2:]), math.prod(output.shape[2:]))

        handles.append(twins[name].register_forward_hook(hook))
    try:
        with torch.no_grad():
            meta(torch.empty(1, in_channels, *patch_size, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    spectra = []
    for name, conv in convs:
        transposed = isinstance(conv, nn.ConvTranspose3d)
        voxels_in, voxels_out = sizes[name]
        spectra.append(
            LayerSpectrum(
                name,
                "transposed" if transposed else "conv",
                conv.in_channels,
                conv.out_channels,
                list(conv.kernel_size),
                voxels_in,
                voxels_in if transposed else voxels_out,
                voxels_out,
                conv.bias is not None,
                _kept_table(conv.weight),
            )
        )
    return spectra


def uniform_equivalent(
    spectra: list[LayerSpectrum], budget_kind: str, cost: float, rank_floor: int
) -> tuple[float, float]:
    """The largest uniform DF (to 0.001) whose factorized layers cost no more than ``cost``,
    and its mean explained variance: what one DF for all layers keeps for the same spend."""

    def spend(df: float) -> float:
        return sum(
            _cost(s, budget_kind, *tucker_ranks(s.in_channels, s.out_channels, df, rank_floor))
            for s in spectra
        )

    low, high = 0.001, 1.0
    if spend(low) > cost:
        return low, float("nan")
    for _ in range(30):
        mid = (low + high) / 2
        low, high = (mid, high) if spend(mid) <= cost else (low, mid)
    variances = [
        s.explained_variance(*tucker_ranks(s.in_channels, s.out_channels, low, rank_floor))
        for s in spectra
    ]
    return round(low, 3), sum(variances) / max(1, len(variances))


def uniform_dfs_around(spec, params: int, rank_floor: int) -> tuple[tuple[float, int], ...]:  # noqa: ANN001
    """The DFs (to 0.001) whose whole network (``spec``, a NetworkSpec) comes closest to
    ``params`` parameters from below and from above, with their counts (built on the meta
    device: instant). A DF's ranks move in whole channels, so none matches a count exactly."""
    from .compress import CompressionSettings, compress_network
    from .counting import count_original_and_compressed

    def count(df: float) -> int:
        settings = CompressionSettings(df=df, rank_floor=rank_floor)
        return count_original_and_compressed(
            spec, compress_network(spec.build("meta"), settings, False)
        )[1].params

    low, high = 0.001, 1.0
    if count(low) > params:
        raise TuckerSegmentError(
            f"no DF leaves only {params:,} parameters at rank floor {rank_floor}"
        )
    for _ in range(20):
        mid = (low + high) / 2
        low, high = (mid, high) if count(mid) <= params else (low, mid)
    below, above = round(low - 0.0005, 3), min(1.0, round(high + 0.0005, 3))
    return (below, count(below)), (above, count(above))


@dataclass
class Plan:
    """Ranks per layer for a budget, and what they cost and keep."""

    layers: list[LayerRanks]
    budget_kind: str
    budget: float
    params: int  # of the factorized convs (planned) and of the original network's
    params_original: int
    gflops: float
    gflops_original: float
    mean_explained_variance: float
    uniform_df: float  # one DF for all layers at the same spend on the factorized layers
    uniform_mean_explained_variance: float
    signals: dict[str, float] = field(default_factory=dict)  # for the predicted agreement
    milliseconds: float | None = None  # predicted for one patch (latency budgets)


def _cost(spectrum: LayerSpectrum, kind: str, rank_in: int, rank_out: int) -> float:
    if kind == "params":
        return float(spectrum.params(rank_in, rank_out))
    if kind == "ms":
        if spectrum.latency is None:
            raise TuckerSegmentError(f"{spectrum.name}: no measured latency for a latency budget")
        full = (spectrum.in_channels, spectrum.out_channels)
        return spectrum.latency.milliseconds(
            spectrum.flops(rank_in, rank_out) / 1e9,
            spectrum.flops(*full) / 1e9,
            (rank_in, rank_out) == full,
        )
    return spectrum.flops(rank_in, rank_out) / 1e9


def _gain(spectrum: LayerSpectrum, old: tuple[int, int], new: tuple[int, int]) -> float:
    return spectrum.explained_variance(*new) - spectrum.explained_variance(*old)


def _steps(channels: int, rank_floor: int) -> list[int]:
    """The ranks a mode may take: the floor, then sixteenths of the channels, then all."""
    floor = min(channels, rank_floor)
    step = max(1, math.ceil(channels / 16))
    values = sorted({floor, channels, *range(step, channels + 1, step)})
    return [v for v in values if v >= floor]


def plan_ranks(
    spectra: list[LayerSpectrum],
    budget_kind: str,
    budget: float,
    fixed_cost: float,
    rank_floor: int = DEFAULT_RANK_FLOOR,
    weights: list[float] | None = None,
) -> tuple[list[tuple[int, int]], float]:
    """Ranks (in, out) per layer whose cost plus ``fixed_cost`` (what no rank changes: norms,
    1×1×1 convs, the head) stays within ``budget``, keeping the most total explained variance
    (each layer's gains times its ``weights`` entry, 1 without); and the total cost. One line
    when even the rank floor does not fit."""
    if budget_kind not in BUDGET_KINDS:
        raise TuckerSegmentError(f"unknown budget {budget_kind!r}; choose {BUDGET_KINDS}")
    grids = [
        (_steps(s.in_channels, rank_floor), _steps(s.out_channels, rank_floor)) for s in spectra
    ]
    position = [[0, 0] for _ in spectra]
    ranks = [(g_in[0], g_out[0]) for g_in, g_out in grids]
    cost = fixed_cost + sum(_cost(s, budget_kind, *r) for s, r in zip(spectra, ranks, strict=True))
    if cost > budget:
        unit = {"params": "parameters", "gflops": "GFLOPs per patch", "ms": "ms per patch"}[
            budget_kind
        ]
        raise TuckerSegmentError(
            f"the budget ({budget:,.6g} {unit}) is below the smallest network these ranks "
            f"allow ({cost:,.6g} {unit} at rank floor {rank_floor}); raise it or lower --rank-floor"
        )
    while True:
        best = None
        for i, s in enumerate(spectra):
            for mode in (0, 1):
                pos = list(position[i])
                pos[mode] += 1
                if pos[mode] >= len(grids[i][mode]):
                    continue
                new = (grids[i][0][pos[0]], grids[i][1][pos[1]])
                extra = _cost(s, budget_kind, *new) - _cost(s, budget_kind, *ranks[i])
                if cost + extra > budget:
                    continue
                gain = _gain(s, ranks[i], new) * (weights[i] if weights else 1.0)
                value = gain / max(extra, 1e-12)
                if best is None or value > best[0]:
                    best = (value, i, pos, new, extra)
        if best is None:
            return ranks, cost
        _, i, pos, new, extra = best
        position[i], ranks[i] = pos, new
        cost += extra


def plan_network(
    network: nn.Module,
    patch_size: list[int],
    budget_kind: str,
    budget: float,
    in_channels: int = 1,
    rank_floor: int = DEFAULT_RANK_FLOOR,
    spectra: list[LayerSpectrum] | None = None,
    original_ms: float | None = None,
) -> Plan:
    """A plan for ``network`` (with its weights) within ``budget`` (``params``: parameters of
    the whole network; ``gflops``: GFLOPs of one patch; ``ms``: milliseconds of one patch, with
    ``spectra`` carrying each layer's measured `LayerLatency` and ``original_ms`` the whole
    original network's). ``spectra``: the network's layer spectra when already measured (a
    search over budgets measures them once)."""
    from .counting import count_network

    spectra = spectra or layer_spectra(network, patch_size, in_channels)
    original = count_network(network, patch_size, in_channels)
    fixed = _fixed_cost(spectra, original, budget_kind, original_ms)
    ranks, _ = plan_ranks(spectra, budget_kind, budget, fixed, rank_floor)
    plan = _plan(spectra, ranks, original, budget_kind, budget, rank_floor)
    if budget_kind == "ms":
        plan.milliseconds = fixed + sum(
            _cost(s, "ms", *r) for s, r in zip(spectra, ranks, strict=True)
        )
    return plan


def plan_networks(
    networks: dict[str, tuple[nn.Module, list[int], int]],
    budget_kind: str,
    budget: float,
    rank_floor: int = DEFAULT_RANK_FLOOR,
    weights: dict[str, float] | None = None,
) -> dict[str, Plan]:
    """One budget for several networks — TS's five experts in full mode run on the same CT —:
    the layers of all of them compete for it, so an expert whose kernels compress well gives
    its share to one whose kernels don't. ``networks``: name → (network, patch size, input
    channels); ``weights``: name → how much that network's kept variance counts (cli/plan.py
    gives the share of its structures present in the user's images; 1 each without). Each
    plan's ``budget`` is what it was given of the shared one."""
    from .counting import count_network

    spectra, originals, fixed = {}, {}, 0.0
    for name, (network, patch_size, in_channels) in networks.items():
        spectra[name] = layer_spectra(network, patch_size, in_channels)
        originals[name] = count_network(network, patch_size, in_channels)
        fixed += _fixed_cost(spectra[name], originals[name], budget_kind)
    pooled = [(name, s) for name in networks for s in spectra[name]]
    gains = [(weights or {}).get(name, 1.0) for name, _ in pooled]
    ranks, _ = plan_ranks([s for _, s in pooled], budget_kind, budget, fixed, rank_floor, gains)
    plans = {}
    for name in networks:
        own = [r for (owner, _), r in zip(pooled, ranks, strict=True) if owner == name]
        plan = _plan(spectra[name], own, originals[name], budget_kind, budget, rank_floor)
        plan.budget = plan.params if budget_kind == "params" else plan.gflops
        plans[name] = plan
    return plans


def _fixed_cost(
    spectra: list[LayerSpectrum],
    original: NetworkCount,
    budget_kind: str,
    original_ms: float | None = None,
) -> float:
    """What no rank changes: the whole network's cost less its factorizable convs' at full rank
    (for ``ms``: the original network's measured time less its convs' measured times)."""
    factorized = sum(_cost(s, budget_kind, s.in_channels, s.out_channels) for s in spectra)
    if budget_kind == "ms":
        if original_ms is None:
            raise TuckerSegmentError("a latency budget needs the original network's measured time")
        return original_ms - factorized
    total = original.params if budget_kind == "params" else original.gflops
    return total - factorized


def _plan(
    spectra: list[LayerSpectrum],
    ranks: list[tuple[int, int]],
    original: NetworkCount,
    budget_kind: str,
    budget: float,
    rank_floor: int,
) -> Plan:
    full = {s.name: (s.in_channels, s.out_channels) for s in spectra}
    layers = [  # a layer planned at full ranks keeps its original conv (not listed)
        s.ranks(r_in, r_out)
        for s, (r_in, r_out) in zip(spectra, ranks, strict=True)
        if (r_in, r_out) != full[s.name]
    ]
    params = original.params - sum(
        s.params(*full[s.name]) - s.params(*r) for s, r in zip(spectra, ranks, strict=True)
    )
    flops = original.flops - sum(
        s.flops(*full[s.name]) - s.flops(*r) for s, r in zip(spectra, ranks, strict=True)
    )
    variances = [s.explained_variance(*r) for s, r in zip(spectra, ranks, strict=True)]
    spent = sum(_cost(s, budget_kind, *r) for s, r in zip(spectra, ranks, strict=True))
    uniform_df, uniform_variance = uniform_equivalent(spectra, budget_kind, spent, rank_floor)
    signals = rank_signals(spectra, {s.name: r for s, r in zip(spectra, ranks, strict=True)})
    return Plan(
        layers,
        budget_kind,
        budget,
        params,
        original.params,
        flops / 1e9,
        original.gflops,
        sum(variances) / max(1, len(variances)),
        uniform_df,
        uniform_variance,
        signals,
    )
