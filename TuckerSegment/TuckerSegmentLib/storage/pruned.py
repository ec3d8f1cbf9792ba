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
    model_folder: Path,
    model: str,
    method: str,
    ratio: float,
    seed: int,
    output: Path,
    structured: bool = False,
) -> PrunedModel:
    """Load the TS model, choose filters by ``method`` and zero them (the paper's comparison:
    their weights count as removed) or, ``structured``, remove them with everything that
    depends on them (a smaller, faster network; its shapes go in the manifest); save it
    (atomically) to ``output`` with the provenance under ``prune``."""
    from ..engine.compress import CompressionSettings
    from ..engine.counting import count_network
    from ..engine.prune import module_shapes, prune_network, remove_channels, zeroed_share
    from ..ts.model_folder import open_model_folder
    from .compressed_format import Manifest, save_compressed

    folder = open_model_folder(model_folder)
    network = folder.load_network("cpu")
    spec = folder.spec
    counts = count_network(network, spec.patch_size, spec.input_channels)
    pruned = prune_network(network, method, ratio, seed)
    modules = dict(network.named_modules())
    zeroed = sum(modules[p.name].weight.numel() // p.out_channels * len(p.zeroed) for p in pruned)
    share = zeroed_share(network, pruned)
    left, gflops = counts.params - zeroed, counts.gflops
    shapes = None
    if structured:
        remove_channels(network, pruned, spec.input_channels, spec.arch_kwargs["strides"])
        after = count_network(network, spec.patch_size, spec.input_channels)
        left, gflops, shapes = after.params, after.gflops, module_shapes(network)
    manifest = Manifest(
        spec=folder.spec,
        settings=CompressionSettings(df=1.0),  # no Tucker layers: the pruned original
        layers=[],
        source_sha256=folder.checkpoint_sha256(),
        extra={
            "model": model,
            "source_model": folder.path.name,
            # zeroed: the paper's measure, the shapes (and so the FLOPs run) the original's;
            # structured: the network's own count
            "params": {"original": counts.params, "compressed": left},
            "gflops_per_patch": {"original": counts.gflops, "compressed": gflops},
            "prune": {
                "method": method,
                "ratio": ratio,
                "seed": seed if method == "random-widest" else None,
                "structured": structured,
                "zeroed_share_of_pruned_layers": share,
                "layers": {p.name: [p.out_channels, len(p.zeroed)] for p in pruned},
                **({"shapes": shapes} if shapes else {}),
            },
        },
    )
    save_compressed(output, network.eval(), manifest)
    return PrunedModel(Path(output), share, counts.params, left)
