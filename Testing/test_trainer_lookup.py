"""The trainer lookup imports only the module that defines the class, finds the same class as
nnU-Net's own search, and leaves whatever it is not sure of to the lookup TS installed."""

from __future__ import annotations

import subprocess
import sys

import pytest
from TuckerSegmentLib.ts.trainer_lookup import (
    LOOKUP_MODULE,
    LOOKUP_NAME,
    defining_module,
    direct_lookup,
    direct_trainer_lookup,
)

TS_TRAINERS = ["nnUNetTrainerNoMirroring", "nnUNetTrainer_4000epochs_NoMirroring", "nnUNetTrainer"]

COUNT_IMPORTS = r"""
import sys
sys.path.insert(0, sys.argv[1])
import importlib
import totalsegmentator.nnunet  # installs TS's lookup, as in a run
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
predictor_module = importlib.import_module("nnunetv2.inference.predict_from_raw_data")
lookup = predictor_module.recursive_find_trainer_class_by_name
if sys.argv[2] == "direct":
    from TuckerSegmentLib.ts.trainer_lookup import direct_lookup
    lookup = direct_lookup(lookup)
before = set(sys.modules)
found = lookup(sys.argv[3])
print(found.__module__, len(set(sys.modules) - before))
"""


@pytest.mark.parametrize("name", TS_TRAINERS)
def test_the_same_class_as_nnunets_search(name):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    expected = recursive_find_trainer_class_by_name(name)
    assert defining_module(name) == expected.__module__
    assert direct_lookup(lambda _: None)(name) is expected


def test_only_the_defining_module_is_imported():
    import TuckerSegmentLib

    lib = str(next(iter(TuckerSegmentLib.__path__)) + "/..")
    counts = {}
    for how in ("installed", "direct"):
        result = subprocess.run(
            [sys.executable, "-c", COUNT_IMPORTS, lib, how, "nnUNetTrainer_4000epochs_NoMirroring"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        module, imported = result.stdout.split()
        counts[how] = (module, int(imported))
    assert counts["direct"][0] == counts["installed"][0]
    assert counts["direct"][1] <= 5, counts
    assert counts["installed"][1] > 100, counts  # nnU-Net's search imports its trainer variants


def test_names_it_is_not_sure_of_go_to_the_installed_lookup():
    asked = []

    def installed(name: str) -> type:
        asked.append(name)
        return int

    # TS defines this trainer itself (and TS's installed lookup knows it)
    assert defining_module("nnUNetTrainerSkeletonRecall") is None
    assert direct_lookup(installed)("nnUNetTrainerSkeletonRecall") is int
    assert direct_lookup(installed)("NoSuchTrainer") is int
    assert asked == ["nnUNetTrainerSkeletonRecall", "NoSuchTrainer"]


def test_the_installed_lookup_is_restored():
    import importlib

    predictor_module = importlib.import_module(LOOKUP_MODULE)
    installed = getattr(predictor_module, LOOKUP_NAME)
    with direct_trainer_lookup():
        assert getattr(predictor_module, LOOKUP_NAME) is not installed
        with pytest.raises(RuntimeError, match="Could not find requested nnunet trainer"):
            getattr(predictor_module, LOOKUP_NAME)("NoSuchTrainer")
    assert getattr(predictor_module, LOOKUP_NAME) is installed
