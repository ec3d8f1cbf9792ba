"""`segment`: TotalSegmentator's own `total` pipeline with Tucker-compressed networks.

Only the networks differ from a plain TS run: TS resamples, crops, runs nnU-Net's predictor
(expert by expert in full mode), merges the experts into 117 labels and maps them back to the
input grid. With ``compare`` the original networks run on the same input too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from . import __version__
from .compress import CompressionSettings
from .errors import TuckerSegmentError
from .fidelity import below_floor_warning, default_df
from .progress import Progress, Span
from .ranks import DEFAULT_RANK_FLOOR, check_df
from .ts_weights import TSModel, total_models


@dataclass
class SegmentOptions:
    """Everything `tucker-segment segment` accepts."""

    input: Path
    output: Path
    fast: bool = False
    df: float | None = None  # None: each model's default (fidelity.py)
    expert_df: dict[str, float] = field(default_factory=dict)
    rank_floor: int = DEFAULT_RANK_FLOOR
    method: str = "hosvd"
    policy: str = "default"
    device: str = "auto"
    precision: str = "auto"
    compare: bool = False
    runtime: str = "fused"
    allocator: str = "reuse"
    workers: str = "in-process"
    download: bool = False
    weights_dir: Path | None = None


def model_settings(
    options: SegmentOptions, models: list[TSModel]
) -> dict[str, CompressionSettings | None]:
    """Compression settings per model (None = run the original network, DF 1)."""
    names = [m.name for m in models]
    unknown = sorted(set(options.expert_df) - set(names))
    if unknown:
        raise TuckerSegmentError(
            f"unknown expert {', '.join(unknown)} for {'--fast' if options.fast else 'full'} mode; "
            f"choose from {', '.join(names)}"
        )
    settings: dict[str, CompressionSettings | None] = {}
    for name in names:
        explicit = options.expert_df.get(name, options.df)
        df = default_df(name) if explicit is None else check_df(explicit)
        settings[name] = (
            None
            if df == 1.0
            else CompressionSettings(
                df=df, rank_floor=options.rank_floor, method=options.method, policy=options.policy
            )
        )
    return settings


def _check_paths(options: SegmentOptions) -> None:
    from .output_files import check_writable, output_kind

    output_kind(options.output)
    check_writable(options.output)
    if options.input.exists() and options.output.resolve() == options.input.resolve():
        raise TuckerSegmentError("output must differ from the input; the input is never modified")


def _weights(options: SegmentOptions, models: list[TSModel]) -> dict[str, Path]:
    from .ts_weights import find_model_folders

    try:
        return find_model_folders(options.fast, options.weights_dir)
    except TuckerSegmentError:
        if not options.download:
            raise
    from totalsegmentator.libs import download_pretrained_weights  # the only network access

    for model in models:
        download_pretrained_weights(model.task_id)
    return find_model_folders(options.fast, options.weights_dir)


@contextmanager
def spawned_workers() -> Iterator[None]:
    """Make TS's and nnU-Net's worker pools start by spawning, not forking.

    Forking a process whose PyTorch/OpenMP threads already ran (the decomposition did) can
    deadlock the child on a lock held at fork time; spawn is what nnU-Net uses on macOS and
    Windows anyway. The previous start method is restored afterwards.
    """
    import multiprocessing

    previous = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method("spawn", force=True)
    try:
        yield
    finally:
        multiprocessing.set_start_method(previous, force=True)


def _run_ts(
    ct,
    options: SegmentOptions,
    device: str,
    precision: str,
    networks: dict[Path, nn.Module],
    models_by_folder: dict[Path, TSModel],
    span: Span,
    stats: dict,
) -> Any:
    """One TS run; ``networks`` maps model folders to the network to use instead of TS's."""
    from totalsegmentator.python_api import totalsegmentator

    from .devices import device_kind, ts_device
    from .in_process_workers import workers_in_process
    from .network_swap import swapped_networks

    order = list(models_by_folder)
    wrappers = []

    def on_loaded(folder: Path, wrapped, predictor) -> None:
        index = order.index(folder.resolve()) if folder.resolve() in order else 0
        name = models_by_folder.get(folder.resolve(), None)
        total = {"windows": 0}
        get_slicers = predictor._internal_get_sliding_window_slicers

        def counting_slicers(shape):  # noqa: ANN001
            slicers = get_slicers(shape)
            total["windows"] = len(slicers)
            return slicers

        predictor._internal_get_sliding_window_slicers = counting_slicers
        label = name.name if name else folder.parent.name
        wrapped.on_forward = lambda calls: span(
            (index + min(1.0, calls / max(1, total["windows"]))) / len(order),
            f"{label}: patch {calls}/{total['windows'] or '?'}",
        )
        span(index / len(order), f"{label}: predicting")
        wrappers.append((label, wrapped))

    start = time.perf_counter()
    in_process = workers_in_process() if options.workers == "in-process" else nullcontext()
    with (
        spawned_workers(),
        in_process,
        swapped_networks(
            lambda f: networks.get(f.resolve()), device_kind(device), precision, on_loaded
        ),
    ):
        image = totalsegmentator(
            ct.image,
            None,
            ml=True,
            fast=options.fast,
            device=ts_device(device),
            quiet=True,
            nr_thr_resamp=1,
            nr_thr_saving=1,
            task="total",
        )
    stats["pipeline_s"] = time.perf_counter() - start
    stats["network_s"] = sum(w.seconds for _, w in wrappers)
    stats["network_s_by_model"] = {label: w.seconds for label, w in wrappers}
    stats["patches"] = {label: w.calls for label, w in wrappers}
    return image


def segment(options: SegmentOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Segment ``options.input`` and write ``options.output`` (+ sidecar, + comparison)."""
    from .agreement import compare_labels
    from .allocator import keep_freed_memory
    from .cache import compressed_model
    from .compressed_model import library_versions
    from .cpu_fusion import fuse
    from .devices import device_kind, resolve_device
    from .input_image import load_ct
    from .model_folder import open_model_folder
    from .output_files import sibling, staged_outputs, write_json, write_result
    from .precision import resolve_precision
    from .size_table import size_table
    from .structures import structure_names
    from .ts_environment import ts_environment
    from .ts_weights import weights_dir

    progress = progress or Progress("none")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    models = total_models(options.fast)
    settings = model_settings(options, models)
    _check_paths(options)
    device = resolve_device(options.device)
    precision = resolve_precision(options.precision, device_kind(device))
    allocator = "reuse" if options.allocator == "reuse" and keep_freed_memory() else "default"

    progress.update("load", 0.0, f"reading {options.input.name}")
    ct = load_ct(options.input)
    for name, setting in settings.items():
        explicit = name in options.expert_df or options.df is not None
        warning = below_floor_warning(name, setting.df) if setting and explicit else None
        if warning:
            ct.warnings.append(warning)
    for warning in ct.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    timings["load_input_s"] = time.perf_counter() - t0

    weights = Path(options.weights_dir) if options.weights_dir else weights_dir()
    model_info: dict[str, dict[str, Any]] = {}
    with ts_environment(weights):
        folders = _weights(options, models)
        by_folder = {folders[m.name].resolve(): m for m in models}
        networks: dict[Path, nn.Module] = {}
        span = Span(progress, "compress", 0.05, 0.2)
        t = time.perf_counter()
        for i, model in enumerate(models):
            setting = settings[model.name]
            span(
                i / len(models),
                f"{model.name}: {'original' if setting is None else f'DF {setting.df:g}'}",
            )
            info: dict[str, Any] = {"task_id": model.task_id, "folder": str(folders[model.name])}
            if setting is None:
                spec = open_model_folder(folders[model.name]).spec
                original = size_table(spec)  # the original network, not a full-rank Tucker one
                info.update(
                    df=1.0,
                    compressed=False,
                    params=original.params,
                    gflops_per_patch=original.flops / 1e9,
                )
            else:
                cached = compressed_model(
                    folders[model.name], setting, device_kind(device), precision
                )
                network = cached.network
                if options.runtime == "fused" and device == "cpu" and precision == "fp32":
                    info["runtime"] = "fused" if fuse(network) else "eager"
                else:
                    info["runtime"] = "eager"
                networks[folders[model.name].resolve()] = network
                extra = cached.manifest.extra
                info.update(
                    df=setting.df,
                    compressed=True,
                    cache="hit" if cached.hit else "miss",
                    cache_entry=str(cached.path),
                    load_or_decompose_s=round(cached.seconds, 3),
                    params=extra["params"]["compressed"],
                    params_original=extra["params"]["original"],
                    gflops_per_patch=extra["gflops_per_patch"]["compressed"],
                    gflops_per_patch_original=extra["gflops_per_patch"]["original"],
                    ranks=[
                        [layer.name, layer.rank_in, layer.rank_out]
                        for layer in cached.manifest.layers
                    ],
                )
            model_info[model.name] = info
        timings["compress_s"] = time.perf_counter() - t

        run_stats: dict[str, Any] = {}
        seg_end = 0.55 if options.compare else 0.9
        result = _run_ts(
            ct,
            options,
            device,
            precision,
            networks,
            by_folder,
            Span(progress, "segment", 0.2, seg_end),
            run_stats,
        )
        timings["segment_s"] = run_stats["pipeline_s"]
        timings["segment_network_s"] = run_stats["network_s"]
        original = None
        if options.compare:
            orig_stats: dict[str, Any] = {}
            original = _run_ts(
                ct,
                options,
                device,
                precision,
                {},
                by_folder,
                Span(progress, "original", seg_end, 0.9),
                orig_stats,
            )
            timings["original_s"] = orig_stats["pipeline_s"]
            timings["original_network_s"] = orig_stats["network_s"]

    names = structure_names()
    sidecar: dict[str, Any] = {
        "tuckersegment": __version__,
        "input": str(options.input),
        "input_kind": ct.kind,
        "output": str(options.output),
        "mode": "fast (3 mm, Dataset297)" if options.fast else "full (1.5 mm, five experts)",
        "device": device,
        "precision": precision,
        "settings": {
            "rank_floor": options.rank_floor,
            "method": options.method,
            "layer_policy": options.policy,
            "runtime": options.runtime,
            "allocator": allocator,
            "workers": options.workers,
        },
        "models": model_info,
        "patches": run_stats["patches"],
        "labels": {str(k): v for k, v in names.items()},
        "warnings": ct.warnings,
        "versions": library_versions(),
    }
    agreement = None
    if original is not None:
        progress.update("compare", 0.9, "agreement with the original networks")
        t = time.perf_counter()
        import numpy as np

        agreement = compare_labels(
            np.asanyarray(original.dataobj),
            np.asanyarray(result.dataobj),
            tuple(float(z) for z in result.header.get_zooms()[:3]),
            names,
        )
        timings["compare_s"] = time.perf_counter() - t
        sidecar["comparison"] = {
            "a": "original TotalSegmentator networks",
            "b": "Tucker-compressed networks",
            "original_output": str(sibling(options.output, ".original" + _suffix(options.output))),
            "report": str(sibling(options.output, ".agreement.csv")),
            "summary": agreement.summary,
            "speedup_network": (
                timings["original_network_s"] / timings["segment_network_s"]
                if timings.get("segment_network_s")
                else None
            ),
            "speedup_pipeline": timings["original_s"] / timings["segment_s"],
        }

    progress.update("write", 0.95, f"writing {options.output.name}")
    t = time.perf_counter()
    with staged_outputs() as staged:
        write_result(result, options.output, staged.path_for(options.output))
        if original is not None:
            target = Path(sidecar["comparison"]["original_output"])
            write_result(original, target, staged.path_for(target))
            report = Path(sidecar["comparison"]["report"])
            staged.path_for(report).write_text(agreement.to_csv())
        timings["write_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t0
        sidecar["timings"] = {k: round(v, 3) for k, v in timings.items()}
        write_json(sidecar, staged.path_for(sibling(options.output, ".json")))
        staged.commit()
    progress.update("done", 1.0, f"wrote {options.output}")
    sidecar["agreement"] = agreement
    return sidecar


def _suffix(path: Path) -> str:
    from .output_files import stem

    return path.name[len(stem(path)) :]
