"""nnU-Net's own dataset checks, fingerprint, preprocessing and `run_training`, for fine-tuning.

Fine-tuning needs nnU-Net's folder layout (nnUNet_raw / nnUNet_preprocessed / nnUNet_results);
TuckerSegment builds one in a private work folder: the user's dataset is linked in (never
modified), the installed TS model's plans (its preprocessing and architecture, so the network
sees what inference feeds it) are written there with the fine-tuning settings inside, and
nnU-Net's `run_training` runs the trainer class from ts/trainers/ — found by nnU-Net through its
``nnUNet_extTrainer`` search path — on one device or, with ``num_gpus`` > 1, with nnU-Net's own
DDP (CUDA and nccl only, one host).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TuckerSegmentError
from .environment import environment_variables

# nnU-Net's data augmentation ("nnunet", its default pipeline without mirroring) or none (its own
# nnUNetTrainerNoDA: the validation transforms only) -> the trainer class in ts/trainers/
TRAINERS = {"nnunet": "nnUNetTrainerTucker", "none": "nnUNetTrainerTuckerNoDA"}
# `finetune --stamp`: STAMP's pruning while training the original network (same augmentations)
STAMP_TRAINERS = {"nnunet": "nnUNetTrainerSTAMP", "none": "nnUNetTrainerSTAMPNoDA"}
PLANS_IDENTIFIER = "tuckersegmentPlans"
CONFIGURATION = "3d_fullres"
TRAINERS_FOLDER = Path(__file__).resolve().parent / "trainers"


@dataclass(frozen=True)
class TrainingLayout:
    """The nnU-Net folders of one fine-tuning run, inside ``work``."""

    work: Path
    dataset_name: str
    trainer: str = TRAINERS["nnunet"]

    @property
    def raw(self) -> Path:
        return self.work / "nnUNet_raw"

    @property
    def preprocessed(self) -> Path:
        return self.work / "nnUNet_preprocessed"

    @property
    def results(self) -> Path:
        return self.work / "nnUNet_results"

    @property
    def dataset_id(self) -> int:
        return int(self.dataset_name[len("Dataset") :].split("_")[0])

    def output_folder(self, fold: int | str) -> Path:
        run = f"{self.trainer}__{PLANS_IDENTIFIER}__{CONFIGURATION}"
        return self.results / self.dataset_name / run / f"fold_{fold}"


def dataset_name_of(model_folder: Path) -> str:
    """The nnU-Net dataset name of a TS model (e.g. Dataset297_TotalSegmentator_total_3mm_1559subj)."""
    plans = json.loads((model_folder / "plans.json").read_text())
    name = plans.get("dataset_name") or model_folder.parent.name
    if not re.fullmatch(r"Dataset\d{3}_.+", name):
        raise TuckerSegmentError(f"{model_folder}: unexpected dataset name {name!r} in plans.json")
    return name


@contextmanager
def nnunet_environment(layout: TrainingLayout, augmentation_workers: int) -> Iterator[None]:
    """nnU-Net's path variables pointing into the work folder, its trainer search path at
    ts/trainers/, its data-augmentation worker count, and no experiment tracking (wandb would
    open connections); the previous environment is restored after."""
    values = {
        "nnUNet_raw": str(layout.raw),
        "nnUNet_preprocessed": str(layout.preprocessed),
        "nnUNet_results": str(layout.results),
        "nnUNet_extTrainer": str(TRAINERS_FOLDER),
        "nnUNet_n_proc_DA": str(augmentation_workers),
        "nnUNet_wandb_enabled": "0",
        "nnUNet_compile": "f",
    }
    with environment_variables(values):
        yield


@contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """nnU-Net prints its progress to stdout; keep it for error messages, off the console.
    Its worker pools start by spawning and its file listing runs in threads (in_process.py:
    forking this process, whose torch threads already ran, can hang)."""
    from .in_process import file_listing_in_threads, spawned_workers

    captured = io.StringIO()
    with contextlib.redirect_stdout(captured), spawned_workers(), file_listing_in_threads():
        yield captured


def verify_with_nnunet(dataset: Path, processes: int) -> None:
    """nnU-Net's own integrity check (geometry of image vs label, label values, counts)."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    try:
        with _quiet():
            verify_dataset_integrity(str(dataset), processes)
    except (AssertionError, RuntimeError, ValueError) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        raise TuckerSegmentError(f"dataset check failed (nnU-Net): {message[:300]}") from None


def prepare_layout(
    layout: TrainingLayout,
    dataset: Path,
    model_folder: Path,
    settings: dict[str, Any],
    processes: int,
) -> dict[str, Any]:
    """Link the dataset in, write the plans (TS's, with ``settings``), extract nnU-Net's
    fingerprint and preprocess with the TS model's plans. Returns the fingerprint."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        preprocess_dataset,
    )

    from .trainers.nnUNetTrainerTucker import SETTINGS_KEY

    raw = layout.raw / layout.dataset_name
    raw.parent.mkdir(parents=True, exist_ok=True)
    if not raw.exists():
        raw.symlink_to(dataset.resolve(), target_is_directory=True)
    target = layout.preprocessed / layout.dataset_name
    target.mkdir(parents=True, exist_ok=True)
    plans = json.loads((model_folder / "plans.json").read_text())
    plans["plans_name"] = PLANS_IDENTIFIER
    plans["dataset_name"] = layout.dataset_name
    plans[SETTINGS_KEY] = settings
    (target / f"{PLANS_IDENTIFIER}.json").write_text(json.dumps(plans, indent=2))
    (target / "dataset.json").write_text((dataset / "dataset.json").read_text())
    with _quiet():
        fingerprint = extract_fingerprint_dataset(
            layout.dataset_id,
            num_processes=processes,
            clean=False,
            verbose=False,
            show_progress_bar=False,
        )
        done = target / f"{CONFIGURATION}.complete"
        if not done.exists():  # a preprocessing cut short is redone, never used
            shutil.rmtree(target / CONFIGURATION, ignore_errors=True)
            preprocess_dataset(
                layout.dataset_id,
                PLANS_IDENTIFIER,
                [CONFIGURATION],
                [processes],
                verbose=False,
                show_progress_bar=False,
            )
            done.touch()
    return fingerprint


def run_nnunet_training(
    layout: TrainingLayout, fold: int | str, device: str, num_gpus: int, resume: bool
) -> None:
    """nnU-Net's `run_training` with the Tucker trainer (nnU-Net's DDP when ``num_gpus`` > 1).
    nnU-Net's console output goes to stderr; the trainer's progress lines to stdout."""
    import torch
    from nnunetv2.run.run_training import run_training

    from .in_process import file_listing_in_threads, spawned_workers, validation_exports_in_process

    with (
        contextlib.redirect_stdout(sys.stderr),
        spawned_workers(),
        file_listing_in_threads(),
        validation_exports_in_process(),
    ):
        run_training(
            layout.dataset_name,
            CONFIGURATION,
            fold,
            trainer_class_name=layout.trainer,
            plans_identifier=PLANS_IDENTIFIER,
            num_gpus=num_gpus,
            continue_training=resume,
            device=torch.device(device),
        )
