"""The Flat U-Net (the STAMP thesis): `stats --flat` beside TS's architecture and the Tucker
DFs, and `flat-plans`, whose plans nnU-Net's own trainer builds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MODELS

FAST_FOLDER = next(MODELS.glob("Dataset297_*/*__3d_fullres"))


def _flat_row(run) -> dict:  # noqa: ANN001
    return next(r for r in json.loads(run.stdout) if r.get("architecture"))


def test_stats_shows_the_flat_unet_beside_the_dfs(cli):
    """TS's 3 mm architecture made flat (32 filters in every stage): counted like every other
    row, it has what the thesis reports — over 12× fewer parameters, about a third fewer
    computations."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from TuckerSegmentLib.engine.counting import count_network
    from TuckerSegmentLib.ts.architectures import builtin_plans, builtin_spec
    from TuckerSegmentLib.ts.flat_unet import flat_plans
    from TuckerSegmentLib.ts.network_spec import NetworkSpec

    run = cli("stats", "--flat", "--json")
    assert run.returncode == 0
    rows = json.loads(run.stdout)
    flat, original = _flat_row(run), rows[0]
    assert flat == {**flat, "df": None, "architecture": "flat 32"}
    # the same network as nnU-Net builds it from the flat plans
    plans, name = flat_plans(builtin_plans("3mm"))
    configuration = PlansManager(plans).get_configuration(name)
    assert configuration.network_arch_init_kwargs["features_per_stage"] == [32] * 5
    spec = NetworkSpec.from_configuration(configuration, 1, builtin_spec("3mm").num_classes)
    count = count_network(spec.build("meta"), spec.patch_size, 1)
    assert flat["params"] == count.params and flat["gflops"] == pytest.approx(count.gflops)
    assert original["params"] / flat["params"] > 12
    assert 0.25 < 1 - flat["gflops"] / original["gflops"] < 0.45
    text = cli("stats", "--flat")
    assert text.stdout.strip().splitlines()[-1].split()[:2] == ["flat", "32"]


def test_flat_plans_add_a_configuration_and_leave_the_plans_alone(cli, tmp_path):
    source = FAST_FOLDER / "plans.json"
    before = source.read_bytes()
    out = tmp_path / "nnUNetPlansFlat.json"
    run = cli("flat-plans", "--plans", source, "-o", out)
    assert run.returncode == 0, run.stderr
    assert "nnUNetv2_train DATASET 3d_fullres_flat FOLD -p nnUNetPlansFlat" in run.stdout
    assert source.read_bytes() == before
    plans = json.loads(out.read_text())
    assert plans["plans_name"] == "nnUNetPlansFlat"
    flat = plans["configurations"]["3d_fullres_flat"]
    assert flat["architecture"]["arch_kwargs"]["features_per_stage"] == [8, 8, 8, 8]
    # nnU-Net's preprocessed data of the parent is reused as it is
    assert flat["data_identifier"] == plans["configurations"]["3d_fullres"]["data_identifier"]
    wide = cli("flat-plans", "--plans", source, "--width", "16", "-o", tmp_path / "w.json")
    assert wide.returncode == 0
    wide_plans = json.loads((tmp_path / "w.json").read_text())["configurations"]
    assert (
        wide_plans["3d_fullres_flat"]["architecture"]["arch_kwargs"]["features_per_stage"]
        == [16] * 4
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--configuration", "2d"], "the plans have no configuration 2d (they have: 3d_fullres)"),
        (["--width", "0"], "--width must be a positive number of filters, not 0"),
        (["-o", "SAME"], "-o must be a new file: the plans given are never modified"),
    ],
)
def test_flat_plans_refuse_in_one_line(args, message, cli, tmp_path):
    source = FAST_FOLDER / "plans.json"
    args = [str(source) if a == "SAME" else a for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "p.json")]
    run = cli("flat-plans", "--plans", source, *args)
    assert run.returncode == 1
    assert run.stderr.strip() == f"tucker-segment: error: {message}"


TRAIN_SCRIPT = """
import json, sys, torch
from nnunetv2.experiment_planning.plan_and_preprocess_api import (
    extract_fingerprint_dataset, preprocess_dataset)
from nnunetv2.run.run_training import get_trainer_from_args
if __name__ == "__main__":
    dataset_id = int(sys.argv[1])
    # the user's own nnU-Net steps: fingerprint and preprocessing with their plans
    extract_fingerprint_dataset(dataset_id, num_processes=1, verbose=False)
    preprocess_dataset(dataset_id, "nnUNetPlans", ["3d_fullres"], [1], verbose=False)
    # nnUNetv2_train DATASET 3d_fullres_flat all -p nnUNetPlansFlat, cut to two iterations
    trainer = get_trainer_from_args(str(dataset_id), "3d_fullres_flat", "all", "nnUNetTrainer",
                                    "nnUNetPlansFlat", device=torch.device("cpu"))
    trainer.num_epochs, trainer.num_iterations_per_epoch = 1, 2
    trainer.num_val_iterations_per_epoch = 1
    trainer.run_training()
    print(json.dumps({
        "widths": list(trainer.network.encoder.output_channels),
        "params": sum(p.numel() for p in trainer.network.parameters()),
        "loss": float(trainer.logger.get_value("train_losses", step=0)),
        "output": str(trainer.output_folder),
    }))
"""


def test_nnunet_trains_the_flat_unet_from_the_plans(cli, tmp_path):
    """As a user trains it: nnU-Net's fingerprint and preprocessing of their dataset with their
    plans, `flat-plans` beside them, then nnU-Net's own trainer found by `-p nnUNetPlansFlat`
    trains the flat network (two iterations here) and saves its checkpoint. In a child
    process: nnU-Net reads its folders from the environment at import."""
    from finetune_curve import write_dataset

    name = "Dataset297_TotalSegmentator_total_3mm_1559subj"
    raw, preprocessed = tmp_path / "raw" / name, tmp_path / "preprocessed" / name
    write_dataset(raw, "3mm", cases=2)
    preprocessed.mkdir(parents=True)
    (preprocessed / "dataset.json").write_bytes((raw / "dataset.json").read_bytes())
    plans = json.loads((FAST_FOLDER / "plans.json").read_text())
    plans["dataset_name"] = name
    (preprocessed / "nnUNetPlans.json").write_text(json.dumps(plans))
    run = cli(
        "flat-plans",
        "--plans",
        preprocessed / "nnUNetPlans.json",
        "-o",
        preprocessed / "nnUNetPlansFlat.json",
    )
    assert run.returncode == 0, run.stderr
    env = {
        **os.environ,
        "nnUNet_raw": str(tmp_path / "raw"),
        "nnUNet_preprocessed": str(tmp_path / "preprocessed"),
        "nnUNet_results": str(tmp_path / "results"),
        "nnUNet_n_proc_DA": "0",
        "nnUNet_wandb_enabled": "0",
        "nnUNet_compile": "f",
    }
    trained = subprocess.run(
        [sys.executable, "-c", TRAIN_SCRIPT, "297"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    report = json.loads(trained.stdout.strip().splitlines()[-1])
    assert report["widths"] == [8, 8, 8, 8]
    assert report["loss"] == report["loss"]  # a number, not NaN
    output = Path(report["output"])
    assert output.parent.name == "nnUNetTrainer__nnUNetPlansFlat__3d_fullres_flat"
    assert (output / "checkpoint_final.pth").is_file()
    from TuckerSegmentLib.ts.model_folder import open_model_folder

    original = sum(
        p.numel() for p in open_model_folder(FAST_FOLDER).load_network("cpu").parameters()
    )
    assert 0 < report["params"] < original / 4  # deep-supervision heads included
