"""`benchmark`: forward time of one TS patch for the original network and each DF, on this
machine, interleaved in one run; the layout of the paper's Table 2 for the user's device.

Seeded random weights at the real TS architecture (weights don't change speed); or, with
``given`` models (pruned, planned, fine-tuned: `benchmark --compressed-model`), those networks
beside the original of their architecture, since a pruned network's speed is what its shapes
give, not its FLOP count. Variants are
timed round-robin after a warm-up, and the median of the repeats is reported, so a background
load affects all variants alike; speed-ups are ratios within the run.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engine.compress import CompressionSettings, compress_network
from ..engine.counting import count_network
from ..errors import TuckerSegmentError
from ..ts.network_spec import NetworkSpec
from .precision import autocast


@dataclass
class BenchmarkRow:
    """One variant: DF (1.0 = original), params, GFLOPs, median forward time, speed-up, memory."""

    model: str
    df: float
    params: int
    gflops: float
    median_ms: float
    speedup: float
    peak_memory_mib: float | None
    device: str
    precision: str
    variant: str = "default"  # layer policy of the compressed rows; "original" for DF 1
    runtime: str = "eager"  # "fused": cpu_fusion's execution of the same network
    allocator: str = "default"  # "reuse": freed memory kept for reuse (allocator.py)
    label: str = ""  # a given model's name (its folder); empty for the DF grid's rows

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _peak_rss_reset() -> bool:
    """Reset Linux's peak-RSS counter (VmHWM) so it can be read per variant."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _rss_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _forward(network: nn.Module, x: torch.Tensor, device: str, precision: str) -> None:
    kind = device.split(":")[0]  # cuda:N autocasts as cuda
    with torch.no_grad(), autocast(kind, precision):
        network(x)
    if kind == "cuda":
        torch.cuda.synchronize(x.device)


def _peak_memory(network: nn.Module, x: torch.Tensor, device: str, precision: str) -> float | None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _forward(network, x, device, precision)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    if device == "cpu" and _peak_rss_reset():
        base = _rss_kib("VmRSS:")
        _forward(network, x, device, precision)
        peak = _rss_kib("VmHWM:")
        if base is not None and peak is not None:
            return max(0, peak - base) / 1024
    return None


RUNTIMES = ("eager", "fused", "openvino", "openvino-bf16", "openvino-int8")


def _release(network: nn.Module) -> None:
    """Free what a runtime holds between passes (OpenVINO's compiled model and its memory)."""
    if hasattr(network, "release"):
        network.release()


def _available_mib() -> float | None:
    """Memory this process may still use: the system's MemAvailable, or less where a cgroup
    (a container) limits it; None where neither can be read."""
    values = []
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    values.append(int(line.split()[1]) / 1024)
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            values.append((int(limit) - used) / 2**20)
    except (OSError, ValueError):
        pass
    return min(values) if values else None


def _compiled_memory_fits(variants: list, memory: list[float | None]) -> bool:
    """Whether every OpenVINO row can stay compiled through the timing: their measured peaks
    together within three quarters of the memory available now. Else each is compiled, warmed
    and released around its own pass (`--runtime all` over the DF grid held 18 compiled models,
    ~1.1 GB each for a 3 mm patch: more than this 24 GB machine has)."""
    readings = [
        m for (_, _, net, _), m in zip(variants, memory, strict=True) if hasattr(net, "release")
    ]
    if not readings:
        return True
    available = _available_mib()
    if available is None or None in readings:  # not known: release rather than run out
        return False
    return sum(readings) <= 0.75 * available


def _under(
    runtime: str, network: nn.Module, spec: NetworkSpec, folder: Path, every: bool = True
) -> nn.Module | None:
    """``network`` run by ``runtime`` (a copy), or None when that runtime cannot run it here;
    ``every``: part of ``--runtime all`` (else asked for by name: bf16 without native bf16 is
    refused)."""
    import copy

    from .cpu_fusion import fuse

    if runtime == "eager":
        return network
    if runtime == "fused":
        fused = copy.deepcopy(network)
        return fused if fuse(fused) else None
    from .calibration import CalibrationRecipe
    from .openvino_runtime import (
        OPENVINO_RUNTIMES,
        import_nncf,
        native_bf16,
        openvino_network,
        version,
    )

    if runtime == "openvino-bf16" and version() is not None and not native_bf16():
        if not every:
            raise TuckerSegmentError(
                "--runtime openvino-bf16: this CPU has no native bf16 (OpenVINO reports none); "
                "it would run f32, the openvino rows again"
            )
        return None  # with `all`: no bf16 rows here
    calibration = None
    if runtime == "openvino-int8":
        try:
            import_nncf()
        except ImportError:
            return None  # NNCF not installed: no int8 rows
        calibration = CalibrationRecipe(
            "random", (64, 64, 64), seed=0, in_channels=spec.input_channels
        )
    converted, _ = openvino_network(
        network,
        spec.input_channels,
        spec.num_classes,
        folder,
        spec.patch_size,
        calibration,
        OPENVINO_RUNTIMES[runtime],
    )
    return converted


def build_variants(
    spec: NetworkSpec,
    dfs: list[float],
    device: str,
    precision: str = "fp32",
    policy: str = "default",
    seed: int = 0,
    rank_floor: int = 8,
    runtime: str = "eager",
    folder: Path | None = None,
) -> list[tuple[float, str, nn.Module, nn.Module]]:
    """(DF, runtime, network, the torch network it runs, for counting): first the original network as TS runs it (seeded random weights,
    torch eager), then the original under each other runtime asked for (``all``: every one; the
    peers to beat), then each DF under each runtime. fused and openvino need the CPU and fp32."""
    import copy
    import tempfile

    from ..engine.layer_policy import should_factorize
    from .devices import device_kind

    runtimes = list(RUNTIMES) if runtime == "all" else ["eager", runtime]
    if device_kind(device) != "cpu" or precision != "fp32":
        runtimes = ["eager"]
    runtimes = list(dict.fromkeys(runtimes))
    folder = Path(folder or tempfile.mkdtemp(prefix="tuckersegment-benchmark-"))
    original = spec.build("cpu", seed=seed).to(device).eval()
    variants: list[tuple[float, str, nn.Module, nn.Module]] = [(1.0, "eager", original, original)]
    for name in runtimes[1:]:
        under = _under(name, original, spec, folder / f"original-{name}", runtime == "all")
        if under is not None:
            variants.append((1.0, name, under, original))
    for df in dfs:
        network = copy.deepcopy(original).cpu()
        originals = {n: m for n, m in network.named_modules() if should_factorize(m, policy)}
        layers = compress_network(
            network, CompressionSettings(df=df, rank_floor=rank_floor, policy=policy)
        )
        network = network.to(device).eval()
        if policy == "latency":
            from .latency_policy import keep_faster_layers

            keep_faster_layers(network, originals, layers, spec, device, precision)
        for name in runtimes if runtime == "all" else runtimes[-1:]:
            under = _under(name, network, spec, folder / f"df{df:g}-{name}", runtime == "all")
            if under is not None:
                variants.append((df, name, under, network))
            elif name == "fused" and runtime != "all":  # "all" has its eager row already
                variants.append((df, "eager", network, network))
    return variants


def build_given_variants(
    spec: NetworkSpec,
    given: list[tuple[str, float, nn.Module]],
    device: str,
    precision: str,
    runtime: str,
    folder: Path,
) -> tuple[list[tuple[float, str, nn.Module, nn.Module]], list[str]]:
    """As build_variants, with the given (label, DF, network) models in place of the DF grid;
    also each variant's label ("original" for the original's rows)."""
    variants = build_variants(spec, [], device, precision, runtime=runtime, folder=folder)
    labels = ["original"] * len(variants)
    runtimes = list(dict.fromkeys(v[1] for v in variants))
    for index, (label, df, network) in enumerate(given):
        network = network.to(device).eval()
        for name in runtimes if runtime == "all" else runtimes[-1:]:
            under = _under(name, network, spec, folder / f"given{index}-{name}", runtime == "all")
            if under is not None:
                variants.append((df, name, under, network))
            elif runtime != "all":  # a runtime that cannot run this network: its eager row
                variants.append((df, "eager", network, network))
            else:
                continue
            labels.append(label)
    return variants, labels


def run_benchmark(
    spec: NetworkSpec,
    dfs: list[float],
    device: str = "cpu",
    precision: str = "fp32",
    repeats: int = 5,
    warmup: int = 1,
    patch_size: list[int] | None = None,
    progress=None,  # noqa: ANN001
    policy: str = "default",
    runtime: str = "eager",
    allocator: str = "default",
    given: list[tuple[str, float, nn.Module]] | None = None,
) -> list[BenchmarkRow]:
    """Time the original and each DF (or each ``given`` (label, DF, network)) on one patch;
    rows in the order original, (original under other runtimes,) then ``dfs`` or ``given``.
    Speed-ups are against the original as TS runs it."""
    patch = list(patch_size or spec.patch_size)
    if patch != list(spec.patch_size):
        from dataclasses import replace

        spec = replace(spec, patch_size=patch)
    import tempfile

    conversions = tempfile.TemporaryDirectory(prefix="tuckersegment-benchmark-")
    if given:
        variants, names = build_given_variants(
            spec, given, device, precision, runtime, Path(conversions.name)
        )
    else:
        variants = build_variants(
            spec, dfs, device, precision, policy, runtime=runtime, folder=Path(conversions.name)
        )
        names = [""] * len(variants)
    x = torch.randn(1, spec.input_channels, *patch, device=device)
    counts = [count_network(torch_net, patch, spec.input_channels) for *_, torch_net in variants]
    memory = []
    for _, _, net, _ in variants:
        memory.append(_peak_memory(net, x, device, precision))
        _release(net)  # compiled OpenVINO memory (~1 GB a 3 mm patch) is not held for all rows
    keep = _compiled_memory_fits(variants, memory)
    if allocator == "reuse" and device == "cpu":  # after the memory readings: RSS stays high
        from .allocator import keep_freed_memory

        allocator = "reuse" if keep_freed_memory() else "default"
    else:
        allocator = "default"
    for _ in range(warmup):
        for _, _, net, _ in variants:
            if keep or not hasattr(net, "release"):  # else warmed before each timed pass
                _forward(net, x, device, precision)
    times: list[list[float]] = [[] for _ in variants]
    for r in range(repeats):
        for i, (_, _, net, _) in enumerate(variants):
            held = keep or not hasattr(net, "release")
            if not held:  # compiled again: its first pass sets memory up, the timed one reuses it
                _forward(net, x, device, precision)
            start = time.perf_counter()
            _forward(net, x, device, precision)
            times[i].append(time.perf_counter() - start)
            if not held:
                _release(net)
        if progress is not None:
            progress((r + 1) / repeats, f"repeat {r + 1}/{repeats}")
    medians = [statistics.median(t) * 1000 for t in times]
    labels = [(df, used, name) for (df, used, _, _), name in zip(variants, names, strict=True)]
    del variants, net  # compiled OpenVINO models may map their files: release them, then delete
    conversions.cleanup()
    return [
        BenchmarkRow(
            spec.name,
            df,
            c.params,
            c.gflops,
            m,
            medians[0] / m,
            mem,
            device,
            precision,
            _variant(name, df, policy),
            used,
            allocator,
            name,
        )
        for (df, used, name), c, m, mem in zip(labels, counts, medians, memory, strict=True)
    ]


def _variant(name: str, df: float, policy: str) -> str:
    """A row's variant: the original, a given model, or the DF grid's layer policy."""
    if name == "original" or (df == 1.0 and not name):
        return "original"
    return "given" if name else policy


def format_rows(rows: list[BenchmarkRow]) -> str:
    """Table 2 layout: DF, M-params, GFLOPs, median ms, speed-up, peak memory."""
    head = rows[0]
    memory = "freed memory reused" if head.allocator == "reuse" else "default allocator"
    labels = [row.label or ("original" if row.df == 1.0 else f"{row.df:g}") for row in rows]
    width = max(8, *(len(label) for label in labels))
    first = "model" if any(row.label for row in rows) else "DF"
    wide = max(8, *(len(row.runtime) for row in rows))  # openvino-int8
    lines = [
        f"{head.model} on {head.device} ({head.precision}, {memory}), one patch, "
        "median of the repeats",
        f"{first:>{width}} {'runtime':>{wide}} {'M-params':>9} {'GFLOPs':>8} {'ms':>9} "
        f"{'speed-up':>9} {'peak MiB':>9}",
    ]
    for row, label in zip(rows, labels, strict=True):
        mem = "" if row.peak_memory_mib is None else f"{row.peak_memory_mib:.0f}"
        lines.append(
            f"{label:>{width}} {row.runtime:>{wide}} {row.params / 1e6:>9.3f} {row.gflops:>8.2f} "
            f"{row.median_ms:>9.1f} {row.speedup:>8.2f}× {mem:>9}"
        )
    return "\n".join(lines)


def save_results(rows: list[BenchmarkRow], path: Path) -> None:
    """Write the rows where `info` reads them (JSON)."""
    import json
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps({"rows": [r.to_json() for r in rows]}, indent=2))
    os.replace(tmp, path)


def plot_rows(rows: list[BenchmarkRow], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tucker = [r for r in rows if r.df < 1.0]
    fig, ax = plt.subplots(figsize=(6, 4))
    for runtime in dict.fromkeys(r.runtime for r in tucker):  # one line per runtime
        mine = [r for r in tucker if r.runtime == runtime]
        ax.plot([r.df for r in mine], [r.speedup for r in mine], "o-", label=f"{runtime}")
    by_df = {r.df: r for r in tucker}
    ax.plot(
        list(by_df),
        [rows[0].gflops / r.gflops for r in by_df.values()],
        "s--",
        label="FLOP reduction",
    )
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xlabel("DF")
    ax.set_ylabel("× faster than the original")
    ax.set_title(f"{rows[0].model}, {rows[0].device} {rows[0].precision}")
    ax.invert_xaxis()
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
