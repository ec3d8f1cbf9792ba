"""Defaults a radiologist can trust: per-model zero-shot DF floors, never undercut on speed."""

from __future__ import annotations

from pathlib import Path

import pytest
from TuckerSegmentLib.cli.info import format_info
from TuckerSegmentLib.engine.fidelity import (
    DEFAULT_DF,
    below_floor_warning,
    default_df,
    defaults_text,
)
from TuckerSegmentLib.panel.segmentation_run import RunRequest
from TuckerSegmentLib.pipeline.segment import SegmentOptions, model_settings
from TuckerSegmentLib.runtime.devices import CPUInfo, DeviceReport, recommend
from TuckerSegmentLib.ts.weights import total_models

CPU = DeviceReport(cpu=CPUInfo("EPYC", 2, ["avx2"]), gpus=[], mps=False)
BENCHMARK = {
    "rows": [
        {"device": "cpu", "df": 0.9, "speedup": 1.1},
        {"device": "cpu", "df": 0.3, "speedup": 3.0},
        {"device": "cpu", "df": 0.1, "speedup": 4.7},
    ]
}


def test_floors_per_model():
    assert default_df("cardiac") == 0.5
    for model in ("3mm", "organs", "vertebrae", "muscles", "ribs"):
        assert default_df(model) == DEFAULT_DF == 0.3
    assert defaults_text() == "DF 0.3 (0.5 for the cardiac expert)"


def test_the_networks_of_ts_options_and_other_tasks_have_floors_too():
    """tucker-totalsegmentator: the 6 mm and body crop models at 0.3; the models of tasks the paper
    did not study (lung_vessels, cerebral_bleed, …) at the cautious 0.5, with a warning below."""
    from TuckerSegmentLib.pipeline.every_model import CompressionChoice, model_df

    assert default_df("6mm") == default_df("body") == 0.3
    assert default_df("lung_vessels") == default_df("cerebral_bleed") == 0.5
    assert model_df(CompressionChoice(), "hip_implant") == 0.5
    assert model_df(CompressionChoice(df=0.3), "hip_implant") == 0.3
    assert "not studied in the paper" in below_floor_warning("lung_vessels", 0.3)
    assert defaults_text(True) == "DF 0.3 (0.5 for the cardiac expert, 0.5 for other tasks' models)"


def test_speed_alone_never_lowers_the_recommended_df():
    rec = recommend(CPU, BENCHMARK)
    assert rec.df == 0.3
    assert "DF 0.3 ran 3.0× faster" in rec.reason
    assert "DF 0.1 ran 4.7× faster but is below the zero-shot fidelity floor" in rec.reason
    assert "DF 0.3 (0.5 for the cardiac expert)" in rec.reason


def test_info_recommends_the_default_dfs_not_one_df_for_all():
    rec = recommend(CPU, BENCHMARK)
    info = {
        "versions": {},
        "devices": {"cpu": {"model": "EPYC", "cores": 2, "flags": []}, "gpus": [], "mps": False},
        "weights_dir": "w",
        "weights_installed": {},
        "cache_dir": "c",
        "recommendation": rec.__dict__,
    }
    text = format_info(info)
    line = next(line for line in text.splitlines() if line.startswith("recommended:"))
    assert "--df" not in line and "0.5 for the cardiac expert" in line


def _options(**kwargs) -> SegmentOptions:
    """Options as plan_run passes them on: the layer policy resolved (the CPU's)."""
    return SegmentOptions(Path("ct.nii.gz"), Path("out.nii.gz"), policy="default", **kwargs)


def test_full_mode_defaults_follow_the_floors():
    settings = model_settings(_options(), total_models(False))
    assert {name: s.df for name, s in settings.items()} == {
        "organs": 0.3,
        "vertebrae": 0.3,
        "cardiac": 0.5,
        "muscles": 0.3,
        "ribs": 0.3,
    }


def test_an_explicit_df_below_a_floor_is_honoured_with_a_warning():
    settings = model_settings(_options(df=0.3), total_models(False))
    assert settings["cardiac"].df == 0.3
    warning = below_floor_warning("cardiac", 0.3)
    assert "below its zero-shot fidelity floor (DF 0.5" in warning and "\n" not in warning
    assert below_floor_warning("organs", 0.3) is None


@pytest.mark.parametrize(("df", "passed"), [(0.3, None), (0.30000000000000004, None), (0.5, "0.5")])
def test_the_panel_passes_the_default_through(df, passed):
    args = RunRequest("vtkMRMLScalarVolumeNode1", df=df, fast=False).cli_args(Path("ct"), Path("o"))
    assert (args[args.index("--df") + 1] if "--df" in args else None) == passed
