"""Per-layer compression report: ranks, params and FLOPs before/after, explained variance."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .compress import LayerRanks
from .counting import NetworkCount

_PARTS = ("first", "core", "last")


@dataclass
class LayerReport:
    """One replaced layer, measured for one patch."""

    name: str
    kind: str
    channels: str
    ranks: str
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    explained_variance: float | None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class CompressionReport:
    """Whole-network totals and the per-layer rows."""

    params_before: int
    params_after: int
    gflops_before: float
    gflops_after: float
    layers: list[LayerReport]

    def to_json(self) -> dict:
        data = asdict(self)
        data["layers"] = [layer.to_json() for layer in self.layers]
        return data


def build_report(
    before: NetworkCount, after: NetworkCount, layers: list[LayerRanks]
) -> CompressionReport:
    """Combine the counts of the original and compressed networks with the layer ranks."""
    rows = []
    for layer in layers:
        parts = [f"{layer.name}.{p}" for p in _PARTS]
        rows.append(
            LayerReport(
                name=layer.name,
                kind=layer.kind,
                channels=f"{layer.in_channels}→{layer.out_channels}",
                ranks=f"{layer.rank_in}/{layer.rank_out}",
                params_before=before.module_params.get(layer.name, 0),
                params_after=sum(after.module_params.get(p, 0) for p in parts),
                flops_before=before.module_flops.get(layer.name, 0),
                flops_after=sum(after.module_flops.get(p, 0) for p in parts),
                explained_variance=layer.explained_variance,
            )
        )
    return CompressionReport(before.params, after.params, before.gflops, after.gflops, rows)


def format_compression_report(report: CompressionReport) -> str:
    """A plain-text per-layer table and the totals."""
    lines = [
        f"{'layer':<44} {'kind':<10} {'channels':>9} {'R_in/R_out':>10} "
        f"{'params':>17} {'MFLOPs':>21} {'expl.var':>8}"
    ]
    for r in report.layers:
        variance = "" if r.explained_variance is None else f"{r.explained_variance:.4f}"
        lines.append(
            f"{r.name:<44} {r.kind:<10} {r.channels:>9} {r.ranks:>10} "
            f"{r.params_before:>8}→{r.params_after:<8} "
            f"{r.flops_before / 1e6:>10.0f}→{r.flops_after / 1e6:<10.0f} {variance:>8}"
        )
    lines.append(
        f"total: {report.params_before / 1e6:.3f} M → {report.params_after / 1e6:.3f} M params "
        f"({100 * (1 - report.params_after / report.params_before):.1f}% fewer), "
        f"{report.gflops_before:.2f} → {report.gflops_after:.2f} GFLOPs per patch"
    )
    return "\n".join(lines)
