"""Where TotalSegmentator's `total` weights live, read from TS's own configuration.

TS finds weights in ``TOTALSEG_WEIGHTS_PATH`` or ``TOTALSEG_HOME_DIR/nnunet/results`` (default
``~/.totalsegmentator``), one nnU-Net model folder per dataset:
``Dataset297_…/nnUNetTrainer_4000epochs_NoMirroring__nnUNetPlans__3d_fullres``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import TuckerSegmentError

EXPERT_NAMES = ("organs", "vertebrae", "cardiac", "muscles", "ribs")


@dataclass(frozen=True)
class TSModel:
    """One nnU-Net model of TS's `total` task."""

    task_id: int
    name: str  # "3mm" or the expert name
    dataset_folder: str
    trainer: str
    plans: str = "nnUNetPlans"
    configuration: str = "3d_fullres"

    def folder(self, weights_dir: Path) -> Path:
        """The nnU-Net model folder (plans.json, dataset.json, fold_0/) under ``weights_dir``."""
        return (
            Path(weights_dir)
            / self.dataset_folder
            / f"{self.trainer}__{self.plans}__{self.configuration}"
        )


def total_models(fast: bool) -> list[TSModel]:
    """TS's models for `total`: the 3 mm model (fast) or the five 1.5 mm experts, in TS's order."""
    from totalsegmentator.map_tasks_config import TASK_CONFIGS, TASK_ID_WEIGHTS_CONFIGS
    from totalsegmentator.map_to_binary import map_taskid_to_partname_ct

    mode = TASK_CONFIGS["total"]["sub_modes"]["fast" if fast else "default"]
    ids = mode["task_id"] if isinstance(mode["task_id"], list) else [mode["task_id"]]
    models = []
    for task_id in ids:
        part = map_taskid_to_partname_ct.get(task_id, "")
        name = part.removeprefix("class_map_part_") if part else "3mm"
        folder = TASK_ID_WEIGHTS_CONFIGS[task_id]["foldername"]
        models.append(TSModel(task_id, name, folder, mode["trainer"]))
    return models


def fastest_model() -> TSModel:
    """TS's 6 mm model (Dataset298): `--fastest`, and the crop model of `--roi_subset`."""
    from totalsegmentator.map_tasks_config import TASK_CONFIGS, TASK_ID_WEIGHTS_CONFIGS

    mode = TASK_CONFIGS["total"]["sub_modes"]["fastest"]
    task_id = mode["task_id"]
    return TSModel(task_id, "6mm", TASK_ID_WEIGHTS_CONFIGS[task_id]["foldername"], mode["trainer"])


def run_models(
    fast: bool, fastest: bool = False, roi_subset: tuple[str, ...] = ()
) -> list[TSModel]:
    """The `total` models TS runs for these options, in TS's order: ``--fastest`` the 6 mm model
    alone; ``--roi_subset`` the 6 mm crop model first, then (full mode) only the experts whose
    class maps hold a chosen structure — TS's own rule (nnunet.py), so every network it loads is
    one this run prepared."""
    if fastest:
        return [fastest_model()]
    models = total_models(fast)
    if not roi_subset:
        return models
    if not fast:
        from totalsegmentator.map_to_binary import class_map_5_parts

        wanted = set(roi_subset)
        models = [
            m
            for m in models
            if wanted & set(class_map_5_parts[f"class_map_part_{m.name}"].values())
        ]
    return [fastest_model(), *models]


def task_run_models(task: str, fast: bool) -> list[TSModel]:
    """The models TS runs for one of its other tasks (not `total`), in TS's order: the crop
    model the task's config asks for — TS's rule in its python_api: another task's models
    (``crop_model``), the 6 mm body model for a body crop, the 3 mm model with ``robust_crop``,
    else the 6 mm model — then the task's own (TS's ``get_task_config``; ValueError for --fast
    where TS disallows it)."""
    from totalsegmentator.map_tasks_config import TASK_ID_WEIGHTS_CONFIGS
    from totalsegmentator.python_api import get_task_config

    config = get_task_config(task, fast=fast, quiet=True)
    models: list[TSModel] = []
    crop = config.get("crop")
    if crop is not None or config.get("cascade"):
        if config.get("crop_model"):
            models += task_run_models(config["crop_model"], False)
        elif crop and ("body_trunc" in crop or "body_extremities" in crop):
            models.append(task_model("body", "fast"))
        elif config.get("robust_crop"):
            models.append(total_models(True)[0])
        else:
            models.append(fastest_model())
    if task == "vertebrae_pp_refined":  # TS's special case: a vertebral-body mask model first
        models.append(
            TSModel(
                305,
                "vertebrae_body",
                TASK_ID_WEIGHTS_CONFIGS[305]["foldername"],
                "nnUNetTrainer_DASegOrd0",
            )
        )
    ids = config["task_id"] if isinstance(config["task_id"], list) else [config["task_id"]]
    for task_id in ids:
        models.append(
            TSModel(
                task_id,
                task if len(ids) == 1 else f"{task}_{task_id}",
                TASK_ID_WEIGHTS_CONFIGS[task_id]["foldername"],
                config["trainer"],
                config.get("plans") or "nnUNetPlans",
                config.get("model") or "3d_fullres",
            )
        )
    return models


def body_seg_applies(task: str, fast: bool, roi_subset: tuple[str, ...]) -> bool:
    """Whether TS runs its 6 mm body model for ``--body_seg``: only when nothing else crops
    (TS ignores it with --roi_subset and for tasks that crop to an organ)."""
    if roi_subset:
        return False
    if task == "total":
        return True
    from totalsegmentator.python_api import get_task_config

    config = get_task_config(task, fast=fast, quiet=True)
    return config.get("crop") is None and not config.get("cascade")


def task_model(task: str, mode: str = "default") -> TSModel:
    """The model of one of TS's other tasks (e.g. ``task_model("body", "fast")``: Dataset300,
    the 6 mm body model that ``--body_seg`` crops with), named like its task."""
    from totalsegmentator.map_tasks_config import TASK_CONFIGS, TASK_ID_WEIGHTS_CONFIGS

    config = TASK_CONFIGS[task]
    config = config.get("sub_modes", {}).get(mode, config)
    task_id = config["task_id"]
    return TSModel(task_id, task, TASK_ID_WEIGHTS_CONFIGS[task_id]["foldername"], config["trainer"])


def weights_dir() -> Path:
    """Where TS looks for weights (honours TOTALSEG_WEIGHTS_PATH and TOTALSEG_HOME_DIR)."""
    from totalsegmentator.config import get_weights_dir

    return Path(get_weights_dir())


def find_model_folders(
    fast: bool,
    directory: Path | None = None,
    models: list[TSModel] | None = None,
    task: str = "total",
) -> dict[str, Path]:
    """Model folders by model name (``models``: default, the mode's `total` models); raises a
    clear error naming what is missing (and the ``task`` to download)."""
    directory = weights_dir() if directory is None else Path(directory)
    found, missing = {}, []
    for model in total_models(fast) if models is None else models:
        folder = model.folder(directory)
        if (folder / "fold_0" / "checkpoint_final.pth").is_file():
            found[model.name] = folder
        else:
            missing.append(f"{model.dataset_folder} (task {model.task_id})")
    if missing:
        if task == "total":
            task = "total_fast" if fast else "total"
        raise TuckerSegmentError(
            f"TotalSegmentator weights missing in {directory}: {', '.join(missing)}. "
            f"Run again with --download, or fetch them with `totalseg_download_weights -t "
            f"{task}`; on an offline machine import them with "
            f"`totalseg_import_weights -i WEIGHTS.zip`, or point TOTALSEG_WEIGHTS_PATH at a folder "
            f"that has them"
        )
    return found


def download_weights(models: list[TSModel]) -> None:
    """TS's own downloader (the only network access, and only when the user asks for it)."""
    from totalsegmentator.libs import download_pretrained_weights

    for model in models:
        download_pretrained_weights(model.task_id)


def installed_models(directory: Path | None = None) -> dict[str, bool]:
    """Which `total` models are installed, by dataset folder name."""
    directory = weights_dir() if directory is None else Path(directory)
    return {
        m.dataset_folder: (m.folder(directory) / "fold_0" / "checkpoint_final.pth").is_file()
        for fast in (True, False)
        for m in total_models(fast)
    }
