"""Write results: 117-label NIfTI (TS's ids and label-map header), Slicer .seg.nrrd (slicerio),
JSON sidecars and CSV reports — all staged and renamed into place together at the end, so a
failed run leaves nothing half-written."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import TuckerSegmentError

SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd")


def output_kind(path: Path) -> str:
    """``nifti`` or ``seg.nrrd`` from the file name; a clear error otherwise."""
    name = path.name
    if name.endswith((".nii.gz", ".nii")):
        return "nifti"
    if name.endswith(".seg.nrrd"):
        return "seg.nrrd"
    raise TuckerSegmentError(
        f"output {path} must end in .nii.gz, .nii (117-label NIfTI) or .seg.nrrd (Slicer segmentation)"
    )


def stem(path: Path) -> str:
    """The file name without .nii.gz / .nii / .seg.nrrd."""
    for suffix in SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def sibling(path: Path, suffix: str) -> Path:
    """``out.nii.gz`` → ``out<suffix>`` in the same folder."""
    return path.with_name(stem(path) + suffix)


def check_writable(path: Path) -> None:
    """Refuse, before any work, an output that cannot be written: a missing folder, a folder
    without write permission, or one that refuses files although permissions say yes (/proc, a
    read-only mount): a probe file is created and removed there."""
    import tempfile

    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise TuckerSegmentError(f"output folder does not exist: {folder}")
    if path.is_dir():
        raise TuckerSegmentError(f"output {path} is a folder; give a file name")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TuckerSegmentError(f"output folder is not writable: {folder}")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".tuckersegment-probe-"):
            pass
    except OSError as error:
        raise TuckerSegmentError(
            f"output folder does not accept files: {folder} ({error.strerror or error})"
        ) from None


def check_output_file(path: Path, suffixes: tuple[str, ...], what: str = "-o") -> Path:
    """A report's or plan's output, refused before any work when it cannot be written or has
    another kind of name than the report's — so an input given by mistake (a CT, a label file)
    is never overwritten with JSON or CSV."""
    path = Path(path)
    if not path.name.lower().endswith(suffixes):
        raise TuckerSegmentError(
            f"{what} {path}: give a file name ending in {' or '.join(suffixes)}"
        )
    check_writable(path)
    return path


class StagedOutputs:
    """Files written under temporary names, renamed to their targets on commit."""

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []

    def path_for(self, target: Path) -> Path:
        # keep the suffix last: nibabel picks the format from the file name
        tmp = target.with_name(f".tmp-{os.getpid()}-{len(self._staged)}.{target.name}")
        self._staged.append((tmp, target))
        return tmp

    def commit(self) -> list[Path]:
        for tmp, target in self._staged:
            os.replace(tmp, target)
        done = [target for _, target in self._staged]
        self._staged.clear()
        return done

    def discard(self) -> None:
        for tmp, _ in self._staged:
            tmp.unlink(missing_ok=True)
        self._staged.clear()


@contextmanager
def staged_outputs() -> Iterator[StagedOutputs]:
    staged = StagedOutputs()
    try:
        yield staged
    except BaseException:
        staged.discard()
        raise


def write_json(data: dict, path: Path) -> None:
    path.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_nifti(image, path: Path) -> None:
    """Save a nibabel image (TS's output keeps its label-map header extension)."""
    import nibabel as nib

    nib.save(image, str(path))


def write_seg_nrrd(labels: np.ndarray, affine: np.ndarray, path: Path, task: str = "total") -> None:
    """A Slicer segmentation (one layer, label value = TS id) with names, fixed colors and
    SNOMED CT terminology (the class map of TS's ``task``)."""
    import slicerio

    from ..ts.structures import structure_colors, structure_names
    from ..ts.terminology import structure_terminology

    names, colors = structure_names(task), structure_colors(task)
    terms = structure_terminology(task)
    voxels = np.asarray(labels).astype(np.uint8)
    ras_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    segments = []
    boxes = ndimage.find_objects(voxels, max_label=max(names))
    for label, name in sorted(names.items()):
        box = boxes[label - 1] if label - 1 < len(boxes) else None
        if box is None:
            continue  # Slicer segmentations list the segments that exist
        extent = [v for s in box for v in (s.start, s.stop - 1)]
        segments.append(
            {
                "id": name,
                "name": name,
                "labelValue": int(label),
                "layer": 0,
                "color": list(colors[label]),
                "extent": extent,
                **({"terminology": terms[label]} if label in terms else {}),
            }
        )
    segmentation = {
        "voxels": voxels,
        "ijkToLPS": ras_to_lps @ np.asarray(affine, dtype=float),
        "segments": segments,
        "containedRepresentationNames": ["Binary labelmap"],
        "masterRepresentation": "Binary labelmap",
    }
    slicerio.write_segmentation(str(path), segmentation)


def write_segmentation(image, target: Path, staging_path: Path, task: str = "total") -> None:
    """Write TS's result ``image`` to ``staging_path`` in the format of ``target``'s suffix."""
    if output_kind(target) == "nifti":
        write_nifti(image, staging_path)
    else:
        write_seg_nrrd(np.asanyarray(image.dataobj), image.affine, staging_path, task)
