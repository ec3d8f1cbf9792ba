"""A pruning baseline (engine/prune.py) written in the compressed-model format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class PrunedModel:
    path: Path
    zeroed_share: float  # of the pruned layers' kernel weights
    params_original: int
    params_left: int


def write_pruned_model(
    model_folder: Path, model: str, method: str, ratio: float, seed: int, output: Path
) -> PrunedModel:
    """Load the TS model, zero its filters by ``method``, save it (atomically) to ``output``
    with the provenance under ``prune``; the zeroed filters' weights count as removed."""
    from ..engine.compress import CompressionSettings
    from ..engine.counting import count_network
    from ..engine.prune import prune_network, zeroed_share
    from ..ts.model_folder import open_model_folder
    from .compressed_format import Manifest, save_compressed

    folder = open_model_folder(model_folder)
    network = folder.load_network("cpu")
    counts = count_network(network, folder.spec.patch_size, folder.spec.input_channels)
    pruned = prune_network(network, method, ratio, seed)
    modules = dict(network.named_modules())
    zeroed = sum(modules[p.name].weight.numel() // p.out_channels * len(p.zeroed) for p in pruned)
    share = zeroed_share(network, pruned)
    manifest = Manifest(
        spec=folder.spec,
        settings=CompressionSettings(df=1.0),  # no Tucker layers: the pruned original
        layers=[],
        source_sha256=folder.checkpoint_sha256(),
        extra={
            "model": model,
            "source_model": folder.path.name,
            # the paper's measure; the shapes (and so the FLOPs run) are the original's
            "params": {"original": counts.params, "compressed": counts.params - zeroed},
            "gflops_per_patch": {"original": counts.gflops, "compressed": counts.gflops},
            "prune": {
                "method": method,
                "ratio": ratio,
                "seed": seed if method == "random-widest" else None,
                "zeroed_share_of_pruned_layers": share,
                "layers": {p.name: [p.out_channels, len(p.zeroed)] for p in pruned},
            },
        },
    )
    save_compressed(output, network.eval(), manifest)
    return PrunedModel(Path(output), share, counts.params, counts.params - zeroed)
