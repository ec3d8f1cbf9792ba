"""Where a checkpoint's agreement calibration lives: the user's own in the cache (made by
`plan --calibrate`), else one shipped beside the model folder (the test models carry theirs)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..engine.agreement_prediction import Calibration
from ..errors import TuckerSegmentError
from .cache import cache_root

SHIPPED_NAME = "tuckersegment-calibration.json"


def cached_calibration_path(source_checkpoint_sha256: str) -> Path:
    return cache_root() / "agreement-calibration" / f"{source_checkpoint_sha256}.json"


def find_calibration(source_checkpoint_sha256: str, model_folder: Path) -> Calibration | None:
    """The calibration for this checkpoint, or None; one that names other weights is skipped."""
    for path in (cached_calibration_path(source_checkpoint_sha256), model_folder / SHIPPED_NAME):
        try:
            calibration = Calibration.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            continue
        except (ValueError, TypeError, KeyError, TuckerSegmentError):
            continue  # damaged or of another version: as if there were none
        if calibration.source_checkpoint_sha256 == source_checkpoint_sha256:
            return calibration
    return None


def save_calibration(calibration: Calibration, path: Path | None = None) -> Path:
    """Write it (atomically) to ``path`` or the cache; returns where."""
    target = path or cached_calibration_path(calibration.source_checkpoint_sha256)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(calibration.to_json(), out, indent=1)
            out.write("\n")
        os.replace(staging, target)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return target
