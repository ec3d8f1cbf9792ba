"""`segment`: TotalSegmentator's own `total` pipeline with Tucker-compressed networks.

Only the networks differ from a plain TS run: TS resamples, crops, runs nnU-Net's predictor
(expert by expert in full mode), merges the experts into 117 labels and maps them back to the
input grid. With ``compare`` the original networks run on the same input too.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from .. import __version__
from ..engine.compress import CompressionSettings
from ..engine.fidelity import below_floor_warning, default_df
from ..engine.ranks import DEFAULT_RANK_FLOOR, check_df
from ..errors import TuckerSegmentError
from ..runtime.openvino_runtime import OPENVINO_RUNTIMES
from ..ts.weights import TSModel, body_seg_applies, run_models, task_model, task_run_models
from .progress import Progress, Span


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
    policy: str = "auto"  # engine/layer_policy.py: latency on a GPU, default on the CPU
    device: str = "auto"
    precision: str = "auto"
    compare: bool = False
    runtime: str = "auto"  # fused or OpenVINO, from this CPU's own runs (runtime_choice.py)
    allocator: str = "reuse"
    workers: str = "in-process"
    download: bool = False
    weights_dir: Path | None = None
    compressed_models: list[Path] = field(default_factory=list)  # `compress`/`finetune` outputs
    plans: list[Path] = field(default_factory=list)  # `plan -o` outputs: per-layer ranks
    max_params: float | None = None  # a share of the run's parameters, planned (planner.py)
    statistics: bool = False  # TS's own --statistics JSON beside the output
    threads: int | None = None  # torch threads for the networks; None: TS's (every core)
    roi_subset: tuple[str, ...] = ()  # TS's --roi_subset: these structures only (6 mm crop first)
    fastest: bool = False  # TS's --fastest: the 6 mm model alone
    task: str = "total"  # TS's --task: one of its open CT tasks (body, lung_vessels, …)
    body_seg: bool = False  # TS's --body_seg: its 6 mm body model crops first
    force_split: bool = False  # TS's --force_split: a large CT in thirds (memory)
    remove_small_blobs: float | None = None  # TS's --remove_small_blobs, in mm³
    higher_order_resampling: bool = False  # TS's --higher_order_resampling


def model_settings(
    options: SegmentOptions, models: list[TSModel]
) -> dict[str, CompressionSettings | None]:
    """Compression settings per model (None = run the original network, DF 1). The layer policy
    must be resolved for the device first (plan_run: ``auto`` depends on it)."""
    if options.policy == "auto":
        raise ValueError("resolve the layer policy for the device before model_settings")
    names = [m.name for m in models]
    unknown = sorted(set(options.expert_df) - set(names))
    if unknown:
        raise TuckerSegmentError(
            f"unknown expert {', '.join(unknown)} for {mode_name(options)}; "
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


def mode_name(options: SegmentOptions) -> str:
    """``--fast``, ``full mode`` or ``--fastest``, with ``--roi_subset`` or the task."""
    mode = "--fastest" if options.fastest else "--fast" if options.fast else "full mode"
    mode += " with --roi_subset" if options.roi_subset else ""
    return mode + (f" of task {options.task}" if options.task != "total" else "")


def _check_task(options: SegmentOptions) -> list[TSModel]:
    """An open CT task of TS's, and the models it runs; one line for anything else."""
    if options.task == "total":
        return run_models(options.fast, options.fastest, options.roi_subset)
    from ..ts.tasks import open_ct_tasks, task_problem

    problem = task_problem(options.task)
    if problem:
        raise TuckerSegmentError(problem)
    if options.roi_subset or options.fastest:
        raise TuckerSegmentError(
            f"--roi-subset and --fastest are TS's options of task total, not {options.task}"
        )
    if options.task not in open_ct_tasks():  # pragma: no cover - task_problem says why
        raise TuckerSegmentError(f"task {options.task} is not offered")
    try:
        return task_run_models(options.task, options.fast)
    except ValueError as error:  # TS: e.g. "task X does not work with option --fast"
        raise TuckerSegmentError(str(error)) from None


def _check_roi_subset(options: SegmentOptions) -> None:
    """Names TS knows (one line naming the unknown ones, before any long work)."""
    from ..ts.structures import structure_names

    known = set(structure_names(options.task).values())
    unknown = [name for name in options.roi_subset if name not in known]
    if unknown:
        raise TuckerSegmentError(
            f"unknown structure {', '.join(unknown)} for --roi_subset; the names are "
            "TotalSegmentator's (`tucker-totalsegmentator -lc` lists them), e.g. liver spleen"
        )
    if options.roi_subset and options.fastest:
        raise TuckerSegmentError("--roi_subset crops with the 6 mm model; drop --fastest")
    if options.fast and options.fastest:
        raise TuckerSegmentError("--fast and --fastest are two models (3 mm, 6 mm): choose one")
    if options.body_seg and options.task == "body":
        raise TuckerSegmentError(
            "--body-seg crops to the body with the body task's own model; drop it for --task body"
        )


def _check_paths(options: SegmentOptions) -> None:
    from .output_files import check_writable, output_kind, sibling

    output_kind(options.output)
    check_writable(options.output)
    if options.input.exists() and options.output.resolve() == options.input.resolve():
        raise TuckerSegmentError("output must differ from the input; the input is never modified")
    beside = [".json", ".statistics.json", ".agreement.csv", ".original" + _suffix(options.output)]
    for path in (sibling(options.output, suffix) for suffix in beside):
        if path.is_dir():  # written beside the result at the end: refused now, not then
            raise TuckerSegmentError(f"{path} is a folder; the run writes a file of that name")


def _weights(options: SegmentOptions, models: list[TSModel]) -> dict[str, Path]:
    """The model folders of this run. With --roi_subset in full mode TS asks for all five
    experts' weights before it picks the ones it runs, so all five must be there (else TS
    would download them): missing ones are named now, before any work."""
    from ..ts.weights import find_model_folders, total_models

    required = list(models)
    if options.task == "total" and options.roi_subset and not options.fast:
        named = {m.name for m in models}
        required += [m for m in total_models(False) if m.name not in named]
    try:
        found = find_model_folders(options.fast, options.weights_dir, required, options.task)
    except TuckerSegmentError:
        if not options.download:
            raise
        from ..ts.weights import download_weights

        download_weights(required)  # the only network access
        found = find_model_folders(options.fast, options.weights_dir, required, options.task)
    return {m.name: found[m.name] for m in models}


@dataclass
class PreparedModel:
    """One model's network for the run: compressed (with its layers, for more folds) or None."""

    network: nn.Module | None
    layers: list | None = None
    method: str = "hosvd"
    torch_network: nn.Module | None = None  # when ``network`` is a converted (OpenVINO) one
    given: bool = False  # the user's model (fine-tuned: one network, whatever TS's folds)


@dataclass
class TSRun:
    """One TotalSegmentator run: the 117-label image and where the time went."""

    image: Any
    pipeline_s: float
    network_s: float
    network_s_by_model: dict[str, float]
    patches: dict[str, int]
    statistics: Path | None = None  # TS's statistics JSON (in the run's scratch folder)
    threads: int | None = None  # torch threads the networks ran with


def fold_networks(prepared: PreparedModel, folder: Path, fold_states: list[dict]) -> list:
    """One compressed network per fold: fold 0 is the cached one; further folds (nnU-Net models
    trained with several folds) are decomposed in memory with the same layers and ranks."""
    from ..engine.compress import compress_layers
    from ..ts.model_folder import open_model_folder

    networks = [prepared.network]
    if prepared.given:
        return networks
    if len(fold_states) > 1 and prepared.torch_network is not None:
        # a converted network holds fold 0's weights; several folds run in torch (eager)
        networks = [prepared.torch_network]
    for state in fold_states[1:]:
        network = open_model_folder(folder).spec.build("cpu")
        network.load_state_dict(state)
        compress_layers(network, prepared.layers, prepared.method)
        networks.append(network.eval())
    return networks


def _run_ts(
    ct,
    options: SegmentOptions,
    device: str,
    precision: str,
    prepared: dict[Path, PreparedModel],
    models_by_folder: dict[Path, TSModel],
    span: Span,
    statistics: Path | None = None,
) -> TSRun:
    """One TS run; ``prepared`` maps model folders to the networks to use instead of TS's."""
    import torch

    from ..runtime.devices import device_kind, ts_device
    from ..ts.in_process import export_in_process, spawned_workers
    from ..ts.predictor import predictor_class, predictor_in_ts
    from ..ts.run import run_ts_task

    order = list(models_by_folder)
    wrappers = []
    threads: list[int] = []  # torch threads each model's network runs with

    def choose(folder: Path, fold_states: list[dict]) -> list | None:
        if folder.resolve() not in models_by_folder:  # never an original network by surprise
            raise TuckerSegmentError(
                f"TotalSegmentator loaded {folder.parent.name}, a model this run did not plan "
                f"for ({mode_name(options)}); please report it with the command you ran"
            )
        model = prepared.get(folder.resolve())
        if model is None or model.network is None:
            return None
        return fold_networks(model, folder, fold_states)

    def on_loaded(folder: Path, wrapped, predictor) -> None:  # noqa: ANN001
        index = order.index(folder.resolve()) if folder.resolve() in order else 0
        name = models_by_folder.get(folder.resolve(), None)
        label = name.name if name else folder.parent.name
        wrapped.on_forward = lambda calls: span(
            (index + min(1.0, calls / max(1, predictor.windows))) / len(order),
            f"{label}: patch {calls}/{predictor.windows or '?'}",
        )
        span(index / len(order), f"{label}: predicting")
        from ..runtime.runtime_choice import start_model

        start_model(wrapped.network, [w.network for _, w in wrappers], lambda: predictor.windows)
        wrappers.append((label, wrapped))
        threads.append(torch.get_num_threads())

    from ..ts.command import weights_download_guard

    in_process = options.workers == "in-process"
    predictor = predictor_class(
        choose, device_kind(device), precision, on_loaded, in_process, options.threads
    )
    start = time.perf_counter()
    with (
        weights_download_guard(options.download),  # nothing TS asks for is fetched unasked
        spawned_workers(),
        export_in_process() if in_process else nullcontext(),
        predictor_in_ts(predictor),
    ):
        image = run_ts_task(
            ct.image,
            options.fast,
            ts_device(device),
            statistics,
            roi_subset=options.roi_subset,
            fastest=options.fastest,
            task=options.task,
            body_seg=options.body_seg,
            force_split=options.force_split,
            remove_small_blobs=options.remove_small_blobs,
            higher_order_resampling=options.higher_order_resampling,
        )
    return TSRun(
        image=image,
        pipeline_s=time.perf_counter() - start,
        network_s=sum(w.seconds for _, w in wrappers),
        network_s_by_model={label: w.seconds for label, w in wrappers},
        patches={label: w.calls for label, w in wrappers},
        statistics=statistics,
        threads=max(threads, default=None),
    )


@dataclass
class RunPlan:
    """What a run will do, decided and checked before any long work."""

    options: SegmentOptions
    models: list[TSModel]
    settings: dict[str, CompressionSettings | None]
    device: str
    precision: str
    allocator: str


def plan_run(options: SegmentOptions) -> RunPlan:
    """Check the settings, paths, device and precision; refuse bad input with one line."""
    from ..engine.layer_policy import resolve_policy
    from ..runtime.allocator import keep_freed_memory
    from ..runtime.devices import device_kind, resolve_device
    from ..runtime.precision import resolve_precision

    if options.threads is not None and options.threads < 1:
        raise TuckerSegmentError("--threads must be at least 1")
    blobs = options.remove_small_blobs
    if blobs is not None and not (math.isfinite(blobs) and blobs > 0):
        raise TuckerSegmentError(f"--remove-small-blobs: a volume in mm³ above 0, got {blobs:g}")
    if options.max_params is not None:
        if not 0 < options.max_params <= 1:
            raise TuckerSegmentError("--max-params: a share of the networks' parameters, e.g. 15%")
        if options.df is not None or options.expert_df:
            raise TuckerSegmentError(
                "--max-params plans the models' ranks for one budget: drop --df/--expert-df"
            )
    models = _check_task(options)
    _check_roi_subset(options)
    if options.body_seg and body_seg_applies(options.task, options.fast, options.roi_subset):
        models = [task_model("body", "fast"), *models]  # TS's 6 mm body model crops first
    device = resolve_device(options.device)
    options = replace(options, policy=resolve_policy(options.policy, device_kind(device)))
    settings = model_settings(options, models)
    _check_paths(options)
    precision = resolve_precision(options.precision, device_kind(device))
    allocator = "reuse" if options.allocator == "reuse" and keep_freed_memory() else "default"
    if options.runtime in ("fused", *OPENVINO_RUNTIMES) and (
        device != "cpu" or precision != "fp32"
    ):
        print(
            f"warning: --runtime {options.runtime} runs on the CPU in fp32; "
            f"on {device} in {precision} the networks run eager",
            file=sys.stderr,
        )
    elif options.runtime == "openvino-bf16":
        from ..runtime.openvino_runtime import native_bf16, version

        if version() is not None and not native_bf16():  # not installed: refused when loading
            print(
                "warning: --runtime openvino-bf16: this CPU has no native bf16 (AVX512_BF16 or "
                "AMX); OpenVINO runs f32",
                file=sys.stderr,
            )
    return RunPlan(options, models, settings, device, precision, allocator)


def load_input(plan: RunPlan) -> Any:
    """Read the CT; its warnings (and DFs below a fidelity floor) go to stderr and the sidecar."""
    from .input_image import load_ct

    options = plan.options
    ct = load_ct(options.input)
    for name, setting in plan.settings.items():
        explicit = name in options.expert_df or options.df is not None
        warning = below_floor_warning(name, setting.df) if setting and explicit else None
        if warning:
            ct.warnings.append(warning)
    for warning in ct.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return ct


def given_models(plan: RunPlan, folders: dict[str, Path]) -> dict[str, Path]:
    """Which TS model each ``--compressed-model`` replaces, matched by its labels (a model's
    outputs are its identity); one line for a model that belongs to no model of this mode."""
    from ..storage.compressed_format import read_manifest
    from ..storage.plan_file import planned_model, read_plan
    from ..ts.model_folder import open_model_folder

    if (
        not plan.options.compressed_models
        and not plan.options.plans
        and plan.options.max_params is None
    ):
        return {}
    labels = {name: open_model_folder(folder).spec.labels for name, folder in folders.items()}
    given: dict[str, Path] = {}
    for path in plan.options.plans:
        name = read_plan(path)["model"]
        if name not in folders:
            raise TuckerSegmentError(
                f"{path} is a plan for the {name} model, not one of {mode_name(plan.options)}'s "
                f"models ({', '.join(folders)})"
            )
        if name in given:
            raise TuckerSegmentError(f"two --plan for the {name} model")
        given[name] = planned_model(path, folders[name], plan.options.method)
    for path in plan.options.compressed_models:
        manifest = read_manifest(path)
        match = [name for name, known in labels.items() if known == manifest.spec.labels]
        if len(match) > 1:  # the 3 mm and 6 mm models have the same labels: which weights?
            match = _same_source(manifest, {name: folders[name] for name in match})
        if not match:
            mode = mode_name(plan.options)
            declared = manifest.extra.get("model", "another TS model")
            raise TuckerSegmentError(
                f"{path} is a compressed {declared} model, not one of {mode}'s models "
                f"({', '.join(labels)}); {'drop' if plan.options.fast else 'add'} --fast?"
            )
        if match[0] in given:
            raise TuckerSegmentError(f"two --compressed-model for the {match[0]} model")
        given[match[0]] = Path(path)
    if plan.options.max_params is not None:  # the models no --plan/--compressed-model names
        from ..storage.plan_file import budget_plans

        share, floor = plan.options.max_params, plan.options.rank_floor
        rest = {name: folder for name, folder in folders.items() if name not in given}
        for name, path in budget_plans(rest, share, floor).items():  # one budget for them all
            given[name] = planned_model(path, folders[name], plan.options.method)
    return given


def _same_source(manifest: Any, candidates: dict[str, Path]) -> list[str]:
    """Among models with the same labels, the one whose checkpoint the given model was made
    from (else the model its manifest names); one line when that does not decide."""
    from ..ts.model_folder import file_sha256

    by_source = [
        name
        for name, folder in candidates.items()
        if file_sha256(folder / "fold_0" / "checkpoint_final.pth") == manifest.source_sha256
    ]
    if len(by_source) == 1:
        return by_source
    named = [name for name in candidates if manifest.extra.get("model") == name]
    if len(named) == 1:
        return named
    raise TuckerSegmentError(
        f"a given model fits {' and '.join(candidates)} (same labels) and was made from neither's "
        "installed weights; it can't be placed"
    )


def prepare_models(
    plan: RunPlan, folders: dict[str, Path], span: Span
) -> tuple[dict[Path, PreparedModel], dict[str, dict[str, Any]]]:
    """Each model's network (from the cache, decomposed once) and what the sidecar says of it.
    A worker that segments many CTs (batch, the panel's warm worker) keeps them between runs."""
    from . import warm_cache

    prepared: dict[Path, PreparedModel] = {}
    model_info: dict[str, dict[str, Any]] = {}
    given = given_models(plan, folders)
    for i, model in enumerate(plan.models):
        setting = plan.settings[model.name]
        folder = folders[model.name]
        span(
            i / len(plan.models),
            f"{model.name}: "
            + (
                "given model"
                if model.name in given
                else "original"
                if setting is None
                else f"DF {setting.df:g}"
            ),
        )
        key = warm_cache.model_key(
            folder,
            [
                repr(setting),
                plan.device,
                plan.precision,
                plan.options.runtime,
                given.get(model.name),
            ],
        )
        kept = warm_cache.kept_model(key) if key else None
        if kept is not None:
            network, info = kept
            info = {**info, "kept_in_worker": True, "load_or_decompose_s": 0.0}
        else:
            network, info = _prepare_model(plan, model, folder, setting, given.get(model.name))
            warm_cache.keep_model(key, (network, info))
        if network is not None:
            prepared[folder.resolve()] = network
        model_info[model.name] = info
    return prepared, model_info


def _prepare_model(
    plan: RunPlan,
    model: TSModel,
    folder: Path,
    setting: CompressionSettings | None,
    given: Path | None,
) -> tuple[PreparedModel | None, dict[str, Any]]:
    """One model: the original (None), or its compressed network on the chosen runtime."""
    from ..engine.size_table import size_table
    from ..runtime.cpu_fusion import fuse
    from ..runtime.devices import device_kind
    from ..storage.cache import compressed_model, given_model
    from ..ts.model_folder import open_model_folder

    info: dict[str, Any] = {"task_id": model.task_id, "folder": str(folder)}
    if setting is None and given is None:
        original = size_table(open_model_folder(folder).spec)  # the original network
        info.update(
            df=1.0,
            compressed=False,
            params=original.params,
            gflops_per_patch=original.flops / 1e9,
        )
        return None, info
    cached = (
        given_model(given, plan.device)
        if given is not None
        else compressed_model(folder, setting, device_kind(plan.device), plan.precision)
    )
    setting = cached.manifest.settings
    network = cached.network
    cpu_fp32 = plan.device == "cpu" and plan.precision == "fp32"
    if plan.options.runtime == "auto" and cpu_fp32:
        from ..runtime.runtime_choice import choose_runtime
        from ..storage.cache import cache_root

        runtime, network, basis = choose_runtime(
            network, cached.manifest.spec, cached.manifest.layers, cached.path, cache_root()
        )
        info["runtime"] = runtime  # "per image": each image's patch count decides (set after)
        info["runtime_choice"] = basis
    elif plan.options.runtime in OPENVINO_RUNTIMES and cpu_fp32:
        from ..runtime.calibration import model_calibration
        from ..runtime.openvino_runtime import openvino_network

        spec = cached.manifest.spec
        int8 = plan.options.runtime == "openvino-int8"
        network, hit = openvino_network(
            network,
            spec.input_channels,
            spec.num_classes,
            cached.path,
            spec.patch_size,
            model_calibration(folder, spec.patch_size) if int8 else None,
            OPENVINO_RUNTIMES[plan.options.runtime],
        )
        info["runtime"] = plan.options.runtime
        info["openvino_conversion"] = "hit" if hit else "miss"
        # what OpenVINO ran in: f32, bf16 (f32 on a CPU without native bf16), or int8
        info["openvino_precision"] = "int8" if int8 else network.ran_in
    else:
        fused = plan.options.runtime == "fused" and cpu_fp32
        info["runtime"] = "fused" if fused and fuse(network) else "eager"
    prepared = PreparedModel(
        network,
        cached.manifest.layers,
        setting.method,
        torch_network=cached.network if network is not cached.network else None,
        given=given is not None,
    )
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
        ranks=[[layer.name, layer.rank_in, layer.rank_out] for layer in cached.manifest.layers],
    )
    if given is not None:
        info["given_model"] = str(given)
        info["cache"] = "given"
        for record in ("finetune", "prune", "plan"):  # what made the given model
            if record in extra:
                info[record] = extra[record]
    return prepared, info


def compare_runs(original: Any, result: Any, task: str = "total") -> Any:
    """Per-structure agreement of the original networks' labels and ours."""
    import numpy as np

    from ..ts.structures import structure_names
    from .agreement import compare_labels

    return compare_labels(
        np.asanyarray(original.dataobj),
        np.asanyarray(result.dataobj),
        tuple(float(z) for z in result.header.get_zooms()[:3]),
        structure_names(task),
    )


def build_sidecar(
    plan: RunPlan, ct: Any, model_info: dict, run: TSRun, timings: dict, agreement: Any
) -> dict[str, Any]:
    """The run's JSON record: settings, models, ranks, timings, versions, comparison."""
    from ..storage.compressed_format import library_versions
    from ..ts.structures import structure_names
    from .output_files import sibling

    options = plan.options
    sidecar: dict[str, Any] = {
        "tuckersegment": __version__,
        "input": str(options.input),
        "input_kind": ct.kind,
        "output": str(options.output),
        "mode": (
            f"task {options.task}" + (" (fast)" if options.fast else "")
            if options.task != "total"
            else "fastest (6 mm, Dataset298)"
            if options.fastest
            else "fast (3 mm, Dataset297)"
            if options.fast
            else "full (1.5 mm, five experts)"
        ),
        "roi_subset": list(options.roi_subset),
        "device": plan.device,
        "precision": plan.precision,
        "settings": {
            "rank_floor": options.rank_floor,
            "method": options.method,
            "layer_policy": options.policy,
            "runtime": options.runtime,
            "allocator": plan.allocator,
            "workers": options.workers,
            "network_threads": run.threads,
        },
        "models": model_info,
        "patches": run.patches,
        "task": options.task,
        "labels": {str(k): v for k, v in structure_names(options.task).items()},
        "warnings": ct.warnings,
        "versions": library_versions(),
    }
    if run.statistics is not None:
        sidecar["statistics"] = str(sibling(options.output, ".statistics.json"))
    if agreement is not None:
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
    return sidecar


def write_outputs(
    plan: RunPlan,
    result: Any,
    original: Any,
    agreement: Any,
    sidecar: dict,
    timings: dict,
    t0: float,
    result_statistics: Path | None = None,
) -> None:
    """Every output staged under a temporary name and renamed into place together."""
    from .output_files import sibling, staged_outputs, write_json, write_segmentation

    output = plan.options.output
    t = time.perf_counter()
    with staged_outputs() as staged:
        write_segmentation(result, output, staged.path_for(output), plan.options.task)
        if result_statistics is not None:
            target = Path(sidecar["statistics"])
            shutil.copyfile(result_statistics, staged.path_for(target))  # TS's file, as written
        if original is not None:
            target = Path(sidecar["comparison"]["original_output"])
            write_segmentation(original, target, staged.path_for(target), plan.options.task)
            report = Path(sidecar["comparison"]["report"])
            staged.path_for(report).write_text(agreement.to_csv())
        timings["write_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t0
        sidecar["timings"] = {k: round(v, 3) for k, v in timings.items()}
        write_json(sidecar, staged.path_for(sibling(output, ".json")))
        staged.commit()


def _original_run(
    ct: Any, plan: RunPlan, by_folder: dict[Path, TSModel], progress: Progress, start: float
) -> tuple[TSRun, bool]:
    """The original networks' run on this CT, or (in a warm worker) the one kept from the
    previous run on the same CT with the same settings; True when it was kept."""
    from . import warm_cache

    options = plan.options
    settings = {
        "task": options.task,
        "body_seg": options.body_seg,
        "force_split": options.force_split,
        "remove_small_blobs": options.remove_small_blobs,
        "higher_order_resampling": options.higher_order_resampling,
        "fast": options.fast,
        "fastest": options.fastest,
        "roi_subset": list(options.roi_subset),
        "device": plan.device,
        "precision": plan.precision,
        "workers": options.workers,
    }
    key = warm_cache.original_run_key(ct.image, settings, list(by_folder))
    kept = warm_cache.cached_original(key) if key else None
    if kept is not None:
        progress.update("original", 0.9, "original networks: result kept from the last run")
        return kept, True
    run = _run_ts(
        ct,
        options,
        plan.device,
        plan.precision,
        {},
        by_folder,
        Span(progress, "original", start, 0.9),
    )
    warm_cache.keep_original(key, run)
    return run, False


def warm_model_cache(options: SegmentOptions) -> RunPlan:
    """Check a run's settings, weights and given models, and decompose (or convert) each model
    into the cache, without segmenting: a cohort does this once before its workers start."""
    from ..ts.environment import ts_environment
    from ..ts.weights import weights_dir

    plan = plan_run(options)
    weights = Path(options.weights_dir) if options.weights_dir else weights_dir()
    with ts_environment(weights):
        folders = _weights(options, plan.models)
        prepare_models(plan, folders, Span(Progress("none"), "compress", 0.0, 1.0))
    return plan


def segment(options: SegmentOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Segment ``options.input`` and write ``options.output`` (+ sidecar, + comparison)."""
    from ..storage.scratch import run_scratch

    progress = progress or Progress("none")
    t0 = time.perf_counter()
    plan = plan_run(options)
    with run_scratch() as scratch:
        return _segment(plan, progress, scratch, t0)


def _segment(plan: RunPlan, progress: Progress, scratch: Path, t0: float) -> dict[str, Any]:
    from ..ts.environment import ts_environment
    from ..ts.weights import weights_dir

    options = plan.options
    timings: dict[str, float] = {}
    progress.update("load", 0.0, f"reading {options.input.name}")
    ct = load_input(plan)
    timings["load_input_s"] = time.perf_counter() - t0

    weights = Path(options.weights_dir) if options.weights_dir else weights_dir()
    with ts_environment(weights):
        folders = _weights(options, plan.models)
        by_folder = {folders[m.name].resolve(): m for m in plan.models}
        t = time.perf_counter()
        prepared, model_info = prepare_models(plan, folders, Span(progress, "compress", 0.05, 0.2))
        timings["compress_s"] = time.perf_counter() - t
        seg_end = 0.55 if options.compare else 0.9
        run = _run_ts(
            ct,
            options,
            plan.device,
            plan.precision,
            prepared,
            by_folder,
            Span(progress, "segment", 0.2, seg_end),
            scratch / "statistics.json" if options.statistics else None,
        )
        timings["segment_s"], timings["segment_network_s"] = run.pipeline_s, run.network_s
        for folder, model in by_folder.items():  # what each measured choice ran, and why
            network = getattr(prepared.get(folder), "network", None)
            if getattr(network, "chosen", None) and model.name in model_info:
                info = model_info[model.name]  # a copy: a warm worker keeps the original
                basis = {
                    **network.records.get(),
                    "patches": network.patches(),
                    "tried": network.tried,  # not measured before: this run measured it
                }
                if network.unavailable:
                    basis["openvino_unavailable"] = network.unavailable
                model_info[model.name] = {
                    **info,
                    "runtime": network.chosen,
                    "runtime_choice": basis,
                }
        original, reuse_note = None, {}
        if options.compare:
            original_run, reused = _original_run(ct, plan, by_folder, progress, seg_end)
            original = original_run.image
            timings["original_s"] = original_run.pipeline_s
            timings["original_network_s"] = original_run.network_s
            reuse_note = {"original_reused": reused}

    agreement = None
    if original is not None:
        progress.update("compare", 0.9, "agreement with the original networks")
        t = time.perf_counter()
        agreement = compare_runs(original, run.image, options.task)
        timings["compare_s"] = time.perf_counter() - t
    sidecar = build_sidecar(plan, ct, model_info, run, timings, agreement)
    if "comparison" in sidecar:
        sidecar["comparison"].update(reuse_note)
    progress.update("write", 0.95, f"writing {options.output.name}")
    write_outputs(plan, run.image, original, agreement, sidecar, timings, t0, run.statistics)
    progress.update("done", 1.0, f"wrote {options.output}")
    sidecar["agreement"] = agreement
    return sidecar


def _suffix(path: Path) -> str:
    from .output_files import stem

    return path.name[len(stem(path)) :]
