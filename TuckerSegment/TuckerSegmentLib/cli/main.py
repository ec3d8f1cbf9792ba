"""The ``tucker-segment`` command line. Each subcommand is a thin layer over the engine."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .. import __version__
from ..engine.fidelity import DEFAULT_DF, defaults_text
from ..engine.ranks import DEFAULT_RANK_FLOOR
from ..errors import TuckerSegmentError
from .process_gc import command_process, imports_done

if TYPE_CHECKING:
    from ..pipeline.segment import SegmentOptions
    from ..ts.network_spec import NetworkSpec

PROG = "tucker-segment"


def _dfs(text: str) -> list[float]:
    from ..engine.ranks import check_df

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
        help="with --model 1.5mm: organs (default), vertebrae, cardiac, muscles or ribs",
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
        "--flat",
        action="store_true",
        help="add the Flat U-Net (every stage as wide as the first: the STAMP thesis's "
        "architecture; `flat-plans` makes its nnU-Net plans)",
    )
    p.add_argument(
        "--json", action="store_true", help="print one JSON list of {df, params, gflops}"
    )
    p.set_defaults(run=_run_stats)


def _builtin_spec(args: argparse.Namespace) -> NetworkSpec:
    """TS's 3 mm model or one 1.5 mm expert (`stats`, `benchmark`); --expert only with 1.5mm."""
    from ..ts.architectures import builtin_spec

    if args.expert and args.model != "1.5mm":
        raise TuckerSegmentError(f"--expert {args.expert} is a 1.5 mm expert: add --model 1.5mm")
    return builtin_spec(args.model, args.expert or "organs")


def _run_stats(args: argparse.Namespace) -> int:
    from ..engine.ranks import check_rank_floor
    from ..engine.stats import DEFAULT_DFS, format_stats, stats_table

    check_rank_floor(args.rank_floor)
    if args.model_dir:
        from ..ts.model_folder import open_model_folder

        if args.expert:
            raise TuckerSegmentError("--expert names a built-in expert; drop it for --model-dir")
        spec = open_model_folder(args.model_dir).spec
    else:
        spec = _builtin_spec(args)
    dfs = tuple(d for group in args.df for d in group) if args.df else DEFAULT_DFS
    policy = "paper" if args.paper else "default"
    rows = stats_table(spec, dfs, args.rank_floor, policy)
    if args.flat:
        from ..engine.stats import architecture_row
        from ..ts.flat_unet import flat_spec

        flat = flat_spec(spec)
        width = flat.arch_kwargs["features_per_stage"][0]
        rows.append(architecture_row(flat, f"flat {width}"))
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


def _compress_with_plan(args: argparse.Namespace) -> int:
    """`compress --plan`: the plan's model (made as `segment --plan` makes it), copied out."""
    import shutil

    from ..storage.atomic_dir import atomic_directory
    from ..storage.compressed_format import read_manifest
    from ..storage.plan_file import planned_model

    output = Path(args.output)
    made = planned_model(Path(args.plan), Path(args.model_dir), args.method)
    with atomic_directory(output) as staging:
        for name in ("manifest.json", "weights.pt"):
            shutil.copy(made / name, staging / name)
    params = read_manifest(output).extra["params"]
    print(
        f"wrote {output}: planned ranks of {args.plan}, {params['compressed']:,} of "
        f"{params['original']:,} parameters"
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
        "--df",
        type=float,
        default=DEFAULT_DF,
        help=f"downsampling factor in (0, 1] (default {DEFAULT_DF:g})",
    )
    p.add_argument(
        "--method",
        choices=("hosvd", "hooi"),
        default="hosvd",
        help="hosvd: truncated SVD, fast (default); hooi: tensorly, the paper's method",
    )
    p.add_argument("--rank-floor", type=int, default=DEFAULT_RANK_FLOOR)
    p.add_argument("--paper", action="store_true", help="also factorize 1x1x1 convs")
    p.add_argument(
        "--plan",
        help="decompose with a plan's per-layer ranks (`tucker-segment plan -o PLAN.json`) "
        "instead of one DF: a model to pass to `segment --compressed-model` or "
        "`finetune --start-from`",
    )
    p.add_argument("-o", "--output", required=True, help="folder for the compressed model")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=_run_compress)


def _run_compress(args: argparse.Namespace) -> int:
    from ..engine.compress import CompressionSettings
    from ..engine.report import format_compression_report
    from ..storage.decompose import compress_model_folder, write_compressed_model

    if Path(args.output).exists():  # a folder may be the user's (or the model itself): kept
        raise TuckerSegmentError(
            f"{args.output} exists; choose another output (it is never replaced)"
        )
    if args.plan:
        return _compress_with_plan(args)
    settings = CompressionSettings(
        df=args.df,
        rank_floor=args.rank_floor,
        method=args.method,
        policy="paper" if args.paper else "default",
    )
    result = compress_model_folder(args.model_dir, settings)
    out = write_compressed_model(result, args.output)
    if args.json:
        print(
            json.dumps({"output": str(out), "seconds": result.seconds, **result.report.to_json()})
        )
    else:
        print(format_compression_report(result.report))
        print(
            f"decomposed with {settings.method} (DF {settings.df:g}, rank floor "
            f"{settings.rank_floor}) in {result.seconds:.1f} s; written to {out}"
        )
    return 0


def expert_dfs(text: str) -> dict[str, float]:
    from ..engine.ranks import check_df

    result = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected NAME=DF, got {item!r}")
        try:
            result[name.strip()] = check_df(value)
        except TuckerSegmentError as error:
            raise argparse.ArgumentTypeError(f"{name}: {error}") from None
    return result


def _add_segment(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="segment a CT with TotalSegmentator's pipeline and compressed networks",
        description="Run TotalSegmentator's own `total` pipeline (resampling, cropping, expert "
        "merge, class map) with Tucker-compressed networks. Writes 117 labels with TS's ids.",
    )
    p.add_argument(
        "-i", "--input", required=True, help="CT as NIfTI (.nii/.nii.gz) or a DICOM folder"
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help=".nii.gz (117-label NIfTI) or .seg.nrrd (Slicer segmentation); a JSON "
        "sidecar is written beside it",
    )
    _add_run_options(p)
    p.add_argument(
        "--review",
        action="store_true",
        help="with --compare: then open the result in the browser (`tucker-segment review`; "
        "this machine only, any free port; Ctrl-C stops it)",
    )
    p.set_defaults(run=_run_segment)


def parameter_share(text: str) -> float:
    """``15%`` → 0.15: a share of the parameters of the run's networks (one absolute count
    would mean different things in fast and full mode)."""
    raw = text.strip()
    try:
        if not raw.endswith("%"):
            raise ValueError
        return float(raw[:-1]) / 100
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a percentage of the networks' parameters, e.g. 15%"
        ) from None


def add_layer_policy_options(p: argparse.ArgumentParser) -> None:
    """--layer-policy and its shortcut --latency (segment, batch and benchmark alike)."""
    p.add_argument(
        "--layer-policy",
        choices=("auto", "default", "latency"),
        default="auto",
        help="which convs get Tucker blocks: latency = each block only where it is faster on this "
        "device (timed once, cached); default = every conv but the heads; auto (default) = "
        "latency on a GPU, default on the CPU",
    )
    p.add_argument("--latency", action="store_true", help="the same as --layer-policy latency")


def add_factorization_options(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--rank-floor, --method and --paper: how each conv is factorized (segment, batch and
    tucker-totalsegmentator alike)."""
    p.add_argument("--rank-floor", type=int, default=DEFAULT_RANK_FLOOR)
    p.add_argument("--method", choices=("hosvd", "hooi"), default="hosvd")
    p.add_argument("--paper", action="store_true", help="also factorize 1x1x1 convs")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """The options `segment` and `batch` share: models, compression, device, outputs."""
    p.add_argument(
        "--fast",
        action="store_true",
        help="TS's 3 mm model (Dataset297) instead of the five 1.5 mm experts",
    )
    p.add_argument(
        "--task",
        default="total",
        help="TotalSegmentator's task (default: total, its 117 structures): another of its open "
        "CT tasks, e.g. body, lung_vessels, cerebral_bleed, hip_implant, "
        "pleural_pericard_effusion (`tucker-totalsegmentator -lt` lists them); every network "
        "it runs compressed (DF default 0.5 for tasks the paper did not study, 0.3 for body)",
    )
    p.add_argument(
        "--body-seg",
        "--body_seg",
        action="store_true",
        help="TS's --body_seg: its 6 mm body model (compressed too) crops the CT to the body first",
    )
    p.add_argument(
        "--force-split",
        "--force_split",
        action="store_true",
        help="TS's --force_split: a large CT in thirds along z (less memory)",
    )
    p.add_argument(
        "--remove-small-blobs",
        "--remove_small_blobs",
        nargs="?",
        const=200.0,
        type=float,
        metavar="MM3",
        help="TS's --remove_small_blobs: drop connected pieces under MM3 mm³ (default 200)",
    )
    p.add_argument(
        "--higher-order-resampling",
        "--higher_order_resampling",
        action="store_true",
        help="TS's --higher_order_resampling: smoother masks at the input resolution",
    )
    p.add_argument(
        "--fastest",
        action="store_true",
        help="TS's 6 mm model (Dataset298) alone, as TS's --fastest",
    )
    p.add_argument(
        "--roi-subset",
        "--roi_subset",
        nargs="+",
        default=[],
        metavar="STRUCTURE",
        help="only these structures (TS's names, e.g. liver spleen), as TS's --roi_subset: TS's "
        "6 mm model finds them, then only the models that know them run, on the crop; every "
        "network compressed",
    )
    p.add_argument(
        "--df",
        type=float,
        default=None,
        help="downsampling factor for every model; 1 = the original networks (default: "
        f"{defaults_text()}, the zero-shot fidelity floors; see README 'Choosing a DF')",
    )
    p.add_argument(
        "--expert-df",
        type=expert_dfs,
        default={},
        help="DF per model, e.g. organs=0.4,ribs=0.3 (organs, vertebrae, cardiac, "
        "muscles, ribs; 3mm with --fast; 6mm with --fastest or --roi-subset)",
    )
    add_factorization_options(p)
    p.add_argument(
        "--max-params",
        type=parameter_share,
        metavar="PERCENT",
        help="instead of one DF: per-layer ranks planned (`plan`, kept energy) for this share of "
        "the parameters of the run's networks, e.g. 15%%, the models' layers competing for one "
        "budget; the plans and models are cached",
    )
    add_layer_policy_options(p)
    p.add_argument(
        "--device",
        default="auto",
        help="auto (default), cpu, cuda (the first GPU), cuda:N (GPU N) or mps",
    )
    p.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto")
    _add_speed_options(p)
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads for the networks (default: every core, as TS; batch: the cores "
        "shared out between its workers)",
    )
    p.add_argument(
        "--workers",
        choices=("in-process", "spawn"),
        default="in-process",
        help="in-process (default): nnU-Net's preprocessing and export run in this process "
        "(same functions, no worker start-up); spawn: nnU-Net's worker processes",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="also run the original networks and write the agreement report",
    )
    p.add_argument(
        "--statistics",
        action="store_true",
        help="TotalSegmentator's own statistics (volume in mm³ and mean intensity per "
        "structure) in OUT.statistics.json",
    )
    p.add_argument(
        "--progress",
        choices=("bar", "json", "none"),
        default="bar",
        help="json: one {stage, fraction, message} object per line on stdout",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="download missing TS weights with TS's downloader (network access)",
    )
    p.add_argument("--weights-dir", help="TS weights folder (default: where TS keeps them)")
    p.add_argument(
        "--compressed-model",
        action="append",
        default=[],
        metavar="DIR",
        help="a compressed or fine-tuned model (`compress -o`, `finetune -o`) to run instead of "
        "decomposing that TS model; the model it belongs to is read from its manifest; repeat "
        "for several experts",
    )
    p.add_argument(
        "--plan",
        action="append",
        default=[],
        metavar="PLAN.json",
        help="per-layer ranks from `tucker-segment plan -o` for the model it names (decomposed "
        "once into the cache); repeat for several models",
    )


def segment_options(args: argparse.Namespace, input: Path, output: Path) -> SegmentOptions:
    """A SegmentOptions from the shared run options (segment, batch)."""
    from ..pipeline.segment import SegmentOptions

    return SegmentOptions(
        input=input,
        output=output,
        fast=args.fast,
        df=args.df,
        expert_df=args.expert_df,
        rank_floor=args.rank_floor,
        method=args.method,
        policy="paper" if args.paper else "latency" if args.latency else args.layer_policy,
        max_params=args.max_params,
        device=args.device,
        precision=args.precision,
        compare=args.compare,
        runtime=args.runtime,
        allocator=args.allocator,
        workers=args.workers,
        download=args.download,
        weights_dir=Path(args.weights_dir) if args.weights_dir else None,
        compressed_models=[Path(p) for p in args.compressed_model],
        plans=[Path(p) for p in args.plan],
        statistics=args.statistics,
        threads=args.threads,
        roi_subset=tuple(args.roi_subset),
        fastest=args.fastest,
        task=args.task,
        body_seg=args.body_seg,
        force_split=args.force_split,
        remove_small_blobs=args.remove_small_blobs,
        higher_order_resampling=args.higher_order_resampling,
    )


def _run_segment(args: argparse.Namespace) -> int:
    from ..pipeline.progress import Progress
    from ..pipeline.segment import segment

    options = segment_options(args, Path(args.input), Path(args.output))
    if args.review:
        from .review import check_review_extra

        if not args.compare:
            raise TuckerSegmentError("--review shows a comparison: add --compare")
        check_review_extra()
    real_stdout = sys.stdout
    if args.progress == "json":
        sys.stdout = sys.stderr  # TS's and nnU-Net's prints must not mix with the JSON lines
    progress = Progress(args.progress, real_stdout if args.progress == "json" else sys.stderr)
    try:
        result = segment(options, progress)
    finally:
        progress.close()
        sys.stdout = real_stdout
    out = sys.stderr if args.progress == "json" else sys.stdout
    _print_segment_summary(result, out)
    if args.review:
        _review(Path(result["output"]))
    return 0


def _review(output: Path) -> None:
    """`segment --review` and `demo --review`: the result just written, in the browser."""
    from ..review.result_folder import open_result
    from ..review.serve import serve

    sys.stdout.flush()
    serve(open_result(output), port=0)


def _print_segment_summary(result: dict, out) -> None:  # noqa: ANN001
    from ..pipeline.agreement import format_agreement

    timings = result["timings"]

    def kind(info: dict) -> str:
        if "prune" in info:
            return f"pruned {info['prune']['method']} {info['prune']['ratio']:g}"
        return "planned ranks" if "plan" in info else f"DF {info['df']:g}"

    models = ", ".join(
        f"{name} {kind(info)}"
        + (f" ({info['params'] / 1e6:.2f} M params)" if info.get("params") else "")
        for name, info in result["models"].items()
    )
    print(
        f"wrote {result['output']} ({models}; {result['device']}, {result['precision']})", file=out
    )
    print(
        f"time: {timings['total_s']:.1f} s in all, TS pipeline {timings['segment_s']:.1f} s, "
        f"networks {timings['segment_network_s']:.1f} s",
        file=out,
    )
    if result.get("agreement") is not None:
        print(format_agreement(result["agreement"], "original", "compressed"), file=out)
        comparison = result["comparison"]
        print(
            f"original networks: TS pipeline {timings['original_s']:.1f} s, networks "
            f"{timings['original_network_s']:.1f} s; report {comparison['report']}",
            file=out,
        )


def _add_batch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch",
        help="segment a cohort (a folder of CTs or a CSV of paths) on a Dask cluster",
        description="Segment many CTs with `segment`'s settings on Dask workers that load each "
        "model once: OUTDIR/<case>/ as `segment` writes it, a cohort table of TS's statistics "
        "(statistics.csv/.parquet), failures.csv, and agreement.csv/.parquet with --compare. "
        "Re-running the same command skips finished cases and redoes half-finished ones.",
    )
    p.add_argument(
        "input",
        help="a folder of NIfTI files and DICOM series folders, or a CSV with a path "
        "column (and an optional case_id column)",
    )
    p.add_argument("-o", "--output", required=True, help="the cohort's output folder")
    p.add_argument(
        "--format",
        choices=("nii.gz", "seg.nrrd"),
        default="nii.gz",
        help="each case's segmentation: 117-label NIfTI (default) or Slicer .seg.nrrd",
    )
    p.add_argument(
        "--jobs",
        type=int,
        help="LocalCluster workers (default: one per core, as many as the memory holds)",
    )
    p.add_argument(
        "--scheduler",
        help="address of a running Dask scheduler (e.g. tcp://10.0.0.5:8786, or from "
        "dask-jobqueue); default: a LocalCluster on 127.0.0.1",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=2,
        help="runs of a case again after its worker died, then it is recorded as failed",
    )
    _add_run_options(p)
    p.add_argument(
        "--no-statistics",
        dest="statistics",
        action="store_false",
        help="skip TS's statistics (and the cohort statistics table is empty)",
    )
    p.set_defaults(run=_run_batch, statistics=True)


def _run_batch(args: argparse.Namespace) -> int:
    from ..cohort.batch import FORMATS, BatchOptions, batch
    from ..pipeline.progress import Progress

    options = BatchOptions(
        input=Path(args.input),
        output=Path(args.output),
        segment=segment_options(args, Path(args.input), Path(FORMATS[args.format])),
        jobs=args.jobs,
        scheduler=args.scheduler,
        retries=args.retries,
    )
    real_stdout = sys.stdout
    if args.progress == "json":
        sys.stdout = sys.stderr
    progress = Progress(args.progress, real_stdout if args.progress == "json" else sys.stderr)
    try:
        table = batch(options, progress)
    finally:
        progress.close()
        sys.stdout = real_stdout
    out = sys.stderr if args.progress == "json" else sys.stdout
    failures = (options.output / "failures.csv").read_text().splitlines()[1:]
    cases = table["case_id"].nunique() if len(table) else 0
    print(
        f"cohort in {options.output}: statistics of {cases} cases in statistics.csv/.parquet; "
        f"{len(failures)} failed (failures.csv)",
        file=out,
    )
    return 0 if not failures else 3


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="per-structure agreement of two label files (Dice, NSD at 3 mm, volumes)",
        description="Compare two label files on the same grid (TS ids): Dice, normalized "
        "surface distance at 3 mm tolerance, volumes in ml and voxel counts per structure.",
    )
    p.add_argument("a", help="first label file (NIfTI or .seg.nrrd)")
    p.add_argument("b", help="second label file")
    p.add_argument("-o", "--output", help="write the per-structure report as CSV")
    p.add_argument("--tolerance", type=float, default=3.0, help="NSD tolerance in mm (default 3)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..pipeline.agreement import format_agreement
    from ..pipeline.compare_files import compare_files
    from ..pipeline.output_files import check_output_file, staged_outputs

    if args.output:
        check_output_file(Path(args.output), (".csv",))
    report = compare_files(Path(args.a), Path(args.b), args.tolerance)
    if args.output:
        target = Path(args.output)
        with staged_outputs() as staged:
            staged.path_for(target).write_text(report.to_csv())
            staged.commit()
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print(format_agreement(report, Path(args.a).name[:8], Path(args.b).name[:8]))
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="versions, devices, installed TS weights and the recommended settings",
        description="Show versions, devices (GPU, tensor cores, CPU flags), where TS weights "
        "are looked up and which are installed, and the recommended device, precision and DF.",
    )
    p.add_argument("--weights-dir", help="TS weights folder (default: where TS keeps them)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from .info import format_info, gather

    info = gather(args.weights_dir)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a Tucker-compressed TS model on labelled CTs with nnU-Net's trainer",
        description="Decompose an installed TS model and fine-tune it with nnU-Net's own trainer "
        "(preprocessing with TS's plans, augmentation, loss, validation, checkpoints) on an "
        "nnU-Net raw dataset with the model's labels. Defaults are the paper authors' (DF 0.3, "
        "rank floor 8, AdamW, lr 1e-5, 50 epochs, polynomial decay). An interrupted run resumes "
        "when run again with the same arguments. Writes the compressed-model format; run it with "
        "`segment --compressed-model OUT`.",
    )
    p.add_argument("--model", required=True, help="3mm, organs, vertebrae, cardiac, muscles, ribs")
    p.add_argument(
        "--dataset",
        required=True,
        help="nnU-Net raw dataset folder (imagesTr, labelsTr, dataset.json)",
    )
    p.add_argument("-o", "--output", required=True, help="folder for the fine-tuned model")
    p.add_argument("--df", type=float, default=0.3)
    p.add_argument("--rank-floor", type=int, default=DEFAULT_RANK_FLOOR)
    p.add_argument("--method", choices=("hosvd", "hooi"), default="hosvd")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--iterations-per-epoch", type=int, default=250, help="nnU-Net's default: 250")
    p.add_argument("--val-iterations", type=int, default=50, help="nnU-Net's default: 50")
    p.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate (authors: 1e-5)")
    p.add_argument("--weight-decay", type=float, default=3e-5)
    p.add_argument("--fold", default="auto", help="auto (0 with ≥ 5 cases, else all), all, 0-4")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument(
        "--gpus",
        type=int,
        default=1,
        help="GPUs for nnU-Net's own DDP training (CUDA, nccl, this machine only)",
    )
    p.add_argument(
        "--augmentation-workers",
        type=int,
        help="nnU-Net's data-augmentation processes (nnUNet_n_proc_DA; default: cores - 1)",
    )
    p.add_argument(
        "--seed", type=int, help="seed torch, numpy and random (exact repeats need 0 workers)"
    )
    p.add_argument(
        "--labels",
        choices=("dataset", "original"),
        default="dataset",
        help="dataset: the dataset's labelsTr; original: the original TS network labels the "
        "images first (self-distillation: CTs without annotations will do, and the compressed "
        "network learns to agree with the original)",
    )
    p.add_argument(
        "--augmentation",
        choices=("nnunet", "none"),
        default="nnunet",
        help="nnunet: nnU-Net's data augmentation (without mirroring, like TS); none: nnU-Net's "
        "nnUNetTrainerNoDA (with --labels original on the images you will segment, it agreed "
        "better with the original in the same steps)",
    )
    p.add_argument(
        "--foreground-oversampling",
        type=float,
        metavar="P",
        help="share of each batch nnU-Net centres on a structure (of a class drawn at random; "
        "nnU-Net's default 0.33): more keeps rare small structures in view",
    )
    p.add_argument(
        "--start-from",
        help="fine-tune this compressed model of the same TS model instead of a fresh "
        "decomposition at --df: a planned (`compress --plan`), "
        "pruned (`prune`, also --structured) or fine-tuned model folder",
    )
    p.add_argument(
        "--stamp",
        type=parameter_share,
        metavar="PERCENT",
        help="STAMP instead of Tucker: prune the original network while it trains (filters "
        "ranked by their activations, targeted dropout, the lowest removed for real) until this "
        "share of its parameters is left, e.g. 50%%",
    )
    p.add_argument("--stamp-every", type=int, default=1, help="epochs between removals")
    p.add_argument("--stamp-filters", type=int, default=4, help="filters removed each time")
    p.add_argument(
        "--stamp-margin",
        type=float,
        default=0.05,
        help="stop pruning when validation Dice falls this far below its best",
    )
    p.add_argument(
        "--distill",
        type=float,
        default=0.0,
        metavar="WEIGHT",
        help="knowledge distillation: add WEIGHT × the KL divergence from the original network's "
        "class probabilities on each training patch to nnU-Net's loss (the original runs beside "
        "the one trained; 0 = off, the authors' recipe). On the organs test expert it kept the "
        "agreement over the structures the original segments (0.948 → 0.947; 0.935 without it)",
    )
    p.add_argument(
        "--checkpoint",
        choices=("final", "best"),
        default="final",
        help="the weights written: nnU-Net's last epoch (final), or its checkpoint_best — the "
        "epoch of the best moving average of the validation pseudo-Dice (with --labels "
        "original: of the agreement with the original on validation patches)",
    )
    p.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
    p.add_argument("--weights-dir", help="TS weights folder (default: where TS keeps them)")
    p.set_defaults(run=_run_finetune)


def _run_finetune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..finetune.finetune import FinetuneOptions, finetune
    from ..pipeline.progress import Progress

    options = FinetuneOptions(
        model=args.model,
        dataset=Path(args.dataset),
        output=Path(args.output),
        df=args.df,
        rank_floor=args.rank_floor,
        method=args.method,
        epochs=args.epochs,
        iterations_per_epoch=args.iterations_per_epoch,
        val_iterations=args.val_iterations,
        lr=args.lr,
        weight_decay=args.weight_decay,
        fold=args.fold,
        device=args.device,
        gpus=args.gpus,
        augmentation_workers=args.augmentation_workers,
        weights_dir=Path(args.weights_dir) if args.weights_dir else None,
        progress=args.progress,
        seed=args.seed,
        labels=args.labels,
        augmentation=args.augmentation,
        foreground_oversampling=args.foreground_oversampling,
        distill=args.distill,
        start_from=Path(args.start_from) if args.start_from else None,
        stamp_target=args.stamp,
        stamp_every=args.stamp_every,
        stamp_filters=args.stamp_filters,
        stamp_margin=args.stamp_margin,
        checkpoint=args.checkpoint,
    )
    real_stdout = sys.stdout
    if args.progress == "json":
        sys.stdout = sys.stderr  # nnU-Net's prints must not mix with the JSON lines
    progress = Progress(args.progress, real_stdout if args.progress == "json" else sys.stderr)
    try:
        manifest = finetune(options, progress)
    finally:
        sys.stdout = real_stdout
    out = sys.stderr if args.progress == "json" else sys.stdout
    record = manifest["finetune"]
    dice = record.get("final_validation_dice")
    start = f"from {args.start_from}" if args.start_from else f"DF {record['df']:g}"
    if args.stamp is not None:
        params = manifest["params"]
        start = f"STAMP to {params['compressed']:,} of {params['original']:,} parameters"
    print(
        f"wrote {args.output}: {args.model} {start}, {record['steps']} steps in "
        f"{record['seconds']:.0f} s; validation Dice "
        + (f"{dice:.3f}" if dice is not None else "not available"),
        file=out,
    )
    return 0


def _add_worker(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker",
        help="serve this CLI's runs to one owner over a private local connection (the panel)",
        description="Keep one process warm for the Slicer panel: it runs the commands its owner "
        "sends (the same as typing them) over an authenticated Unix socket or named pipe whose "
        "address and key the owner sets in TUCKERSEGMENT_WORKER_ADDRESS and "
        "TUCKERSEGMENT_WORKER_KEY. One owner only; it ends with its owner. Not for direct use.",
    )
    p.set_defaults(run=_run_worker)


def _run_worker(args: argparse.Namespace) -> int:
    from .worker import serve_owner, worker_settings

    return serve_owner(*worker_settings(dict(os.environ)))


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="offline demo: a synthetic CT, original vs compressed, table and picture",
        description="Segment a synthetic CT phantom with TotalSegmentator's pipeline using the "
        "project's test models, original and Tucker-compressed; print the agreement and "
        "timings; write both segmentations, the report and a side-by-side PNG. Offline.",
    )
    p.add_argument("-o", "--output", default="tuckersegment-demo", help="output folder")
    p.add_argument(
        "--df",
        type=float,
        default=None,
        help=f"one DF for every model (default: {defaults_text()})",
    )
    p.add_argument(
        "--fast", action="store_true", help="TS's 3 mm model instead of the five 1.5 mm experts"
    )
    p.add_argument(
        "--device",
        default="auto",
        help="auto (default), cpu, cuda (the first GPU), cuda:N (GPU N) or mps",
    )
    p.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto")
    p.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
    p.add_argument(
        "--review",
        action="store_true",
        help="then open the result in the browser (`tucker-segment review`)",
    )
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..demo.demo import run_demo
    from ..pipeline.agreement import format_agreement
    from ..pipeline.progress import Progress

    if args.review:
        from .review import check_review_extra

        check_review_extra()
    progress = Progress(args.progress)
    try:
        report = run_demo(
            Path(args.output), args.df, args.fast, args.device, args.precision, progress
        )
    finally:
        progress.close()
    print(format_agreement(report["agreement"], "original", "compressed"))
    t = report["timings"]
    for name, info in report["models"].items():
        if "params_original" in info:
            print(
                f"{name}: {info['params_original'] / 1e6:.3f} M → {info['params'] / 1e6:.3f} M "
                f"parameters at DF {info['df']:g}"
            )
    print(
        f"TS pipeline: original {t['original_s']:.1f} s (networks {t['original_network_s']:.1f} s), "
        f"compressed {t['segment_s']:.1f} s (networks {t['segment_network_s']:.1f} s; this first "
        "run also paid the one-time start-up)"
    )
    big = [n for n, d in report["truth_dice_original"].items() if n in ("liver", "spleen", "heart")]
    print(
        "Dice vs phantom truth (original / compressed): "
        + ", ".join(
            f"{n} {report['truth_dice_original'][n]:.3f}/{report['truth_dice_compressed'][n]:.3f}"
            for n in big
        )
    )
    print(
        f"wrote {args.output}/: segmentation.nii.gz, segmentation.original.nii.gz, "
        f"segmentation.agreement.csv, segmentation.json, comparison.png, demo_report.json"
    )
    if args.review:
        _review(Path(report["segmentation"]))
    return 0


def _add_speed_options(p: argparse.ArgumentParser, benchmark: bool = False) -> None:
    """--runtime and --allocator, shared by segment and benchmark."""
    p.add_argument(
        "--runtime",
        choices=("all", "fused", "eager", "openvino", "openvino-bf16", "openvino-int8")
        if benchmark
        else ("auto", "fused", "eager", "openvino", "openvino-bf16", "openvino-int8"),
        default="all" if benchmark else "auto",
        help=(
            "all (default): a row for each runtime; fused"
            if benchmark
            else "auto (default): fused or openvino, whichever this CPU's own runs measured "
            "faster for the image's number of patches (a model's first run measures fused; "
            "openvino is tried on an image fused would take >= TUCKERSEGMENT_EXPLORE_S "
            "seconds, default 10, on; the measurements are kept, cached per CPU and model); "
            "fused"
        )
        + ": compressed networks run with instance norm folded into the "
        "Tucker blocks, channels-last, on the CPU in fp32; openvino: the plain Tucker "
        "network under OpenVINO (CPU, fp32; converted "
        "once and cached); openvino-bf16: that conversion run in bf16 where OpenVINO reports "
        "native bf16 on this CPU (AVX512_BF16, AMX; segment runs f32 elsewhere, benchmark "
        "refuses; labels close to fp32's, not equal); "
        "openvino-int8: the fp32 conversion quantized to int8 by NNCF (calibrated on "
        "phantom patches; needs the int8 extra); eager: module by module as PyTorch runs them. "
        "fused and openvino hand nnU-Net fp16 logits (the dtype it sums them in): labels match "
        "eager's on about 99.99 %% of voxels",
    )
    p.add_argument(
        "--allocator",
        choices=("reuse", "default"),
        default="reuse",
        help="reuse (default, Linux): keep freed memory for the next patch instead of "
        "page-faulting through fresh memory; default: the C library's behaviour",
    )


def _add_benchmark(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark",
        help="speed of the original and compressed networks on this machine (one patch)",
        description="Forward time of one TS patch for the original network and each DF, "
        "interleaved in one run (median of the repeats after a warm-up), with speed-ups, "
        "params, GFLOPs and peak memory. Seeded random weights at TS's real architecture.",
    )
    p.add_argument("--model", choices=("3mm", "1.5mm"), default="3mm")
    p.add_argument("--expert", help="with --model 1.5mm: organs (default), vertebrae, …")
    p.add_argument(
        "--df", type=_dfs, nargs="+", default=None, help="DFs to time (default 0.9 0.5 0.3 0.1)"
    )
    p.add_argument(
        "--compressed-model",
        nargs="+",
        metavar="DIR",
        help="time these models (`prune`, `compress --plan`, `finetune` outputs) instead of the "
        "DF grid, beside the original of their architecture; all of one architecture",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="auto (default), cpu, cuda (the first GPU), cuda:N (GPU N) or mps",
    )
    p.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="fp32")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--patch", type=int, nargs=3, help="patch size (default: TS's)")
    add_layer_policy_options(p)
    _add_speed_options(p, benchmark=True)
    p.add_argument("-o", "--output", help="write the rows as CSV")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", help="write a PNG of speed-up and FLOP reduction per DF")
    p.set_defaults(run=_run_benchmark)


def _run_benchmark(args: argparse.Namespace) -> int:
    import csv
    from pathlib import Path

    from ..engine.layer_policy import resolve_policy
    from ..pipeline.output_files import check_output_file
    from ..pipeline.progress import Progress
    from ..runtime.benchmark import format_rows, plot_rows, run_benchmark, save_results
    from ..runtime.devices import device_kind, resolve_device
    from ..runtime.precision import resolve_precision
    from ..storage.cache import cache_root
    from .info import BENCHMARK_FILE

    if args.repeats < 1:
        raise TuckerSegmentError("--repeats must be at least 1")
    if args.patch is not None and any(size < 8 for size in args.patch):
        raise TuckerSegmentError(f"--patch: three sizes of at least 8 voxels, got {args.patch}")
    if args.output:
        check_output_file(Path(args.output), (".csv",))
    if args.plot:
        check_output_file(Path(args.plot), (".png",), what="--plot")
    given = _given_models(args) if args.compressed_model else None
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    spec = given[0][1].spec if given else _builtin_spec(args)
    dfs = [d for group in args.df for d in group] if args.df else [0.9, 0.5, 0.3, 0.1]
    progress = Progress("bar")
    try:
        rows = run_benchmark(
            spec,
            dfs,
            device,
            precision,
            args.repeats,
            patch_size=args.patch,
            progress=lambda f, m: progress.update("benchmark", f, m),
            policy=resolve_policy(
                "latency" if args.latency else args.layer_policy, device_kind(device)
            ),
            runtime=args.runtime,
            allocator=args.allocator,
            given=[(label, m.settings.df, network) for label, m, network in given or []],
        )
    finally:
        progress.close()
    if not given:  # `info` reads the DF grid's rows
        save_results(rows, cache_root() / BENCHMARK_FILE)
    if args.output:
        with open(args.output, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0].to_json()))
            writer.writeheader()
            writer.writerows(r.to_json() for r in rows)
    if args.plot:
        plot_rows(rows, Path(args.plot))
    print(json.dumps([r.to_json() for r in rows]) if args.json else format_rows(rows))
    return 0


def _given_models(args: argparse.Namespace) -> list[tuple[str, Any, Any]]:
    """`benchmark --compressed-model`: (label, manifest, network) of each model, loaded before
    any timing; one line for a bad folder, a mix of architectures or options that clash."""
    from ..storage.compressed_format import load_compressed

    if args.df:
        raise TuckerSegmentError("--df and --compressed-model: time one or the other")
    if args.plot:
        raise TuckerSegmentError("--plot draws the DF grid: leave it out with --compressed-model")
    if args.layer_policy not in ("auto", "default") or args.latency:
        raise TuckerSegmentError("--layer-policy/--latency shape the DF grid, not given models")
    given = []
    for folder in args.compressed_model:
        network, manifest = load_compressed(folder)
        given.append((Path(folder).name, manifest, network))
    architectures = {json.dumps(m.spec.to_json(), sort_keys=True) for _, m, _ in given}
    if len(architectures) > 1:
        raise TuckerSegmentError(
            "--compressed-model: these models are of different architectures; "
            "benchmark each architecture in a run of its own"
        )
    return given


class OneLineParser(argparse.ArgumentParser):
    """argparse's refusals in one line, as every other refusal of the command (argparse
    prints the whole usage block first); ``--help`` still shows it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .curves import add_curves
    from .flat_plans import add_flat_plans
    from .plan import add_plan
    from .prune import add_prune
    from .report import add_report
    from .review import add_review

    parser = OneLineParser(
        prog=PROG,
        description="TotalSegmentator with Tucker-compressed networks: lighter, faster CT "
        "segmentation for weak GPUs and CPUs.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_stats(sub)
    _add_compress(sub)
    _add_segment(sub)
    _add_batch(sub)
    _add_compare(sub)
    _add_info(sub)
    _add_demo(sub)
    _add_benchmark(sub)
    _add_finetune(sub)
    add_plan(sub)
    add_curves(sub)
    add_flat_plans(sub)
    add_prune(sub)
    add_report(sub)
    add_review(sub)
    _add_worker(sub)
    return parser


def _terminate(signum, frame) -> None:  # noqa: ANN001
    """SIGTERM (Cancel in Slicer) unwinds like Ctrl-C, so temporary files are removed."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; user errors print one line to stderr and return 1."""
    args = build_parser().parse_args(argv)
    from ..ts.environment import silence_known_warnings

    silence_known_warnings()
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.run in (
            _run_segment,
            _run_batch,
            _run_demo,
            _run_compress,
            _run_benchmark,
            _run_finetune,
        ):
            from ..ts.versions import check_versions

            for warning in check_versions():
                print(f"{PROG}: warning: {warning}", file=sys.stderr)
        if args.run is not _run_worker:  # the worker's first run does its imports
            imports_done()
        return args.run(args)
    except TuckerSegmentError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def tucker_segment() -> int:
    """The ``tucker-segment`` process: :func:`main` with the collector set for one run
    (process_gc.py says why)."""
    return command_process(main)


if __name__ == "__main__":
    sys.exit(tucker_segment())
