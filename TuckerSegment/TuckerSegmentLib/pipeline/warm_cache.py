"""What a worker keeps between runs: the prepared networks, and the original networks' result
for the last CT.

A process that segments many CTs (a `batch` worker, the panel's warm worker) keeps each model's
prepared network (loaded from the cache, fused or converted) for the next run with the same
settings: the model is loaded once per worker, not once per case.

In the Slicer panel a user segments a CT, looks at the agreement, and clicks Segment again with
another DF. With "compare" on, every click would run the original networks on the same CT again
— the slower half of the work, with the same result. A warm worker (cli/worker.py) turns this
cache on; a plain `tucker-segment` process never does, so it holds nothing extra.

The key is everything the original run's labels depend on: the CT's voxels and geometry (not
its file, which the panel writes anew each time), the mode, device, precision, the model
folders' checkpoints (path, size, modification time) and the library versions. One entry: a
new CT replaces the previous one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

_enabled = False
_entry: tuple[str, Any] | None = None
_keep_models = False
_models: dict[str, Any] = {}


def keep_between_runs(enabled: bool = True) -> None:
    """Turn the cache on (the warm worker) or off (and drop what it holds)."""
    global _enabled, _entry
    _enabled = enabled
    if not enabled:
        _entry = None


def keep_models(enabled: bool = True) -> None:
    """Keep prepared networks between runs (on), or drop them (off)."""
    global _keep_models
    _keep_models = enabled
    if not enabled:
        _models.clear()


def _checkpoints(folder: Path) -> list[str]:
    parts = []
    for checkpoint in sorted(folder.rglob("*.pth")):
        stat = checkpoint.stat()
        parts.append(f"{checkpoint.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
    return parts


def model_key(folder: Path, settings: list[Any]) -> str | None:
    """Key of one model's prepared network: its folder's checkpoints, the settings (DF, device,
    precision, runtime, a given model's folder and manifest); None when models are not kept."""
    if not _keep_models:
        return None
    parts = [repr(settings), *_checkpoints(folder)]
    for item in settings:
        if isinstance(item, Path) and (item / "manifest.json").exists():
            parts.append(f"{(item / 'manifest.json').stat().st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def kept_model(key: str | None) -> Any | None:
    if not (_keep_models and key and key in _models):
        return None
    _models[key] = _models.pop(key)  # most recently used last
    return _models[key]


MAX_KEPT_MODELS = 10  # full mode has five; a panel user trying DFs keeps the last two runs'


def keep_model(key: str | None, value: Any) -> None:
    if _keep_models and key:
        _models.pop(key, None)
        _models[key] = value
        while len(_models) > MAX_KEPT_MODELS:
            _models.pop(next(iter(_models)))  # the oldest


def image_digest(image: Any) -> str:
    """Digest of a nibabel image's voxels, dtype, shape and affine."""
    import numpy as np

    data = np.ascontiguousarray(np.asanyarray(image.dataobj))
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"{data.dtype.str}{data.shape}".encode())
    digest.update(np.asarray(image.affine, dtype=np.float64).tobytes())
    digest.update(memoryview(data).cast("B"))
    return digest.hexdigest()


def original_run_key(image: Any, settings: dict[str, Any], folders: list[Path]) -> str | None:
    """The key of an original run on ``image`` with ``settings`` and these model folders; None
    when the cache is off (a plain CLI run does not pay for the digest)."""
    from ..storage.compressed_format import library_versions

    if not _enabled:
        return None
    parts = [image_digest(image), repr(sorted(settings.items())), repr(library_versions())]
    for folder in sorted(folders):
        parts.extend(_checkpoints(folder))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def cached_original(key: str) -> Any | None:
    """The original run kept for ``key``, or None."""
    if _enabled and _entry is not None and _entry[0] == key:
        return _entry[1]
    return None


def keep_original(key: str | None, run: Any) -> None:
    """Keep ``run`` for ``key`` (when the cache is on), replacing the previous entry."""
    global _entry
    if _enabled and key is not None:
        _entry = (key, run)
