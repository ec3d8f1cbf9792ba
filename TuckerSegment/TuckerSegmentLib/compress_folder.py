"""Compress an installed nnU-Net model folder into a TuckerSegment compressed model."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from .compress import CompressionSettings, compress_network
from .compressed_model import Manifest, save_compressed
from .counting import count_original_and_compressed
from .model_folder import open_model_folder
from .report import CompressionReport, build_report


@dataclass
class CompressionResult:
    """The compressed network (CPU, fp32), its manifest and its report."""

    network: nn.Module
    manifest: Manifest
    report: CompressionReport
    seconds: float


def compress_model_folder(
    model_dir: str | Path, settings: CompressionSettings
) -> CompressionResult:
    """Load ``model_dir``'s checkpoint, decompose it, count before and after."""
    start = time.perf_counter()
    folder = open_model_folder(model_dir)
    network = folder.load_network("cpu")
    layers = compress_network(network, settings, decompose=True)
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
        },
    )
    return CompressionResult(network, manifest, report, time.perf_counter() - start)


def write_result(result: CompressionResult, out: str | Path) -> Path:
    """Save the compressed model (atomically) to ``out``."""
    return save_compressed(out, result.network, result.manifest)
