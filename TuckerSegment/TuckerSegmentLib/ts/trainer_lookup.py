"""Finding the nnU-Net trainer class a model folder names, without importing every trainer.

nnU-Net's predictor finds the trainer class (``recursive_find_trainer_class_by_name``) by
importing the modules of its trainer package one by one until one has the name; TS's models name
``nnUNetTrainerNoMirroring`` and ``nnUNetTrainer_4000epochs_NoMirroring``, which live in
variants folders it walks late, so each run imported about 600 modules it never uses — 1.02 s
measured alone on a 2-core EPYC, an import of nnU-Net's trainer variants that plain TS pays
too. Here the trainer package's source files are read as text (about 10 ms) and the one module
that defines the class is imported. Anything not certain — the name defined in no file or in
several, or also in TotalSegmentator (TS adds trainers of its own) — goes to the lookup TS and
nnU-Net installed, unchanged; so does nnUNet_extTrainer.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

LOOKUP_MODULE = "nnunetv2.inference.predict_from_raw_data"
LOOKUP_NAME = "recursive_find_trainer_class_by_name"  # the name the predictor calls it by


def _defining_files(package: str, class_name: str) -> list[Path]:
    root = Path(importlib.import_module(package).__file__).parent
    pattern = re.compile(rf"^class\s+{re.escape(class_name)}\s*[(:]", re.MULTILINE)
    return [
        path
        for path in sorted(root.rglob("*.py"))
        if pattern.search(path.read_text(encoding="utf-8", errors="replace"))
    ]


@cache
def defining_module(class_name: str) -> str | None:
    """The dotted name of the one module in nnU-Net's trainer package that defines
    ``class_name``, or None when that is not certain."""
    import nnunetv2

    trainers = "nnunetv2.training.nnUNetTrainer"
    found = _defining_files(trainers, class_name)
    if len(found) != 1 or _defining_files("totalsegmentator", class_name):
        return None
    relative = found[0].relative_to(Path(nnunetv2.__file__).parent).with_suffix("")
    return ".".join(("nnunetv2", *relative.parts))


def direct_lookup(fallback: Callable[[str], type]) -> Callable[[str], type]:
    """A trainer lookup that imports only the defining module, else asks ``fallback``."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    def find(trainer_name: str) -> type:
        module = defining_module(trainer_name)
        if module is not None:
            found = getattr(importlib.import_module(module), trainer_name, None)
            if isinstance(found, type) and issubclass(found, nnUNetTrainer):
                return found
        return fallback(trainer_name)

    return find


@contextmanager
def direct_trainer_lookup() -> Iterator[None]:
    """Within the context, nnU-Net's predictor finds trainer classes with :func:`direct_lookup`
    (wrapping whatever lookup TS installed)."""
    predictor_module = importlib.import_module(LOOKUP_MODULE)
    installed = getattr(predictor_module, LOOKUP_NAME)
    setattr(predictor_module, LOOKUP_NAME, direct_lookup(installed))
    try:
        yield
    finally:
        setattr(predictor_module, LOOKUP_NAME, installed)
