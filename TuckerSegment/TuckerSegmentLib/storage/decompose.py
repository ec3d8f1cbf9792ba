"""Compress an installed nnU-Net model folder into a TuckerSegment compressed model."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..engine.compress import CompressionSettings, compress_network
from ..engine.counting import count_original_and_compressed
from ..engine.layer_policy import should_factorize
from ..engine.report import CompressionReport, build_report
from ..ts.model_folder import open_model_folder
from .compressed_format import Manifest, save_compressed


@dataclass
class CompressionResult:
    """The compressed network (CPU, fp32), its manifest and its report."""

    network: nn.Module
    manifest: Manifest
    report: CompressionReport
    seconds: float


def compress_model_folder(
    model_dir: str | Path,
    settings: CompressionSettings,
    device: str = "cpu",
    precision: str = "fp32",
) -> CompressionResult:
    """Load ``model_dir``'s checkpoint, decompose it, count before and after. With the
    ``latency`` policy, blocks not faster than their conv on ``device`` are reverted."""
    start = time.perf_counter()
    folder = open_model_folder(model_dir)
    network = folder.load_network("cpu")
    originals = {n: m for n, m in network.named_modules() if should_factorize(m, settings.policy)}
    layers = compress_network(network, settings, decompose=True)
    extra: dict[str, Any] = {}
    if settings.policy == "latency":
        from ..runtime.latency_policy import keep_faster_layers

        layers, timings = keep_faster_layers(
            network.to(device), originals, layers, folder.spec, device, precision
        )
        network = network.cpu()
        extra["tuned_for"] = {
            "device": device,
            "precision": precision,
            "layer_seconds": {k: list(v) for k, v in timings.items()},
        }
    before, after = count_original_and_compressed(folder.spec, layers)
    report = build_report(before, after, layers)
    manifest = Manifest(
        spec=folder.spec,
        settings=settings,
        layers=layers,
        source_sha256=folder.checkpoint_sha256(),
        extra={
            "source_model": folder.path.name,
            "params": {"original": before.params, "compressed": after.params},
            "gflops_per_patch": {"original": before.gflops, "compressed": after.gflops},
            **extra,
        },
    )
    return CompressionResult(network, manifest, report, time.perf_counter() - start)


def write_compressed_model(result: CompressionResult, out: str | Path) -> Path:
    """Save the compressed model (atomically) to ``out``."""
    return save_compressed(out, result.network, result.manifest)
