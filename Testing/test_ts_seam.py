"""The one seam to TotalSegmentator and nnU-Net: the predictor subclass TS builds (every fold
kept), the list of private symbols checked on the installed versions, the start-up gate, and
declared dependency ranges equal to what CI runs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tomllib
import torch
from conftest import MODELS, REPO
from TuckerSegmentLib.engine.compress import CompressionSettings
from TuckerSegmentLib.errors import TuckerSegmentError
from TuckerSegmentLib.ts import private_symbols, versions
from TuckerSegmentLib.ts.predictor import predictor_class, predictor_in_ts

FAST = next(MODELS.glob("Dataset297_*/*__3d_fullres"))


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / ".ci" / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_declared_dependencies_are_the_tested_versions():
    from packaging.requirements import Requirement

    tested = _constraints()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        have = tested[requirement.name.lower().replace("_", "-")]
        assert requirement.specifier.contains(have), (line, have)
        assert any(s.operator in ("==", "<") for s in requirement.specifier), (
            f"{line} is open-ended"
        )


def test_the_gate_knows_the_tested_versions():
    tested = _constraints()
    for name, version in versions.TESTED.items():
        have = tested[name.lower().replace("_", "-")]
        assert have == version or have.startswith(version + "."), (name, have, version)
    assert versions.untested_versions() == []


def test_untested_versions_warn_in_one_line_each():
    warnings = versions.untested_versions(
        {"TotalSegmentator": "2.19.0", "nnunetv2": "2.8.1", "torch": "2.15.0+cu130"}
    )
    assert warnings == [
        "TotalSegmentator 2.19.0 is not the tested version (2.18.0)",
        "torch 2.15.0+cu130 is not the tested version (2.14.x)",
    ]


def test_every_private_symbol_exists_in_the_installed_versions():
    assert private_symbols.missing_symbols() == []
    assert len(private_symbols.SYMBOLS) >= 10


def test_a_missing_private_symbol_stops_the_run_with_one_line(monkeypatch):
    gone = private_symbols.PrivateSymbol("totalsegmentator.nnunet", "NoSuchPredictor", "x", "y")
    monkeypatch.setattr(private_symbols, "SYMBOLS", (*private_symbols.SYMBOLS, gone))
    with pytest.raises(TuckerSegmentError, match="lack totalsegmentator.nnunet.NoSuchPredictor"):
        versions.check_versions()


def test_ts_builds_our_predictor_only_inside_the_context():
    import totalsegmentator.nnunet as ts_nnunet
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    cls = predictor_class(lambda folder, folds: None, "cpu", "fp32")
    assert issubclass(cls, nnUNetPredictor)
    with predictor_in_ts(cls):
        assert ts_nnunet.nnUNetPredictor is cls
    assert ts_nnunet.nnUNetPredictor is nnUNetPredictor


@pytest.fixture(scope="module")
def two_fold_folder(tmp_path_factory):
    """The 3 mm test model with a second fold whose weights differ."""
    folder = tmp_path_factory.mktemp("two-fold") / FAST.parent.name / FAST.name
    shutil.copytree(FAST, folder)
    checkpoint = torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=False)
    generator = torch.Generator().manual_seed(0)
    for value in checkpoint["network_weights"].values():
        if value.is_floating_point() and value.ndim == 5:
            value.mul_(1 + 0.05 * torch.randn(value.shape, generator=generator))
    (folder / "fold_1").mkdir()
    torch.save(checkpoint, folder / "fold_1" / "checkpoint_final.pth")
    return folder


def test_multi_fold_models_keep_every_fold_compressed(two_fold_folder, tmp_path, monkeypatch):
    from TuckerSegmentLib.pipeline.segment import PreparedModel, fold_networks
    from TuckerSegmentLib.storage.cache import compressed_model

    monkeypatch.setenv("TUCKERSEGMENT_CACHE", str(tmp_path / "cache"))
    cached = compressed_model(two_fold_folder, CompressionSettings(df=0.5), "cpu", "fp32")
    prepared = PreparedModel(cached.network, cached.manifest.layers, "hosvd")
    seen = {}

    def choose(folder, fold_states):
        seen["folds"] = len(fold_states)
        return fold_networks(prepared, folder, fold_states)

    cls = predictor_class(choose, "cpu", "fp32")
    predictor = cls(device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(two_fold_folder), use_folds=(0, 1))
    assert seen["folds"] == 2 and len(predictor.list_of_parameters) == 2
    fold0, fold1 = predictor.list_of_parameters
    assert fold0.keys() == fold1.keys() == predictor.network.state_dict().keys()
    cores = [k for k in fold0 if k.endswith("core.weight")]
    assert cores and not torch.equal(fold0[cores[0]], fold1[cores[0]])
    image = np.random.default_rng(0).normal(size=(1, 40, 48, 48)).astype(np.float32)
    properties = {"spacing": [3.0, 3.0, 3.0]}
    labels = predictor.predict_single_npy_array(image, properties, None, None, False)
    assert labels.shape == image.shape[1:]
