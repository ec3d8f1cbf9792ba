"""A compressed network on disk: ``weights.pt`` (plain tensors) and ``manifest.json``.

The manifest holds the architecture, per-layer ranks, method, DF, rank floor, the source
checkpoint's hash and the versions used, so the network is rebuilt without re-decomposing.
Weights load with ``torch.load(weights_only=True)``; a hash in the manifest catches damage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..engine.compress import CompressionSettings, LayerRanks, apply_layer_ranks
from ..errors import TuckerSegmentError
from ..ts.model_folder import file_sha256
from ..ts.network_spec import NetworkSpec
from .atomic_dir import atomic_directory

FORMAT = "tuckersegment-compressed"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.pt"


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a compressed model."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"tuckersegment": __version__, "torch": torch.__version__}
    for package in ("tensorly", "nnunetv2", "TotalSegmentator"):
        try:
            found[package.lower()] = version(package)
        except PackageNotFoundError:
            pass
    return found


@dataclass
class Manifest:
    """Everything needed to rebuild a compressed network."""

    spec: NetworkSpec
    settings: CompressionSettings
    layers: list[LayerRanks]
    source_sha256: str
    weights_sha256: str = ""
    versions: dict[str, str] = field(default_factory=library_versions)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "network": self.spec.to_json(),
            "settings": self.settings.to_json(),
            "layers": [layer.to_json() for layer in self.layers],
            "source_checkpoint_sha256": self.source_sha256,
            "weights": {"file": WEIGHTS, "sha256": self.weights_sha256},
            "versions": self.versions,
            **self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != FORMAT:
            raise TuckerSegmentError("not a TuckerSegment manifest (wrong 'format')")
        if data.get("format_version") != FORMAT_VERSION:
            raise TuckerSegmentError(
                f"manifest format version {data.get('format_version')} is not supported "
                f"(this TuckerSegment reads version {FORMAT_VERSION})"
            )
        known = {
            "format",
            "format_version",
            "network",
            "settings",
            "layers",
            "source_checkpoint_sha256",
            "weights",
            "versions",
        }
        return cls(
            spec=NetworkSpec.from_json(data["network"]),
            settings=CompressionSettings(**data["settings"]),
            layers=[LayerRanks(**layer) for layer in data["layers"]],
            source_sha256=data["source_checkpoint_sha256"],
            weights_sha256=data["weights"]["sha256"],
            versions=dict(data.get("versions", {})),
            extra={k: v for k, v in data.items() if k not in known},
        )


def write_model_files(folder: Path, network: nn.Module, manifest: Manifest) -> None:
    """Write ``weights.pt`` and ``manifest.json`` into ``folder`` (a staging folder)."""
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    torch.save(state, folder / WEIGHTS)
    manifest.weights_sha256 = file_sha256(folder / WEIGHTS)
    (folder / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2) + "\n")


def save_compressed(directory: str | Path, network: nn.Module, manifest: Manifest) -> Path:
    """Write ``network`` and ``manifest`` to ``directory`` atomically."""
    with atomic_directory(directory) as staging:
        write_model_files(staging, network, manifest)
    return Path(directory)


def read_manifest(directory: str | Path) -> Manifest:
    path = Path(directory) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise TuckerSegmentError(f"no {MANIFEST} in {directory}: not a compressed model") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TuckerSegmentError(f"{path} is corrupt: {error}") from None
    try:
        return Manifest.from_json(data)
    except (KeyError, TypeError) as error:
        raise TuckerSegmentError(f"{path} is incomplete or malformed: {error!r}") from None


def load_compressed(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, Manifest]:
    """Rebuild a compressed network from its manifest and weights (no decomposition)."""
    manifest = read_manifest(directory)
    weights = Path(directory) / WEIGHTS
    if not weights.is_file():
        raise TuckerSegmentError(f"missing {WEIGHTS} in {directory}")
    if file_sha256(weights) != manifest.weights_sha256:
        raise TuckerSegmentError(f"{weights} does not match its manifest (damaged or replaced)")
    network = manifest.spec.build("meta")
    apply_layer_ranks(network, manifest.layers)
    shapes = (manifest.extra or {}).get("prune", {}).get("shapes")
    if shapes:  # structurally pruned: the original architecture with fewer channels
        from ..engine.prune import reshape_modules

        reshape_modules(network, shapes)
    try:
        state = torch.load(weights, map_location=device, weights_only=True)
        network.load_state_dict(state, assign=True)
    except Exception as error:  # torch raises several types for damaged files
        first = str(error).strip().splitlines()[0]
        raise TuckerSegmentError(f"cannot load {weights}: {first}") from None
    return network.to(device).eval(), manifest
