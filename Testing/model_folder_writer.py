"""Write genuine nnU-Net model folders in TotalSegmentator's layout.

Used for the project's own test models and for full-size TS-architecture folders with seeded
random weights (benchmarks, tests: the values of the weights do not change speed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from TuckerSegmentLib.storage.atomic_dir import atomic_directory
from TuckerSegmentLib.ts.architectures import builtin_plans, builtin_spec
from TuckerSegmentLib.ts.model_folder import CHECKPOINT, CONFIGURATION

TS_TRAINERS = {"3mm": "nnUNetTrainer_4000epochs_NoMirroring", "1.5mm": "nnUNetTrainerNoMirroring"}


def ts_dataset_json(class_names: dict[int, str]) -> dict[str, Any]:
    """dataset.json for a CT model with TS's label ids and names."""
    labels = {"background": 0}
    labels.update({name: int(idx) for idx, name in sorted(class_names.items())})
    return {
        "channel_names": {"0": "CT"},
        "labels": labels,
        "numTraining": 0,
        "file_ending": ".nii.gz",
    }


def ts_class_names(model: str, expert: str = "organs") -> dict[int, str]:
    """TS's own class map of the 3 mm model or of one 1.5 mm expert."""
    from totalsegmentator.map_to_binary import class_map, class_map_5_parts

    if model == "3mm":
        return dict(class_map["total"])
    return dict(class_map_5_parts[f"class_map_part_{expert}"])


def write_model_folder(
    path: str | Path,
    plans: dict[str, Any],
    dataset_json: dict[str, Any],
    network_weights: dict[str, torch.Tensor],
    trainer_name: str = "nnUNetTrainer",
) -> Path:
    """Write plans.json, dataset.json and fold_0/checkpoint_final.pth (atomically)."""
    with atomic_directory(path) as staging:
        (staging / "plans.json").write_text(json.dumps(plans, indent=2))
        (staging / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
        (staging / CHECKPOINT).parent.mkdir()
        checkpoint = {
            "network_weights": {k: v.detach().cpu() for k, v in network_weights.items()},
            "trainer_name": trainer_name,
            "init_args": {
                "plans": plans,
                "configuration": CONFIGURATION,
                "fold": 0,
                "dataset_json": dataset_json,
            },
            "inference_allowed_mirroring_axes": None,
            "current_epoch": 0,
        }
        torch.save(checkpoint, staging / CHECKPOINT)
    return Path(path)


def write_random_ts_folder(
    path: str | Path, model: str = "3mm", expert: str = "organs", seed: int = 0
) -> Path:
    """A full-size TS-architecture model folder with nnU-Net's He init from ``seed``."""
    plans = builtin_plans(model, expert)
    network = builtin_spec(model, expert).build("cpu", seed=seed)
    dataset_json = ts_dataset_json(ts_class_names(model, expert))
    return write_model_folder(path, plans, dataset_json, network.state_dict(), TS_TRAINERS[model])
