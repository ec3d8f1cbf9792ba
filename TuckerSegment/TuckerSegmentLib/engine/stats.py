"""Parameter and FLOP tables: the original network and its compressed variants per DF."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .compress import CompressionSettings, LayerRanks, compress_network
from .counting import NetworkCount, count_network

if TYPE_CHECKING:  # a spec is anything with build(), patch_size, input_channels
    from ..ts.network_spec import NetworkSpec

DEFAULT_DFS = (0.9, 0.7, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05)


@dataclass
class StatsRow:
    """One row: DF (1.0 for the original), parameters and GFLOPs for one patch."""

    df: float | None
    params: int
    gflops: float
    original: bool = False
    architecture: str = ""  # another architecture's row (e.g. "flat 32"), uncompressed

    def to_json(self) -> dict:
        row = {"df": self.df, "params": self.params, "gflops": self.gflops}
        return {**row, "architecture": self.architecture} if self.architecture else row


def compressed_count(
    spec: NetworkSpec, settings: CompressionSettings
) -> tuple[NetworkCount, list[LayerRanks]]:
    """Count the compressed network without decomposing (meta device, instant)."""
    network = spec.build("meta")
    layers = compress_network(network, settings, decompose=False)
    return count_network(network, spec.patch_size, spec.input_channels), layers


def stats_table(
    spec: NetworkSpec,
    dfs: tuple[float, ...] = DEFAULT_DFS,
    rank_floor: int = 8,
    policy: str = "default",
) -> list[StatsRow]:
    """Rows for the original network and each DF."""
    original = count_network(spec.build("meta"), spec.patch_size, spec.input_channels)
    rows = [StatsRow(1.0, original.params, original.gflops, original=True)]
    for df in dfs:
        settings = CompressionSettings(df=df, rank_floor=rank_floor, policy=policy)
        count, _ = compressed_count(spec, settings)
        rows.append(StatsRow(settings.df, count.params, count.gflops))
    return rows


def architecture_row(spec: NetworkSpec, label: str) -> StatsRow:
    """Another architecture (uncompressed) beside the DF rows, counted the same way."""
    count = count_network(spec.build("meta"), spec.patch_size, spec.input_channels)
    return StatsRow(None, count.params, count.gflops, architecture=label)


def format_stats(rows: list[StatsRow], title: str) -> str:
    """A plain-text table with reductions relative to the original row."""
    base = rows[0]
    lines = [title, f"{'DF':>8} {'M-params':>10} {'GFLOPs':>10} {'params':>8} {'FLOPs':>8}"]
    for row in rows:
        label = row.architecture or ("original" if row.original else f"{row.df:g}")
        lines.append(
            f"{label:>8} {row.params / 1e6:>10.3f} {row.gflops:>10.2f} "
            f"{100 * row.params / base.params:>7.1f}% {100 * row.gflops / base.gflops:>7.1f}%"
        )
    return "\n".join(lines)
