"""Refuse a fine-tuning dataset that can't work, in one line, before any long work.

An nnU-Net raw dataset (``imagesTr/<case>_0000<ending>``, ``labelsTr/<case><ending>``,
``dataset.json``) whose labels are exactly the chosen TS model's (same names, same ids): a
fine-tuned network keeps TS's outputs, so its training labels must mean what TS's mean. nnU-Net's
own integrity check (geometry of each image against its label) runs after these checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TuckerSegmentError


@dataclass(frozen=True)
class DatasetSummary:
    """What the checks found: the cases and the label ids that occur."""

    cases: list[str]
    file_ending: str
    label_ids_present: list[int]


def _dataset_json(folder: Path) -> dict:
    path = folder / "dataset.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise TuckerSegmentError(
            f"{folder} is not an nnU-Net raw dataset: no dataset.json (expected imagesTr/, "
            "labelsTr/ and dataset.json)"
        ) from None
    except (ValueError, UnicodeDecodeError) as error:
        raise TuckerSegmentError(f"{path} is not valid JSON: {error}") from None
    for key in ("labels", "channel_names", "file_ending"):
        if key not in data:
            raise TuckerSegmentError(f"{path} has no '{key}'")
    return data


def _compare_labels(found: dict, expected: dict[str, int], model: str) -> None:
    try:
        found_ids = {str(k): int(v) for k, v in found.items()}
    except (TypeError, ValueError):
        raise TuckerSegmentError(
            "dataset.json 'labels' must map names to integer ids (region-based labels are not "
            "supported for fine-tuning a TS model)"
        ) from None
    if found_ids == expected:
        return
    missing = sorted(set(expected) - set(found_ids))
    extra = sorted(set(found_ids) - set(expected))
    moved = sorted(k for k in set(expected) & set(found_ids) if expected[k] != found_ids[k])
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    if extra:
        parts.append(f"not in the model: {', '.join(extra[:5])}{' …' if len(extra) > 5 else ''}")
    if moved:
        name = moved[0]
        parts.append(f"{name} is {found_ids[name]} here but {expected[name]} in the model")
    raise TuckerSegmentError(
        f"the dataset's labels are not the {model} model's ({'; '.join(parts)}); a fine-tuned "
        f"network keeps TS's outputs, so dataset.json must use the model's {len(expected)} "
        "labels with its ids"
    )


def _image_cases(folder: Path, ending: str) -> list[str]:
    """The cases of imagesTr/ alone (labels made by the original network: --labels original)."""
    images = folder / "imagesTr"
    if not images.is_dir():
        raise TuckerSegmentError(f"{folder} has no imagesTr/ folder")
    names = sorted(p.name for p in images.iterdir() if p.name.endswith(ending))
    other = [n for n in names if _channel_of(n, ending) != "0000"]
    if other:
        raise TuckerSegmentError(f"{other[0]}: TS's models take one CT channel (_0000) per case")
    if not names:
        raise TuckerSegmentError(f"no images ending in _0000{ending} in {images}")
    return [n[: -len(ending) - 5] for n in names]


def _cases(folder: Path, ending: str) -> list[str]:
    images, labels = folder / "imagesTr", folder / "labelsTr"
    for sub in (images, labels):
        if not sub.is_dir():
            raise TuckerSegmentError(f"{folder} has no {sub.name}/ folder")
    label_cases = sorted(
        p.name[: -len(ending)] for p in labels.iterdir() if p.name.endswith(ending)
    )
    if not label_cases:
        raise TuckerSegmentError(f"no label files ending in {ending} in {labels}")
    image_names = {p.name for p in images.iterdir()}
    for case in label_cases:
        if f"{case}_0000{ending}" not in image_names:
            raise TuckerSegmentError(f"case {case}: no image imagesTr/{case}_0000{ending}")
    extra_channels = [n for n in image_names if _channel_of(n, ending) not in (None, "0000")]
    if extra_channels:
        raise TuckerSegmentError(
            f"{extra_channels[0]}: TS's models take one CT channel (_0000) per case"
        )
    orphans = sorted(
        n for n in image_names if n.endswith(ending) and n[: -len(ending) - 5] not in label_cases
    )
    if orphans:
        raise TuckerSegmentError(f"image without a label: imagesTr/{orphans[0]}")
    return label_cases


def _channel_of(name: str, ending: str) -> str | None:
    """The 4-digit channel of an nnU-Net image file name, or None."""
    stem = name[: -len(ending)] if name.endswith(ending) else None
    if stem is None or len(stem) < 5 or stem[-5] != "_" or not stem[-4:].isdigit():
        return None
    return stem[-4:]


def _volume(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        first = str(error).strip().splitlines()[-1][:160]
        raise TuckerSegmentError(f"cannot read {path.name}: {first}") from None
    if image.GetDimension() != 3 or min(image.GetSize()) < 2:
        raise TuckerSegmentError(
            f"{path.name} is not a 3D volume (size {image.GetSize()}); TS's models are 3D"
        )
    return sitk.GetArrayFromImage(image)  # a copy: a view would outlive its image


def check_dataset(
    folder: Path, expected_labels: dict[str, int], model: str, labelled: bool = True
) -> DatasetSummary:
    """Check ``folder`` against the model's labels; raises TuckerSegmentError with one line.
    ``labelled=False`` (the original network labels the cases): images only."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TuckerSegmentError(f"dataset folder not found: {folder}")
    data = _dataset_json(folder)
    if len(data["channel_names"]) != 1:
        raise TuckerSegmentError(
            f"dataset.json has {len(data['channel_names'])} channels; TS's models take one (CT)"
        )
    ending = str(data["file_ending"])
    if not labelled:
        cases = _image_cases(folder, ending)
        for case in cases:
            _volume(folder / "imagesTr" / f"{case}_0000{ending}")
        return DatasetSummary(cases, ending, [])
    _compare_labels(data["labels"], expected_labels, model)
    cases = _cases(folder, ending)
    declared = data.get("numTraining")
    if declared is not None and int(declared) != len(cases):
        raise TuckerSegmentError(
            f"dataset.json says numTraining {declared} but labelsTr/ has {len(cases)} cases"
        )
    allowed = set(expected_labels.values())
    present: set[int] = set()
    for case in cases:
        _volume(folder / "imagesTr" / f"{case}_0000{ending}")
        values = np.unique(_volume(folder / "labelsTr" / f"{case}{ending}"))
        if not np.allclose(values, np.round(values)):
            raise TuckerSegmentError(f"labelsTr/{case}{ending} has non-integer label values")
        unknown = sorted(set(int(v) for v in values) - allowed)
        if unknown:
            raise TuckerSegmentError(
                f"labelsTr/{case}{ending} has label value {unknown[0]}, which the {model} model "
                f"does not have (its ids are {min(allowed)}–{max(allowed)})"
            )
        present.update(int(v) for v in values)
    return DatasetSummary(cases, ending, sorted(present - {0}))
