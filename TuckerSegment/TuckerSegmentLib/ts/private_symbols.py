"""Every symbol of TotalSegmentator, nnU-Net and torch that TuckerSegment relies on although it
is not their documented API, in one list, with where it is used and the versions it was checked
against. :func:`missing_symbols` checks them on the installed versions (the start-up gate in
versions.py refuses to run when one is gone, instead of failing deep inside a run)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

CHECKED_WITH = "TotalSegmentator 2.18.0, nnunetv2 2.8.1, torch 2.14.1"


@dataclass(frozen=True)
class PrivateSymbol:
    module: str
    name: str  # attribute path inside the module ("Class.method" allowed)
    used_in: str
    how: str


SYMBOLS = (
    PrivateSymbol(
        "totalsegmentator.nnunet",
        "nnUNetPredictor",
        "ts/predictor.py",
        "the name TS builds its predictor with; replaced by our subclass during a run",
    ),
    PrivateSymbol(
        "nnunetv2.inference.predict_from_raw_data",
        "nnUNetPredictor._internal_get_sliding_window_slicers",
        "ts/predictor.py",
        "overridden to count the patches for progress",
    ),
    PrivateSymbol(
        "nnunetv2.inference.predict_from_raw_data",
        "nnUNetPredictor._internal_get_data_iterator_from_lists_of_filenames",
        "ts/predictor.py",
        "overridden to preprocess in process (--workers in-process)",
    ),
    PrivateSymbol(
        "nnunetv2.inference.predict_from_raw_data",
        "multiprocessing",
        "ts/in_process.py",
        "module global whose Pool exports the results; a thread pool in process",
    ),
    PrivateSymbol(
        "nnunetv2.utilities.utils",
        "Pool",
        "ts/in_process.py",
        "module global whose pool lists the input files; a thread pool in process",
    ),
    PrivateSymbol(
        "nnunetv2.training.nnUNetTrainer.nnUNetTrainer",
        "multiprocessing",
        "ts/in_process.py",
        "module global whose Pool exports the trainer's final validation; a thread pool",
    ),
    PrivateSymbol(
        "nnunetv2.experiment_planning.plan_and_preprocess_api",
        "preprocess_dataset",
        "ts/training.py",
        "nnU-Net's preprocessing of a raw dataset with given plans (its CLI's function)",
    ),
    PrivateSymbol(
        "nnunetv2.inference.data_iterators",
        "preprocess_fromfiles_save_to_queue",
        "ts/in_process.py",
        "nnU-Net's preprocessing worker body, called with its 10 positional arguments",
    ),
    PrivateSymbol(
        "totalsegmentator.map_tasks_config",
        "TASK_CONFIGS",
        "ts/weights.py, ts/tasks.py",
        "the `total` task's models, trainer and sub-modes; the task that uses a model",
    ),
    PrivateSymbol(
        "totalsegmentator.map_tasks_config",
        "TASK_ID_WEIGHTS_CONFIGS",
        "ts/weights.py, ts/tasks.py, ts/command.py",
        "each task id's weights folder name (which model a folder is; is it installed)",
    ),
    PrivateSymbol(
        "totalsegmentator.map_to_binary",
        "map_taskid_to_partname_ct",
        "ts/weights.py",
        "expert names of the 1.5 mm models (TS's newer code adds a _v3 twin for total_v3)",
    ),
    PrivateSymbol(
        "totalsegmentator.map_to_binary", "class_map", "ts/structures.py", "the 117 label names"
    ),
    PrivateSymbol(
        "totalsegmentator.map_to_binary",
        "class_map_5_parts",
        "Testing/model_folder_writer.py",
        "each expert's label names (test models only)",
    ),
    PrivateSymbol(
        "totalsegmentator.dicom_utils",
        "load_snomed_mapping",
        "ts/terminology.py",
        "SNOMED CT codes per structure",
    ),
    PrivateSymbol(
        "totalsegmentator.python_api",
        "download_pretrained_weights",
        "ts/command.py",
        "module global TS downloads missing models with; guarded (no download unless allowed)",
    ),
    PrivateSymbol(
        "totalsegmentator.python_api",
        "get_task_config",
        "ts/weights.py",
        "a task's effective config (task ids, trainer, crop, crop model) for `segment --task`",
    ),
    PrivateSymbol(
        "totalsegmentator.registry",
        "requires_license",
        "ts/tasks.py",
        "which tasks need TS's licence (left to tucker-totalsegmentator -l)",
    ),
    PrivateSymbol(
        "totalsegmentator.registry",
        "task_modality",
        "ts/tasks.py",
        "CT or MR per task (`segment --task` offers CT tasks)",
    ),
    PrivateSymbol(
        "totalsegmentator.python_api",
        "set_license_number",
        "ts/command.py",
        "module global TS stores a -l licence with; its online check only when allowed",
    ),
    PrivateSymbol(
        "totalsegmentator.python_api",
        "select_device",
        "ts/command.py",
        "TS's rule for the device its -d value means (no GPU: cpu)",
    ),
    PrivateSymbol(
        "totalsegmentator.bin.TotalSegmentator",
        "main",
        "ts/command.py",
        "TS's command line (parser and main), run in process by tucker-totalsegmentator",
    ),
    PrivateSymbol(
        "nnunetv2.inference.predict_from_raw_data",
        "recursive_find_trainer_class_by_name",
        "ts/trainer_lookup.py",
        "module global the predictor finds its trainer class with; wrapped during a run so "
        "only the defining module is imported",
    ),
    PrivateSymbol(
        "torch.nn", "Module._modules", "engine/compress.py", "re-point every reference to a conv"
    ),
    PrivateSymbol(
        "torch", "Tensor._version", "runtime/cpu_fusion.py", "detect in-place weight changes"
    ),
)


def _resolve(symbol: PrivateSymbol) -> bool:
    try:
        target = importlib.import_module(symbol.module)
    except ImportError:
        return False
    for part in symbol.name.split("."):
        if part == "_modules":
            return isinstance(getattr(target(), "_modules", None), dict)
        if part == "_version" and symbol.module == "torch":
            import torch

            return isinstance(getattr(torch.zeros(1), "_version", None), int)
        if not hasattr(target, part):
            return False
        target = getattr(target, part)
    return True


def missing_symbols() -> list[PrivateSymbol]:
    """The symbols the installed versions no longer have."""
    return [s for s in SYMBOLS if not _resolve(s)]
