"""Which TotalSegmentator model a model folder is, from TS's own task tables.

TS loads different networks for different options (the 6 mm crop model of ``--roi_subset``,
``--fastest``, ``--body_seg``, the models of other tasks). When nnU-Net's predictor loads one,
its folder's dataset name identifies it in ``TASK_ID_WEIGHTS_CONFIGS``; its name is the `total`
part (organs, …, 3mm, 6mm) or the task that uses it (lung_vessels, body, …).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelIdentity:
    task_id: int | None
    name: str  # "organs", "3mm", "6mm", "lung_vessels", … or the dataset folder's name


def _task_names() -> dict[int, str]:
    from totalsegmentator.map_tasks_config import TASK_CONFIGS
    from totalsegmentator.map_to_binary import map_taskid_to_partname_ct

    names: dict[int, str] = {297: "3mm", 298: "6mm"}
    for task_id, part in map_taskid_to_partname_ct.items():
        names.setdefault(task_id, part.removeprefix("class_map_part_"))
    for task, config in TASK_CONFIGS.items():
        modes = config.get("sub_modes", {"default": config})
        for mode in modes.values():
            ids = mode.get("task_id")
            for task_id in ids if isinstance(ids, list) else [ids]:
                if task_id is not None:
                    names.setdefault(task_id, task)
    return names


def model_names() -> set[str]:
    """Every name identify_model_folder gives a model TS knows (``--expert-df`` keys)."""
    return set(_task_names().values())


def identify_model_folder(folder: Path) -> ModelIdentity:
    """The TS model of an nnU-Net model folder (``…/Dataset297_…/Trainer__Plans__3d_fullres``)."""
    from totalsegmentator.map_tasks_config import TASK_ID_WEIGHTS_CONFIGS

    dataset = Path(folder).parent.name
    for task_id, config in TASK_ID_WEIGHTS_CONFIGS.items():
        known = config.get("foldername", "")
        if dataset == known or (known and dataset.startswith(known)):
            return ModelIdentity(task_id, _task_names().get(task_id, dataset))
    return ModelIdentity(None, dataset)


def open_ct_tasks() -> list[str]:
    """TS's CT tasks that need no licence (``total`` first), from TS's own registry; TS's test
    tasks left out."""
    from totalsegmentator.map_tasks_config import TASK_CONFIGS
    from totalsegmentator.registry import requires_license, task_modality

    tasks = [
        t
        for t in TASK_CONFIGS
        if task_modality(t) == "CT"
        and not requires_license(t)
        and t != "test"
        and not t.endswith("_test")
    ]
    return sorted(tasks, key=lambda t: (t != "total", t))


def task_problem(task: str) -> str | None:
    """Why `segment --task` can't run a task (one line), or None."""
    from totalsegmentator.map_tasks_config import TASK_CONFIGS
    from totalsegmentator.registry import requires_license, task_modality

    if task not in TASK_CONFIGS:
        return f"unknown task {task}; TotalSegmentator's open CT tasks: " + ", ".join(
            open_ct_tasks()
        )
    if task_modality(task) != "CT":
        return f"task {task} is one of TotalSegmentator's MR tasks; this tool segments CT"
    if requires_license(task):
        return (
            f"task {task} needs a TotalSegmentator licence; run it with "
            f"`tucker-totalsegmentator -ta {task} -l YOUR_LICENCE` (compressed the same way)"
        )
    if task not in open_ct_tasks():
        return f"task {task} is TotalSegmentator's own test task"
    return None


def has_fast_mode(task: str) -> bool:
    """Whether TS runs ``task`` at a lower resolution with ``--fast`` (total, body, …); most
    other tasks refuse --fast."""
    from totalsegmentator.map_tasks_config import TASK_CONFIGS

    return "fast" in TASK_CONFIGS.get(task, {}).get("sub_modes", {})
