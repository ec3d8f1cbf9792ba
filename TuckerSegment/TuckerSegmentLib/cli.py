"""The ``tucker-segment`` command line. Each subcommand is a thin layer over the engine."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence

from . import __version__
from .errors import TuckerSegmentError
from .ranks import DEFAULT_RANK_FLOOR

PROG = "tucker-segment"


def _dfs(text: str) -> list[float]:
    from .ranks import check_df

    try:
        return [check_df(part) for part in text.replace(",", " ").split()]
    except TuckerSegmentError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_stats(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stats",
        help="parameter and FLOP table of a TS architecture for several DFs",
        description="Parameters and GFLOPs (one patch) of TotalSegmentator's 3 mm model or one "
        "1.5 mm expert, original and Tucker-compressed at each DF. Instant: no weights needed.",
    )
    p.add_argument(
        "--model",
        choices=("3mm", "1.5mm"),
        default="3mm",
        help="3mm: Dataset297 (--fast); 1.5mm: one expert of Datasets 291-295",
    )
    p.add_argument(
        "--expert",
        default="organs",
        help="1.5mm expert: organs, vertebrae, cardiac, muscles, ribs (default organs)",
    )
    p.add_argument(
        "--model-dir", help="count this nnU-Net model folder instead of a built-in model"
    )
    p.add_argument(
        "--df",
        type=_dfs,
        nargs="+",
        default=None,
        help="downsampling factors (default 0.9 0.7 0.5 0.4 0.3 0.2 0.1 0.05)",
    )
    p.add_argument("--rank-floor", type=int, default=DEFAULT_RANK_FLOOR)
    p.add_argument(
        "--paper",
        action="store_true",
        help="factorize every conv, including 1x1x1 heads, as the paper's code did",
    )
    p.add_argument(
        "--json", action="store_true", help="print one JSON list of {df, params, gflops}"
    )
    p.set_defaults(run=_run_stats)


def _run_stats(args: argparse.Namespace) -> int:
    from .ranks import check_rank_floor
    from .stats import DEFAULT_DFS, format_stats, stats_table

    check_rank_floor(args.rank_floor)
    if args.model_dir:
        from .model_folder import open_model_folder

        spec = open_model_folder(args.model_dir).spec
    else:
        from .ts_architectures import builtin_spec

        spec = builtin_spec(args.model, args.expert)
    dfs = tuple(d for group in args.df for d in group) if args.df else DEFAULT_DFS
    policy = "paper" if args.paper else "default"
    rows = stats_table(spec, dfs, args.rank_floor, policy)
    if args.json:
        print(json.dumps([row.to_json() for row in rows]))
    else:
        patch = "×".join(map(str, spec.patch_size))
        print(
            format_stats(
                rows,
                f"{spec.name}: one {patch} patch, layer policy {policy}, "
                f"rank floor {args.rank_floor}",
            )
        )
    return 0


def _add_compress(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compress",
        help="Tucker-compress an nnU-Net model folder",
        description="Decompose every 3D conv of an nnU-Net model folder (plans.json, "
        "dataset.json, fold_0/checkpoint_final.pth) and write the compressed model "
        "(manifest.json + weights.pt). Works offline.",
    )
    p.add_argument("--model-dir", required=True, help="nnU-Net model folder")
    p.add_argument(
        "--df", type=float, default=0.3, help="downsampling factor in (0, 1] (default 0.3)"
    )
    p.add_argument(
        "--method",
        choices=("hosvd", "hooi"),
        default="hosvd",
        help="hosvd: truncated SVD, fast (default); hooi: tensorly, the paper's method",
    )
    p.add_argument("--rank-floor", type=int, default=DEFAULT_RANK_FLOOR)
    p.add_argument("--paper", action="store_true", help="also factorize 1x1x1 convs")
    p.add_argument("-o", "--output", required=True, help="folder for the compressed model")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=_run_compress)


def _run_compress(args: argparse.Namespace) -> int:
    from .compress import CompressionSettings
    from .compress_folder import compress_model_folder, write_result
    from .report import format_report

    settings = CompressionSettings(
        df=args.df,
        rank_floor=args.rank_floor,
        method=args.method,
        policy="paper" if args.paper else "default",
    )
    result = compress_model_folder(args.model_dir, settings)
    out = write_result(result, args.output)
    if args.json:
        print(
            json.dumps({"output": str(out), "seconds": result.seconds, **result.report.to_json()})
        )
    else:
        print(format_report(result.report))
        print(
            f"decomposed with {settings.method} (DF {settings.df:g}, rank floor "
            f"{settings.rank_floor}) in {result.seconds:.1f} s; written to {out}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="TotalSegmentator with Tucker-compressed networks: lighter, faster CT "
        "segmentation for weak GPUs and CPUs.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_stats(sub)
    _add_compress(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; user errors print one line to stderr and return 1."""
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", message="Detected old nnU-Net plans format")
    try:
        return args.run(args)
    except TuckerSegmentError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
