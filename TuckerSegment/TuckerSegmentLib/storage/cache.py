"""Cache of compressed models, keyed by source checkpoint hash, DF, rank floor, method, policy.

Entries are written atomically (staging folder + rename), so an interrupted or concurrent run
never leaves a corrupt entry; a damaged entry is rebuilt. The cache lives in
``$TUCKERSEGMENT_CACHE`` or ``$XDG_CACHE_HOME/tuckersegment`` (default ``~/.cache/tuckersegment``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..engine.compress import CompressionSettings
from ..errors import TuckerSegmentError


def cache_root() -> Path:
    if os.environ.get("TUCKERSEGMENT_CACHE"):
        return Path(os.environ["TUCKERSEGMENT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tuckersegment"


def entry_name(source_sha256: str, settings: CompressionSettings, tuned_for: str = "") -> str:
    name = (
        f"{source_sha256[:20]}-df{settings.df:g}-rf{settings.rank_floor}-"
        f"{settings.method}-{settings.policy}"
    )
    # a latency-tuned model depends on the device and precision it was timed on
    return f"{name}-{tuned_for}" if settings.policy == "latency" else name


@dataclass
class CachedModel:
    network: nn.Module
    manifest: object
    path: Path
    hit: bool
    seconds: float


def compressed_model(
    model_dir: Path, settings: CompressionSettings, device: str = "cpu", precision: str = "fp32"
) -> CachedModel:
    """The compressed network for ``model_dir`` and ``settings``: loaded from the cache when
    present, otherwise decomposed and stored."""
    from ..ts.model_folder import file_sha256
    from .compressed_format import load_compressed
    from .decompose import compress_model_folder, write_compressed_model

    start = time.perf_counter()
    checkpoint = Path(model_dir) / "fold_0" / "checkpoint_final.pth"
    tuned_for = f"{device}-{precision}"
    path = cache_root() / "models" / entry_name(file_sha256(checkpoint), settings, tuned_for)
    if (path / "manifest.json").is_file():
        try:
            network, manifest = load_compressed(path)
            return CachedModel(network, manifest, path, True, time.perf_counter() - start)
        except TuckerSegmentError:
            pass  # damaged entry: rebuild it below
    result = compress_model_folder(model_dir, settings, device, precision)
    write_compressed_model(result, path)
    return CachedModel(
        result.network.eval(), result.manifest, path, False, time.perf_counter() - start
    )


def given_model(path: Path, device: str = "cpu") -> CachedModel:
    """A compressed or fine-tuned model the user names (`segment --compressed-model`): loaded
    as it is; what is derived from it (OpenVINO conversions) goes to the cache, keyed by its
    weights, never into the user's folder."""
    from .compressed_format import load_compressed

    start = time.perf_counter()
    network, manifest = load_compressed(path)
    derived = cache_root() / "given" / manifest.weights_sha256[:24]
    return CachedModel(network, manifest, derived, True, time.perf_counter() - start)
