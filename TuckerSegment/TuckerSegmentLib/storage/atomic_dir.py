"""Write a folder atomically: fill a hidden staging folder beside it, then rename it into place.

An interrupted or failing write leaves nothing at the target; a concurrent reader sees either
the old folder or the new one, never a half-written one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import TuckerSegmentError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield a staging folder; on success it replaces ``target``, on error it is removed."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise TuckerSegmentError(f"{target} exists and is not a folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as error:
        raise TuckerSegmentError(f"cannot write to {target.parent}: {error.strerror}") from None
    os.chmod(staging, 0o777 & ~_umask())
    try:
        yield staging
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, retired / "old")
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
