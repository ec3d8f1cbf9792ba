"""`tucker-segment report`: how much of each layer's kernel every DF keeps, as a picture.

The paper's Appendix B explained variance per layer and rank: a heatmap of layers against DF
(PNG), with the chosen DF marked, and the table of that DF's ranks, kept share and parameters.
Training-free and instant (engine/planner.py's exact kept-energy tables; no decomposition).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..engine.ranks import DEFAULT_RANK_FLOOR

DF_GRID = [round(0.05 * k, 2) for k in range(1, 21)]


def add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="explained variance per layer against DF (heatmap PNG) and the layer table",
        description="For one installed TS model: the share of each factorized conv's kernel "
        "energy that each DF keeps (the paper's Appendix B), as a heatmap, and the table of "
        "ranks, kept share and parameters at --df.",
    )
    p.add_argument("--model", required=True, help="3mm, 6mm, organs, vertebrae, cardiac, …")
    p.add_argument("--df", type=float, default=0.3)
    p.add_argument("--rank-floor", type=int, default=DEFAULT_RANK_FLOOR)
    p.add_argument("--weights-dir", help="TS weights folder (default: where TS keeps them)")
    p.add_argument("-o", "--output", required=True, help="the heatmap (PNG)")
    p.set_defaults(run=run_report)


def run_report(args: argparse.Namespace) -> int:
    from ..engine.planner import layer_spectra
    from ..engine.ranks import check_df, check_rank_floor, tucker_ranks
    from ..pipeline.output_files import check_output_file
    from ..ts.model_folder import open_model_folder
    from .plan import model_folder

    df, floor = check_df(args.df), check_rank_floor(args.rank_floor)
    output = check_output_file(Path(args.output), (".png",))
    folder = open_model_folder(
        model_folder(args.model, Path(args.weights_dir) if args.weights_dir else None)
    )
    network = folder.load_network("cpu")
    spectra = layer_spectra(network, folder.spec.patch_size, folder.spec.input_channels)
    grid = [
        [
            s.explained_variance(*tucker_ranks(s.in_channels, s.out_channels, d, floor))
            for d in DF_GRID
        ]
        for s in spectra
    ]
    heatmap(grid, [s.name for s in spectra], df, f"{args.model} (rank floor {floor})", output)
    print(f"{'layer':52} {'channels':>9} {'ranks':>9} {'kept':>7} {'params':>17}")
    for s in spectra:
        ranks = tucker_ranks(s.in_channels, s.out_channels, df, floor)
        full = s.params(s.in_channels, s.out_channels)
        block = s.params(*ranks, original_at_full_rank=False)  # `segment --df` replaces them all
        print(
            f"{s.name[:52]:52} {s.in_channels:>4}→{s.out_channels:<4} {ranks[0]:>4},{ranks[1]:<4} "
            f"{s.explained_variance(*ranks):7.4f} {full:>8,}→{block:<8,}"
        )
    print(f"heatmap written to {output}")
    return 0


def heatmap(
    grid: list[list[float]], layers: list[str], df: float, title: str, output: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 0.32 * len(layers) + 1.8))
    image = axes.imshow(
        grid, aspect="auto", cmap="viridis", vmin=min(0.5, min(map(min, grid))), vmax=1
    )
    axes.set_xticks(range(len(DF_GRID)), [f"{d:g}" for d in DF_GRID], fontsize=7)
    axes.set_yticks(
        range(len(layers)),
        [n.replace(".convs", "").replace(".conv", "") for n in layers],
        fontsize=7,
    )
    column = min(range(len(DF_GRID)), key=lambda k: abs(DF_GRID[k] - df))
    axes.axvline(column, color="white", linewidth=1.5, linestyle="--")
    axes.set_xlabel("DF (share of channels kept per mode)")
    axes.set_title(f"kept kernel energy (explained variance) per layer — {title}; DF {df:g} dashed")
    figure.colorbar(image, ax=axes, label="explained variance")
    figure.tight_layout()
    figure.savefig(output, dpi=120)
    plt.close(figure)
