"""`tucker-totalsegmentator`: TotalSegmentator's own command line, with compressed networks.

A TotalSegmentator user changes the command's name and nothing else: every argument that is not
one of the compression options below goes to TS's own parser and ``main`` (ts/command.py), so
TS's options, outputs (per-structure NIfTI folder, ``--ml``, DICOM SEG / RT-STRUCT),
``--statistics``, ``--roi_subset``, ``--fastest``, ``--body_seg`` and other tasks behave as TS
defines them. Every network TS loads for them is compressed (pipeline/every_model.py); with
``--df 1`` the output is TS's own. Usage statistics stay off and a missing model is an error
unless ``--download`` is given.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .process_gc import command_process, imports_done

PROG = "tucker-totalsegmentator"


def compression_parser() -> argparse.ArgumentParser:
    """Our options only (long names TS doesn't use; no abbreviations, so TS's pass through)."""
    from ..engine.fidelity import defaults_text
    from .main import add_factorization_options, expert_dfs

    p = argparse.ArgumentParser(prog=PROG, add_help=False, allow_abbrev=False)
    group = p.add_argument_group("compression (tucker-totalsegmentator's own options)")
    group.add_argument(
        "--df",
        type=float,
        help=f"DF for every network TS loads; 1 = TS's own networks (default: {defaults_text(True)})",
    )
    group.add_argument(
        "--expert-df",
        type=expert_dfs,
        default={},
        help="DF per model: organs, vertebrae, cardiac, muscles, ribs, 3mm, 6mm, body, or "
        "another task's name (e.g. lung_vessels=0.7,6mm=1)",
    )
    add_factorization_options(group)
    group.add_argument(
        "--runtime",
        choices=("auto", "fused", "eager"),
        default="auto",
        help="auto (default): fused or openvino per image, from this CPU's own runs "
        "(as tucker-segment segment's --runtime); fused; eager",
    )
    group.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto")
    group.add_argument(
        "--download",
        action="store_true",
        help="let TS download models it needs and doesn't find, and check a -l licence number "
        "online (the only network access)",
    )
    return p


def _ts_paths_and_device(ts_args: list[str]) -> argparse.Namespace:
    """TS's -i, -o and -d in ``ts_args`` (-d: TS's default gpu), read ahead of TS's parser."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("-i", "--input")
    p.add_argument("-o", "--output")
    p.add_argument("-d", "--device", default="gpu")
    return p.parse_known_args(ts_args)[0]


def _check_paths(given: argparse.Namespace) -> None:
    """What TS finds out only late: a folder given as -i must hold a DICOM series (TS's
    converter fails on an empty folder or one of other files with an IndexError), and -o must
    be writable (TS writes it after the whole prediction)."""
    from ..pipeline.input_image import check_dicom_folder
    from ..pipeline.output_files import check_writable

    if given.input and Path(given.input).is_dir():
        check_dicom_folder(Path(given.input))
    if given.output:  # a file (--ml) or a folder TS makes, parents included
        existing = Path(given.output).absolute()
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        check_writable(existing / ".probe" if existing.is_dir() else existing)


def main(argv: Sequence[str] | None = None) -> int:
    from ..errors import TuckerSegmentError

    args = list(sys.argv[1:] if argv is None else argv)
    ours, ts_args = compression_parser().parse_known_args(args)
    try:
        return _run(ours, ts_args)
    except TuckerSegmentError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - what TS raises for what it rejects, one line
        lines = str(error).strip().splitlines()
        print(f"{PROG}: error: {lines[0] if lines else type(error).__name__}", file=sys.stderr)
        return 1


def _run(ours: argparse.Namespace, ts_args: list[str]) -> int:
    from dataclasses import replace

    from ..engine.layer_policy import resolve_policy
    from ..engine.ranks import check_df
    from ..errors import TuckerSegmentError
    from ..pipeline.every_model import CompressionChoice, compressing_chooser, on_loaded_for
    from ..runtime.devices import device_kind
    from ..runtime.precision import resolve_precision
    from ..storage.scratch import run_scratch
    from ..ts.command import (
        license_validation_guard,
        run_totalsegmentator_command,
        ts_selected_device,
        weights_download_guard,
    )
    from ..ts.environment import silence_known_warnings, ts_environment
    from ..ts.in_process import spawned_workers
    from ..ts.predictor import predictor_class, predictor_in_ts
    from ..ts.tasks import model_names
    from ..ts.versions import check_versions
    from ..ts.weights import weights_dir

    silence_known_warnings()
    if any(a in ("-h", "--help") for a in ts_args):
        code = run_totalsegmentator_command(ts_args, PROG)
        compression_parser().print_help()
        return code
    for warning in check_versions():
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    imports_done()
    unknown = sorted(set(ours.expert_df) - model_names())
    if unknown:
        raise TuckerSegmentError(
            f"--expert-df: no TotalSegmentator model is called {', '.join(unknown)} "
            "(e.g. organs, vertebrae, cardiac, muscles, ribs, 3mm, 6mm, body)"
        )
    given = _ts_paths_and_device(ts_args)
    _check_paths(given)
    choice = CompressionChoice(
        df=check_df(ours.df) if ours.df is not None else None,
        expert_df=ours.expert_df,
        rank_floor=ours.rank_floor,
        method=ours.method,
        policy="paper" if ours.paper else "auto",
        runtime=ours.runtime,
    )
    device = ts_selected_device(given.device)
    choice = replace(choice, policy=resolve_policy(choice.policy, device_kind(device)))
    precision = resolve_precision(ours.precision, device_kind(device))
    loaded: list = []
    choose = compressing_chooser(choice, device, precision, loaded)
    predictor = predictor_class(choose, device_kind(device), precision, on_loaded_for(loaded))
    with (
        run_scratch(),
        ts_environment(weights_dir()),
        weights_download_guard(ours.download),
        license_validation_guard(ours.download),
        spawned_workers(),
        predictor_in_ts(predictor),
    ):
        code = run_totalsegmentator_command(ts_args, PROG)
    if loaded:
        summary = ", ".join(
            f"{m.name} " + ("original" if m.df == 1.0 else f"DF {m.df:g} ({m.ran})") for m in loaded
        )
        print(f"{PROG}: networks: {summary}", file=sys.stderr)
    for warning in sorted({m.warning for m in loaded if m.warning}):
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    return code


def tucker_totalsegmentator() -> int:
    """The ``tucker-totalsegmentator`` process: :func:`main` with the collector set for one
    run (process_gc.py says why)."""
    return command_process(main)


if __name__ == "__main__":
    sys.exit(tucker_totalsegmentator())
