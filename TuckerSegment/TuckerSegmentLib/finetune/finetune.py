"""Fine-tune a Tucker-compressed TS network on labelled CTs, with nnU-Net's trainer.

The paper's headline result (88 % of the parameters gone, no evidence of a difference for 113
of 117 classes) is after fine-tuning. This runs it: checks first (model, dataset, output, GPUs:
one line and a non-zero exit before any long work), then nnU-Net's fingerprint, preprocessing
with the TS model's own plans, and `run_training` with the Tucker trainer (ts/training.py,
ts/trainers/), in a work folder beside the output that makes an interrupted run resumable.
The result is written like `compress` writes (weights.pt + manifest.json, with the provenance
of the fine-tuning), atomically, so a model at OUT is always a finished one; `segment
--compressed-model OUT` runs it through TS's pipeline.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.compress import CompressionSettings
from ..engine.ranks import DEFAULT_RANK_FLOOR
from ..errors import TuckerSegmentError
from ..pipeline.progress import Progress
from ..ts.training import STAMP_TRAINERS, TRAINERS
from .dataset_check import DatasetSummary, check_dataset

# The authors' fine-tuning (ClinicalDataScience/tucker-cnn, configs/finetune_baseline.yml)
AUTHORS_DF = 0.3
AUTHORS_LR = 1e-5
AUTHORS_EPOCHS = 50
# where the training labels come from: the dataset's labelsTr, or the original TS network's
# own output on the dataset's images (self-distillation: no annotation needed, and the target is
# exactly the behaviour the compressed network should keep)
LABEL_SOURCES = ("dataset", "original")
# nnU-Net's two checkpoints: the last epoch's, and the one of the best moving average of the
# validation pseudo-Dice (nnU-Net's own choice, by its own measure; nnUNetv2_predict -chk)
CHECKPOINTS = ("final", "best")


@dataclass
class FinetuneOptions:
    """Everything `tucker-segment finetune` accepts."""

    model: str
    dataset: Path
    output: Path
    df: float = AUTHORS_DF
    rank_floor: int = DEFAULT_RANK_FLOOR
    method: str = "hosvd"
    epochs: int = AUTHORS_EPOCHS
    iterations_per_epoch: int = 250  # nnU-Net's default
    val_iterations: int = 50  # nnU-Net's default
    lr: float = AUTHORS_LR
    weight_decay: float = 3e-5  # nnU-Net's default
    fold: str = "auto"
    device: str = "auto"
    gpus: int = 1
    augmentation_workers: int | None = None
    weights_dir: Path | None = None
    progress: str = "bar"
    seed: int | None = None
    labels: str = "dataset"  # "original": the original network labels the images (distillation)
    augmentation: str = "nnunet"  # nnU-Net's data augmentation, or "none" (nnUNetTrainerNoDA's)
    foreground_oversampling: float | None = None  # nnU-Net's share of foreground patches (0.33)
    distill: float = 0.0  # weight of the KL divergence to the original's probabilities (0: off)
    start_from: Path | None = None  # a compressed model folder (planned, pruned, fine-tuned)
    stamp_target: float | None = None  # STAMP: prune the original to this share of parameters
    stamp_every: int = 1  # epochs between removals (the reference's pruning frequency)
    stamp_filters: int = 4  # filters removed each time, the lowest-ranked of the network
    stamp_margin: float = 0.05  # stop pruning when validation Dice falls this far below its best
    stamp_min_channels: int = 4  # never fewer channels in a layer
    checkpoint: str = "final"  # the weights written: nnU-Net's checkpoint_final or _best

    @property
    def trainer(self) -> str:
        """nnU-Net's trainer class for these options (ts/trainers/)."""
        return (STAMP_TRAINERS if self.stamp_target is not None else TRAINERS)[self.augmentation]


@dataclass
class FinetunePlan:
    """What a run will do, decided and checked before any long work."""

    options: FinetuneOptions
    model_folder: Path
    compression: CompressionSettings
    dataset: DatasetSummary
    fold: int | str
    device: str
    work: Path
    resume: bool
    settings: dict[str, Any]


def model_choices() -> list[str]:
    """The TS models that can be fine-tuned: the 3 mm model and the five 1.5 mm experts."""
    from ..ts.weights import total_models

    return [m.name for m in total_models(True) + total_models(False)]


def _model_folder(options: FinetuneOptions) -> Path:
    from ..ts.weights import find_model_folders

    choices = model_choices()
    if options.model not in choices:
        raise TuckerSegmentError(
            f"unknown model {options.model!r}; choose from {', '.join(choices)}"
        )
    fast = options.model == "3mm"
    try:
        return find_model_folders(fast, options.weights_dir)[options.model]
    except TuckerSegmentError:
        from ..ts.weights import total_models, weights_dir

        model = next(m for m in total_models(fast) if m.name == options.model)
        folder = model.folder(Path(options.weights_dir) if options.weights_dir else weights_dir())
        if (folder / "fold_0" / "checkpoint_final.pth").is_file():
            return folder
        raise TuckerSegmentError(
            f"the {options.model} model's TS weights are not installed ({folder}); fine-tuning "
            "starts from them (tucker-segment segment --download fetches them)"
        ) from None


def _device(options: FinetuneOptions) -> str:
    import torch

    from ..runtime.devices import resolve_device

    device = resolve_device(options.device)
    if options.gpus < 1:
        raise TuckerSegmentError("--gpus must be at least 1")
    if options.gpus > 1:
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if available < options.gpus:
            raise TuckerSegmentError(
                f"--gpus {options.gpus}: nnU-Net's multi-GPU training needs {options.gpus} CUDA "
                f"GPUs on this machine (nccl, one host); {available} found"
            )
        return "cuda"
    if device.startswith("cuda:"):
        # nnU-Net's trainer always trains on cuda:0; the chosen GPU becomes the only visible one
        os.environ["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
        return "cuda"
    return device


def _fold(options: FinetuneOptions, cases: int) -> int | str:
    if options.fold == "auto":
        return 0 if cases >= 5 else "all"  # nnU-Net's 5-fold split needs five cases
    if options.fold == "all":
        return "all"
    try:
        fold = int(options.fold)
    except ValueError:
        raise TuckerSegmentError(f"--fold must be auto, all or 0-4, not {options.fold!r}") from None
    if not 0 <= fold <= 4 or cases < 5:
        raise TuckerSegmentError(
            f"--fold {fold}: nnU-Net's folds are 0-4 and need at least five cases ({cases} here); "
            "use --fold all"
        )
    return fold


def work_folder(output: Path) -> Path:
    """Where an unfinished fine-tuning keeps nnU-Net's folders (beside the output)."""
    return output.parent / f".{output.name}.finetune-work"


def plan_finetune(options: FinetuneOptions) -> FinetunePlan:
    """Every check, in order of cost; nothing is written yet."""
    from ..ts.model_folder import file_sha256, open_model_folder

    if options.progress not in ("bar", "json", "none"):
        raise TuckerSegmentError(f"unknown progress mode {options.progress!r}")
    for name in ("epochs", "iterations_per_epoch", "val_iterations"):
        if getattr(options, name) < 1:
            raise TuckerSegmentError(f"--{name.replace('_', '-')} must be at least 1")
    if not (math.isfinite(options.lr) and options.lr > 0):
        raise TuckerSegmentError("--lr must be a positive number")
    if not (math.isfinite(options.weight_decay) and options.weight_decay >= 0):
        raise TuckerSegmentError("--weight-decay must be a number, 0 or more")
    if options.seed is not None and not 0 <= options.seed < 2**32:  # numpy's range
        raise TuckerSegmentError(f"--seed must be between 0 and {2**32 - 1}, got {options.seed}")
    compression = CompressionSettings(
        df=options.df, rank_floor=options.rank_floor, method=options.method
    )
    output = Path(options.output)
    if output.exists():
        raise TuckerSegmentError(f"{output} exists; choose another output (it is never replaced)")
    folder = _model_folder(options)
    device = _device(options)
    model = open_model_folder(folder)
    if options.labels not in LABEL_SOURCES:
        raise TuckerSegmentError(f"--labels must be {' or '.join(LABEL_SOURCES)}")
    if options.augmentation not in TRAINERS:
        raise TuckerSegmentError(f"--augmentation must be {' or '.join(TRAINERS)}")
    if options.checkpoint not in CHECKPOINTS:
        raise TuckerSegmentError(f"--checkpoint must be {' or '.join(CHECKPOINTS)}")
    if options.checkpoint == "best" and options.stamp_target is not None:
        raise TuckerSegmentError(
            "--checkpoint best with --stamp: the best-Dice epoch may be a less pruned network "
            "than the target; STAMP writes its final network"
        )
    if (
        options.foreground_oversampling is not None
        and not 0 <= options.foreground_oversampling <= 1
    ):
        raise TuckerSegmentError("--foreground-oversampling must be between 0 and 1")
    if not options.distill >= 0:
        raise TuckerSegmentError("--distill must be 0 (off) or a positive weight")
    summary = check_dataset(
        Path(options.dataset), model.spec.labels, options.model, options.labels == "dataset"
    )
    fold = _fold(options, len(summary.cases))
    stamp = _stamp_settings(options, model)
    start = _start_model(options, file_sha256(model.checkpoint))
    settings = {
        "model": options.model,
        "compression": compression.to_json(),
        "base_checkpoint": str(model.checkpoint.resolve()),
        "base_checkpoint_sha256": file_sha256(model.checkpoint),
        "dataset": str(Path(options.dataset).resolve()),
        "epochs": options.epochs,
        "iterations_per_epoch": options.iterations_per_epoch,
        "val_iterations": options.val_iterations,
        "lr": options.lr,
        "weight_decay": options.weight_decay,
        "fold": fold,
        "seed": options.seed,
        "labels": options.labels,
        "augmentation": options.augmentation,
        "foreground_oversampling": options.foreground_oversampling,
        "distill": options.distill,
        **start,
        **stamp,
    }
    work = work_folder(output)
    resume = False
    recorded = work / "settings.json"
    if recorded.is_file():
        try:
            previous = json.loads(recorded.read_text())
        except ValueError:
            previous = None
        if previous != settings:
            raise TuckerSegmentError(
                f"an unfinished fine-tuning with other settings is in {work}; run it again with "
                "its settings to resume, or remove that folder"
            )
        resume = True
    return FinetunePlan(options, folder, compression, summary, fold, device, work, resume, settings)


def _stamp_settings(options: FinetuneOptions, model: Any) -> dict[str, Any]:
    """STAMP's settings (ts/trainers/nnUNetTrainerSTAMP.py), checked; {} without --stamp."""
    if options.stamp_target is None:
        return {}
    if not 0 < options.stamp_target < 1:
        raise TuckerSegmentError("--stamp: the share of parameters to keep, e.g. 50%")
    if options.start_from is not None:
        raise TuckerSegmentError("--stamp prunes the installed original network: drop --start-from")
    if options.stamp_every < 1 or options.stamp_filters < 1 or options.stamp_min_channels < 1:
        raise TuckerSegmentError("--stamp-every, --stamp-filters: at least 1")
    if not 0 <= options.stamp_margin <= 1:
        raise TuckerSegmentError("--stamp-margin: a Dice difference between 0 and 1")
    original = sum(p.numel() for p in model.spec.build("meta").parameters())
    return {
        "stamp": {
            "target_share": options.stamp_target,
            "every": options.stamp_every,
            "filters": options.stamp_filters,
            "margin": options.stamp_margin,
            "min_channels": options.stamp_min_channels,
            "original_params": original,
        }
    }


def _start_model(options: FinetuneOptions, base_sha256: str) -> dict[str, str]:
    """A compressed model to start from instead of a fresh decomposition: made from the same
    TS checkpoint (one line otherwise, before any work)."""
    if options.start_from is None:
        return {}
    from ..storage.compressed_format import read_manifest

    manifest = read_manifest(options.start_from)
    if manifest.source_sha256 != base_sha256:
        raise TuckerSegmentError(
            f"{options.start_from} was not made from the installed {options.model} model's "
            "weights: fine-tuning starts from a model of the same checkpoint"
        )
    return {
        "start_model": str(Path(options.start_from).resolve()),
        "start_weights_sha256": manifest.weights_sha256,
    }


def _augmentation_workers(options: FinetuneOptions) -> int:
    if options.augmentation_workers is not None:
        return max(0, options.augmentation_workers)
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _curve_csv(logging: dict) -> str:
    """Per epoch: learning rate, losses, nnU-Net's pseudo-Dice (the values of progress.png)."""
    keys = ["lrs", "train_losses", "val_losses", "mean_fg_dice", "ema_fg_dice"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["epoch", "lr", "train_loss", "val_loss", "val_pseudo_dice", "val_dice_ema"])
    for epoch in range(min(len(logging.get(k, [])) for k in keys)):
        writer.writerow([epoch, *(f"{float(logging[k][epoch]):.6g}" for k in keys)])
    return out.getvalue()


def _validation_dice(fold_folder: Path) -> float | None:
    """nnU-Net's final validation (full cases, sliding window): mean Dice over the labels
    present in the reference or the prediction (nnU-Net's own foreground mean is NaN as soon as
    one of TS's labels is absent from the validation cases)."""
    import math

    try:
        summary = json.loads((fold_folder / "validation" / "summary.json").read_text())
        dice = [float(m["Dice"]) for m in summary["mean"].values()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    present = [d for d in dice if not math.isnan(d)]  # NaN: absent in label and prediction
    return sum(present) / len(present) if present else None


def _write_result(plan: FinetunePlan, fold_folder: Path, fingerprint: dict, seconds: float) -> None:
    """The fine-tuned network in the compressed-model format, with its provenance and the
    training record (nnU-Net's progress.png and log, the per-epoch curve, validation summary)."""
    from ..engine.compress import compress_network
    from ..engine.counting import count_original_and_compressed
    from ..storage.atomic_dir import atomic_directory
    from ..storage.compressed_format import Manifest, load_compressed, write_model_files
    from ..ts.model_folder import load_checkpoint_weights, open_model_folder

    final = fold_folder / "checkpoint_final.pth"
    chosen = fold_folder / f"checkpoint_{plan.options.checkpoint}.pth"
    model = open_model_folder(plan.model_folder)
    start = plan.settings.get("start_model")
    stamp = plan.settings.get("stamp")
    shapes = None
    if start:  # the compressed model the trainer started from, its structure and settings
        network, started = load_compressed(start)
        layers, compression = started.layers, started.settings
    elif stamp:  # the original, with the channels STAMP left (those of the final weights)
        from ..engine.prune import reshape_modules, shapes_in_state

        network = model.load_network("cpu")
        shapes = shapes_in_state(network, load_checkpoint_weights(final))
        reshape_modules(network, shapes)
        layers, compression, started = [], CompressionSettings(df=1.0), None
    else:
        network = model.load_network("cpu")  # the same decomposition the trainer started from
        layers = compress_network(network, plan.compression, decompose=True)
        compression, started = plan.compression, None
    try:
        network.load_state_dict(load_checkpoint_weights(chosen))
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise TuckerSegmentError(f"the fine-tuned checkpoint does not fit: {first}") from None
    logging = _training_log(final)
    options = plan.options
    inherited = {}  # what the started-from model's manifest says of its structure
    if started is not None:
        inherited = {k: v for k, v in started.extra.items() if k != "finetune"}
    elif stamp:
        from ..engine.counting import count_network

        spec = model.spec
        before = count_network(spec.build("meta"), spec.patch_size, spec.input_channels)
        after = count_network(network, spec.patch_size, spec.input_channels)
        inherited = {
            "params": {"original": before.params, "compressed": after.params},
            "gflops_per_patch": {"original": before.gflops, "compressed": after.gflops},
            "prune": {
                "method": "stamp",
                "ratio": round(1 - after.params / before.params, 4),  # of parameters, removed
                "structured": True,
                "target_share": stamp["target_share"],
                "every_epochs": stamp["every"],
                "filters_per_removal": stamp["filters"],
                "dice_margin": stamp["margin"],
                "shapes": shapes,
            },
        }
    else:
        before, after = count_original_and_compressed(model.spec, layers)
        inherited = {
            "params": {"original": before.params, "compressed": after.params},
            "gflops_per_patch": {"original": before.gflops, "compressed": after.gflops},
        }
    manifest = Manifest(
        spec=model.spec,
        settings=compression,
        layers=layers,
        source_sha256=plan.settings["base_checkpoint_sha256"],
        extra={
            **inherited,
            "source_model": plan.model_folder.name,
            "model": options.model,
            "finetune": {
                "trainer": f"{options.trainer} (nnU-Net's nnUNetTrainer)",
                "augmentation": options.augmentation,
                "foreground_oversampling": options.foreground_oversampling,
                "distillation": (
                    {
                        "weight": options.distill,
                        "teacher": "the original TS network (base checkpoint)",
                        "loss": "nnU-Net's loss + weight × KL(original ‖ compressed), full "
                        "resolution, temperature 1",
                    }
                    if options.distill > 0
                    else None
                ),
                "base_checkpoint_sha256": plan.settings["base_checkpoint_sha256"],
                **(
                    {
                        "started_from": start,
                        "start_weights_sha256": plan.settings["start_weights_sha256"],
                    }
                    if start
                    else {}
                ),
                "df": compression.df,
                "rank_floor": compression.rank_floor,
                "dataset": {
                    "path": plan.settings["dataset"],
                    "cases": len(plan.dataset.cases),
                    "case_ids_sha256": _digest(plan.dataset.cases),
                    "fingerprint_sha256": _digest(fingerprint),
                    "labels": (
                        "the original TS network's output (self-distillation)"
                        if options.labels == "original"
                        else "the dataset's labelsTr"
                    ),
                },
                "epochs": options.epochs,
                "iterations_per_epoch": options.iterations_per_epoch,
                "steps": options.epochs * options.iterations_per_epoch,
                "optimizer": "AdamW",
                "lr": options.lr,
                "weight_decay": options.weight_decay,
                "schedule": "nnU-Net PolyLRScheduler",
                "fold": plan.fold,
                "device": plan.device,
                "gpus": options.gpus,
                "seconds": round(seconds, 1),
                "final_validation_dice": _validation_dice(fold_folder),
                "final_pseudo_dice": (logging.get("mean_fg_dice") or [None])[-1],
                "final_train_loss": (logging.get("train_losses") or [None])[-1],
                "checkpoint": _checkpoint_record(chosen, plan.options.checkpoint),
            },
        },
    )
    with atomic_directory(options.output) as staging:
        write_model_files(staging, network, manifest)
        record = staging / "training"
        record.mkdir()
        (record / "curve.csv").write_text(_curve_csv(logging))
        for pattern in ("progress.png", "training_log_*.txt", "validation/summary.json"):
            for path in fold_folder.glob(pattern):
                shutil.copy(path, record / path.name)
        debug = fold_folder / "debug.json"  # nnU-Net's record of the trainer's every setting
        if debug.is_file():
            settings = json.loads(debug.read_text())
            settings.pop("hostname", None)  # a model folder gets shared; the machine's name not
            (record / "trainer-settings.json").write_text(json.dumps(settings, indent=1))


def _checkpoint_record(checkpoint: Path, name: str) -> dict[str, Any]:
    """Which of nnU-Net's checkpoints the model's weights are, and after how many epochs."""
    import torch

    data = torch.load(checkpoint, map_location="cpu", weights_only=False)  # our own checkpoint
    best = data.get("_best_ema")
    return {
        "name": name,
        "epochs_trained": int(data.get("current_epoch", 0)),
        "best_ema_pseudo_dice": float(best) if best is not None else None,
    }


def _training_log(checkpoint: Path) -> dict:
    """nnU-Net's per-epoch log stored in its checkpoint (this run's own file)."""
    import torch

    data = torch.load(checkpoint, map_location="cpu", weights_only=False)  # our own checkpoint
    logging = data.get("logging", {})
    import numbers

    return {  # the per-epoch scalars (numpy or Python numbers); per-class lists left out
        k: [float(x) for x in v]
        for k, v in logging.items()
        if isinstance(v, list) and all(isinstance(x, numbers.Real) for x in v)
    }


def _labelled_by_original(plan: FinetunePlan, progress: Progress) -> Path:
    """A copy of the dataset (images linked, not copied) whose labels are the original TS
    network's output on each image (ts/teacher.py), in the work folder: made once, kept for a
    resumed run."""
    from ..ts.model_folder import open_model_folder
    from ..ts.teacher import label_with_original

    source, ending = Path(plan.options.dataset), plan.dataset.file_ending
    folder = plan.work / "labelled-by-original"
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(exist_ok=True)
    images, labels = [], []
    for case in plan.dataset.cases:
        image = folder / "imagesTr" / f"{case}_0000{ending}"
        if not image.exists():
            image.symlink_to((source / "imagesTr" / image.name).resolve())
        images.append(image)
        labels.append(folder / "labelsTr" / f"{case}{ending}")
    dataset = json.loads((source / "dataset.json").read_text())
    dataset["labels"] = open_model_folder(plan.model_folder).spec.labels
    dataset["numTraining"] = len(images)
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    label_with_original(
        plan.model_folder,
        images,
        labels,
        plan.device,
        lambda k, n: progress.update(
            "label", 0.01 * k / n, f"the original network labels case {k + 1}/{n}"
        ),
    )
    return folder


def finetune(options: FinetuneOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Check, preprocess, train with nnU-Net's trainer, write the model; returns its manifest."""
    import random

    import numpy as np
    import torch

    from ..storage.compressed_format import read_manifest
    from ..ts.training import (
        TrainingLayout,
        dataset_name_of,
        nnunet_environment,
        prepare_layout,
        run_nnunet_training,
        verify_with_nnunet,
    )

    plan = plan_finetune(options)
    progress = progress or Progress(options.progress)
    workers = _augmentation_workers(options)
    layout = TrainingLayout(plan.work, dataset_name_of(plan.model_folder), options.trainer)
    plan.work.mkdir(parents=True, exist_ok=True)
    (plan.work / "settings.json").write_text(json.dumps(plan.settings, indent=2))
    dataset = Path(options.dataset)
    if options.labels == "original":
        dataset = _labelled_by_original(plan, progress)
    progress.update("check", 0.0, f"checking {len(plan.dataset.cases)} cases with nnU-Net")
    verify_with_nnunet(dataset, max(1, workers))
    if options.seed is not None:
        random.seed(options.seed)
        np.random.seed(options.seed)
        torch.manual_seed(options.seed)
    start = time.perf_counter()
    with nnunet_environment(layout, workers):
        progress.update("preprocess", 0.01, "nnU-Net fingerprint and preprocessing (TS's plans)")
        settings = {**plan.settings, "progress": options.progress}
        fingerprint = prepare_layout(layout, dataset, plan.model_folder, settings, max(1, workers))
        verb = "resuming" if plan.resume else "starting"
        progress.update("finetune", 0.02, f"{verb} nnU-Net's trainer (fold {plan.fold})")
        run_nnunet_training(layout, plan.fold, plan.device, options.gpus, plan.resume)
    progress.close()
    fold_folder = layout.output_folder(plan.fold)
    progress.update("write", 0.99, f"writing {options.output}")
    _write_result(plan, fold_folder, fingerprint, time.perf_counter() - start)
    shutil.rmtree(plan.work, ignore_errors=True)
    progress.update("done", 1.0, f"wrote {options.output}")
    progress.close()
    return read_manifest(options.output).to_json()
