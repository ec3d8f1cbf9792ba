"""`tucker-segment finetune` with nnU-Net's real trainer on a tiny phantom dataset: the network
it builds, progress, an interruption and a resume, the output's format and provenance, a
segment run with it through TS's pipeline, and bad datasets refused before any long work."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import MODELS, run_segment, shared_temp
from finetune_curve import write_dataset

FINETUNE = ["finetune", "--model", "3mm", "--weights-dir", str(MODELS), "--device", "cpu"]
SHORT = ["--epochs", "3", "--iterations-per-epoch", "5", "--val-iterations", "2"]
SHORT += ["--augmentation-workers", "0", "--seed", "0", "--lr", "1e-3", "--progress", "json"]


def _command(dataset: Path, output: Path) -> list[str]:
    exe = Path(sys.executable).with_name("tucker-segment")
    return [str(exe), *FINETUNE, "--dataset", str(dataset), "-o", str(output), *SHORT]


def _events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("finetune") / "dataset"
    write_dataset(folder, "3mm", cases=3)
    return folder


@pytest.fixture(scope="session")
def finetuned(tiny_dataset, tmp_path_factory, isolated_home):
    """A fine-tuning killed after its first epoch, then run again: it resumes and finishes.
    Made once per test session: under pytest-xdist the first worker that needs it makes it (file
    lock in the workers' shared temp folder) and records what the runs printed; the others read
    that record (the tiny dataset is the same seeded phantoms on every worker)."""
    from types import SimpleNamespace

    from filelock import FileLock

    root = shared_temp(tmp_path_factory)
    out, record = root / "finetuned" / "model", root / "finetuned.json"
    with FileLock(str(root / "finetuned.lock")):
        if not record.is_file():
            shutil.rmtree(out.parent, ignore_errors=True)
            out.parent.mkdir()
            record.write_text(
                json.dumps(_interrupted_then_resumed(tiny_dataset, out, isolated_home))
            )
    made = json.loads(record.read_text())
    assert made["returncode"] == 0, made["stderr"][-3000:]
    second = SimpleNamespace(returncode=made["returncode"], stdout=made["stdout"])
    return out, made["interrupted"], second


def _interrupted_then_resumed(dataset: Path, out: Path, isolated_home: dict) -> dict:
    env = {**os.environ, **isolated_home}
    best = ["--checkpoint", "best"]  # nnU-Net's best checkpoint, across the kill and resume
    first = subprocess.Popen(
        _command(dataset, out) + best,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines = []
    for line in first.stdout:  # kill once the second epoch has begun (epoch 1 is saved)
        lines.append(line)
        event = json.loads(line)
        if event.get("kind") == "step" and event.get("epoch") == 1:
            first.send_signal(signal.SIGKILL)
            break
    first.wait(timeout=120)
    interrupted = {"output_existed": out.exists(), "lines": "".join(lines)}
    second = subprocess.run(
        _command(dataset, out) + best, capture_output=True, text=True, env=env, timeout=900
    )
    return {
        "interrupted": interrupted,
        "returncode": second.returncode,
        "stdout": second.stdout,
        "stderr": second.stderr,
    }


def test_an_interrupted_run_resumes_and_leaves_no_half_model(finetuned):
    out, interrupted, second = finetuned
    assert not interrupted["output_existed"]
    events = _events(second.stdout)
    assert any(e["message"].startswith("resuming") for e in events)
    steps = [e for e in events if e.get("kind") == "step"]
    assert min(e["epoch"] for e in steps) >= 1  # epoch 0 was not trained again
    curve = (out / "training" / "curve.csv").read_text().splitlines()
    assert len(curve) == 1 + 3  # header and three epochs
    assert not (out.parent / f".{out.name}.finetune-work").exists()


def test_loss_goes_down(finetuned):
    _, interrupted, second = finetuned
    steps = [
        e for e in _events(interrupted["lines"]) + _events(second.stdout) if e.get("kind") == "step"
    ]
    losses = [e["loss"] for e in steps]
    assert len(losses) >= 10
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    epochs = [e for e in _events(second.stdout) if e.get("kind") == "epoch"]
    assert all(0.0 <= e["val_dice"] <= 1.0 for e in epochs)


def test_the_trainer_builds_the_compressed_network_with_the_expected_ranks(finetuned):
    from TuckerSegmentLib.engine.compress import CompressionSettings
    from TuckerSegmentLib.storage.compressed_format import read_manifest
    from TuckerSegmentLib.storage.decompose import compress_model_folder

    out, _, _ = finetuned
    manifest = read_manifest(out)
    folder = next(MODELS.glob("Dataset297*/*__3d_fullres"))
    zero_shot = compress_model_folder(folder, CompressionSettings(df=0.3))
    # same layers and ranks; the explained variance to float precision (the trainer's process
    # runs the SVD with other thread counts, so the last bits of a sum may differ)
    assert [dataclasses.replace(layer, explained_variance=None) for layer in manifest.layers] == [
        dataclasses.replace(layer, explained_variance=None) for layer in zero_shot.manifest.layers
    ]
    assert [layer.explained_variance for layer in manifest.layers] == pytest.approx(
        [layer.explained_variance for layer in zero_shot.manifest.layers], rel=1e-9
    )
    weights = torch.load(out / "weights.pt", weights_only=True)
    assert set(weights) == set(zero_shot.network.state_dict())
    changed = [
        k for k, v in zero_shot.network.state_dict().items() if not torch.equal(v, weights[k])
    ]
    assert changed  # trained: not the decomposition it started from


def test_the_output_has_its_provenance(finetuned, tiny_dataset):
    from TuckerSegmentLib.ts.model_folder import file_sha256

    out, _, _ = finetuned
    manifest = json.loads((out / "manifest.json").read_text())
    record = manifest["finetune"]
    checkpoint = next(MODELS.glob("Dataset297*/*__3d_fullres")) / "fold_0" / "checkpoint_final.pth"
    assert record["base_checkpoint_sha256"] == file_sha256(checkpoint)
    assert record["df"] == 0.3 and record["rank_floor"] == 8 and record["steps"] == 15
    assert record["dataset"]["cases"] == 3 and len(record["dataset"]["fingerprint_sha256"]) == 64
    assert record["optimizer"] == "AdamW" and record["lr"] == 1e-3
    assert 0.0 <= record["final_validation_dice"] <= 1.0
    assert manifest["model"] == "3mm"
    assert (out / "training" / "progress.png").stat().st_size > 10_000  # nnU-Net's own plot
    # the weights are nnU-Net's checkpoint_best, written at the end of an epoch whose moving-
    # average Dice beat nnU-Net's record (after a resume, the record its last checkpoint holds,
    # which nnU-Net writes before that epoch's update: so not always the curve's maximum)
    curve = (out / "training" / "curve.csv").read_text().splitlines()[1:]
    ema = [float(line.split(",")[-1]) for line in curve]
    chosen = record["checkpoint"]
    assert chosen["name"] == "best" and 1 <= chosen["epochs_trained"] <= len(ema)
    at = chosen["epochs_trained"] - 1
    assert chosen["best_ema_pseudo_dice"] == pytest.approx(ema[at], abs=1e-5)
    assert all(e <= ema[at] + 1e-5 for e in ema[at:])  # nothing after it did better


def test_segment_runs_the_finetuned_model_through_ts(
    finetuned, phantom_files, tmp_path, isolated_home
):
    out, _, _ = finetuned
    ct, _ = phantom_files
    result = run_segment(
        ct, tmp_path / "seg.nii.gz", "--fast", "--compressed-model", str(out), env=isolated_home
    )
    assert result.returncode == 0, result.stderr
    sidecar = json.loads((tmp_path / "seg.json").read_text())
    info = sidecar["models"]["3mm"]
    assert info["given_model"] == str(out) and info["df"] == 0.3
    assert info["finetune"]["steps"] == 15
    labels = np.asanyarray(nib.load(tmp_path / "seg.nii.gz").dataobj)
    assert labels.shape == nib.load(ct).shape and labels.max() > 0


def test_a_model_of_the_other_mode_is_refused(finetuned, phantom_files, tmp_path, cli):
    out, _, _ = finetuned
    ct, _ = phantom_files
    result = cli(
        "segment",
        "-i",
        ct,
        "-o",
        tmp_path / "x.nii.gz",
        "--weights-dir",
        MODELS,
        "--compressed-model",
        out,
    )
    assert result.returncode == 1
    assert "is a compressed 3mm model, not one of full mode's models" in result.stderr


def _broken_copy(dataset: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "broken"
    shutil.copytree(dataset, copy)
    return copy


def _set_label_json(folder: Path, change) -> None:  # noqa: ANN001
    data = json.loads((folder / "dataset.json").read_text())
    change(data)
    (folder / "dataset.json").write_text(json.dumps(data))


def _wrong_label_set(data: dict) -> None:
    data["labels"]["tumor"] = data["labels"].pop("liver")


def _moved_label(data: dict) -> None:
    data["labels"]["spleen"], data["labels"]["liver"] = (
        data["labels"]["liver"],
        data["labels"]["spleen"],
    )


def _two_channels(data: dict) -> None:
    data["channel_names"] = {"0": "CT", "1": "PET"}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "dataset.json").unlink(), "is not an nnU-Net raw dataset: no dataset.json"),
        (lambda f: _set_label_json(f, _wrong_label_set), "missing liver; not in the model: tumor"),
        (lambda f: _set_label_json(f, _moved_label), "is 1 here but 5 in the model"),
        (lambda f: _set_label_json(f, _two_channels), "TS's models take one (CT)"),
        (lambda f: _set_label_json(f, lambda d: d.update(numTraining=5)), "says numTraining 5"),
        (
            lambda f: (f / "imagesTr" / "phantom001_0000.nii.gz").unlink(),
            "case phantom001: no image",
        ),
        (lambda f: _label_value(f, 200), "has label value 200, which the 3mm model does not have"),
        (lambda f: _flat_image(f), "is not a 3D volume"),
    ],
    ids=["no-json", "label-set", "label-ids", "channels", "count", "no-image", "value", "2d"],
)
def test_bad_datasets_are_refused_before_any_work(damage, message, tiny_dataset, tmp_path, cli):
    broken = _broken_copy(tiny_dataset, tmp_path)
    damage(broken)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = cli(*FINETUNE, "--dataset", broken, "-o", tmp_path / "out")
    assert result.returncode == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no work folder


def _label_value(folder: Path, value: int) -> None:
    path = folder / "labelsTr" / "phantom000.nii.gz"
    image = nib.load(path)
    data = np.asanyarray(image.dataobj).copy()
    data[0, 0, 0] = value
    nib.save(nib.Nifti1Image(data, image.affine), path)


def _flat_image(folder: Path) -> None:
    path = folder / "imagesTr" / "phantom002_0000.nii.gz"
    image = nib.load(path)
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj)[:, :, :1], image.affine), path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "liver"], "unknown model 'liver'"),
        (["--gpus", "2"], "--gpus 2: nnU-Net's multi-GPU training needs 2 CUDA GPUs"),
        (["--fold", "3"], "--fold 3: nnU-Net's folds are 0-4 and need at least five cases"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--df", "1.5"], "DF"),
        (["--stamp", "100%"], "--stamp: the share of parameters to keep"),
        (["--stamp", "50%", "--stamp-every", "0"], "--stamp-every, --stamp-filters: at least 1"),
        (["--stamp", "50%", "--start-from", "x"], "--stamp prunes the installed original"),
        (["--stamp", "50%", "--checkpoint", "best"], "STAMP writes its final network"),
        (["--distill", "-1"], "--distill must be 0 (off) or a positive weight"),
        (["--seed", "-1"], "--seed must be between 0 and 4294967295"),
        (["--lr", "inf"], "--lr must be a positive number"),
        (["--weight-decay", "nan"], "--weight-decay must be a number, 0 or more"),
    ],
)
def test_bad_options_are_refused(args, message, tiny_dataset, tmp_path, cli):
    result = cli(*FINETUNE, "--dataset", tiny_dataset, "-o", tmp_path / "out", *args)
    assert result.returncode == 1
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_existing_output_is_never_replaced(tiny_dataset, tmp_path, cli):
    (tmp_path / "out").mkdir()
    result = cli(*FINETUNE, "--dataset", tiny_dataset, "-o", tmp_path / "out")
    assert result.returncode == 1 and "exists" in result.stderr


def test_the_panel_passes_fine_tuned_models_to_the_cli(tmp_path):
    from TuckerSegmentLib.panel.segmentation_run import RunRequest

    request = RunRequest("vtkMRMLScalarVolumeNode1", compressed_models=("/m/organs", "/m/ribs"))
    args = request.cli_args(tmp_path / "ct.nii.gz", tmp_path / "result.seg.nrrd")
    pairs = [args[i + 1] for i, a in enumerate(args) if a == "--compressed-model"]
    assert pairs == ["/m/organs", "/m/ribs"]


def test_the_original_network_labels_cases_like_it_segments(tiny_dataset, tmp_path):
    """ts/teacher.py: nnU-Net's predictor on the original model folder labels a phantom as the
    original segments it (its large organs against the phantom's truth)."""
    from TuckerSegmentLib.ts.teacher import label_with_original

    folder = next(MODELS.glob("Dataset297*/*__3d_fullres"))
    image = tiny_dataset / "imagesTr" / "phantom000_0000.nii.gz"
    out = tmp_path / "labelsTr" / "phantom000.nii.gz"
    out.parent.mkdir()
    label_with_original(folder, [image], [out], "cpu")
    made = np.asanyarray(nib.load(out).dataobj)
    truth = np.asanyarray(nib.load(tiny_dataset / "labelsTr" / "phantom000.nii.gz").dataobj)
    assert made.shape == truth.shape and not (tmp_path / ".teacher-staging" / out.name).exists()
    liver = 5  # TS's id of the liver in the 3 mm model
    overlap = np.logical_and(made == liver, truth == liver).sum()
    assert 2 * overlap / ((made == liver).sum() + (truth == liver).sum()) > 0.8


def test_finetune_on_images_only_learns_from_the_original(
    tiny_dataset, tmp_path, isolated_home, cli
):
    """--labels original: a dataset without labelsTr is labelled by the original network, then
    fine-tuned on as usual (here with --augmentation none: nnU-Net's NoDA trainer mixed in, and
    every patch centred on a structure);
    the provenance says where the labels came from and which trainer ran."""
    images_only = tmp_path / "images-only"
    shutil.copytree(tiny_dataset / "imagesTr", images_only / "imagesTr")
    shutil.copy(tiny_dataset / "dataset.json", images_only / "dataset.json")
    out = tmp_path / "model"
    command = _command(images_only, out) + ["--labels", "original", "--epochs", "1"]
    command += ["--augmentation", "none", "--foreground-oversampling", "1", "--distill", "0.5"]
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **isolated_home}, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stages = {e.get("stage") for e in _events(result.stdout)}
    assert "label" in stages
    record = json.loads((out / "manifest.json").read_text())["finetune"]
    assert record["dataset"]["labels"].startswith("the original TS network's output")
    assert record["dataset"]["cases"] == 3
    assert record["augmentation"] == "none"
    assert record["trainer"].startswith("nnUNetTrainerTuckerNoDA ")
    assert record["foreground_oversampling"] == 1.0
    assert record["distillation"]["weight"] == 0.5
    (log,) = (out / "training").glob("training_log_*.txt")  # nnU-Net's log of the run
    assert "knowledge distillation: weight 0.5, teacher the original network" in log.read_text()
    trainer = json.loads((out / "training" / "trainer-settings.json").read_text())  # nnU-Net's
    assert float(trainer["oversample_foreground_percent"]) == 1.0
    assert "hostname" not in trainer
    plain = cli(*_command(images_only, tmp_path / "other")[1:])  # refused before any work
    assert plain.returncode == 1 and "has no labelsTr/ folder" in plain.stderr


def test_distillation_adds_the_divergence_from_the_original_to_nnunets_loss():
    """--distill W: nnU-Net's own loss (deep supervision and all) plus W × KL(original ‖
    compressed) over the classes at full resolution, averaged over voxels; zero where the two
    agree, and nnU-Net's loss alone where the trainer gave no teacher logits (validation)."""
    import torch
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from TuckerSegmentLib.ts.trainers.nnUNetTrainerTucker import TeacherLoss

    torch.manual_seed(0)
    dice = {"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}
    nnunet = DeepSupervisionWrapper(
        DC_and_CE_loss(dice, {}, 1, 1, None, MemoryEfficientSoftDiceLoss), [0.6, 0.4]
    )
    output = [torch.randn(2, 4, 8, 8, 8, requires_grad=True), torch.randn(2, 4, 4, 4, 4)]
    target = [torch.randint(0, 4, (2, 1, *o.shape[2:])).float() for o in output]
    plain = nnunet(output, target)
    loss = TeacherLoss(nnunet, 0.5)
    assert torch.equal(loss(output, target), plain)  # no teacher: validation
    loss.teacher_logits = output[0].detach() + 3.0  # the same probabilities
    assert torch.allclose(loss(output, target), plain, atol=1e-6)
    teacher = torch.randn(2, 4, 8, 8, 8)
    loss.teacher_logits = teacher
    p, log_q = teacher.softmax(1), output[0].log_softmax(1)
    divergence = (p * (p.log() - log_q)).sum(1).mean()
    combined = loss(output, target)
    assert torch.allclose(combined, plain + 0.5 * divergence, atol=1e-6)
    combined.backward()  # the gradient reaches the compressed network's output
    assert output[0].grad is not None and output[0].grad.abs().sum() > 0


def test_without_augmentation_the_trainer_trains_on_nnunets_validation_transforms():
    """--augmentation none is nnU-Net's own nnUNetTrainerNoDA (mixed in, not copied): training
    batches get exactly the validation transforms, and the Tucker trainer's network and
    optimizer stay."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from TuckerSegmentLib.ts.trainers.nnUNetTrainerTucker import (
        nnUNetTrainerTucker,
        nnUNetTrainerTuckerNoDA,
    )

    def steps(transform) -> list[str]:
        return [type(t).__name__ for t in transform.transforms]

    scales = [[1, 1, 1], [0.5, 0.5, 0.5]]
    training = {
        "patch_size": [64, 64, 64],
        "rotation_for_DA": (-0.5, 0.5),
        "deep_supervision_scales": scales,
        "mirror_axes": None,
        "do_dummy_2d_data_aug": False,
        "use_mask_for_norm": [False],
        "foreground_labels": [1, 2, 3],
    }
    plain = nnUNetTrainerTuckerNoDA.get_training_transforms(**training)
    validation = nnUNetTrainer.get_validation_transforms(scales, foreground_labels=[1, 2, 3])
    assert steps(plain) == steps(validation)
    augmented = nnUNetTrainerTucker.get_training_transforms(**training)
    assert "SpatialTransform" in steps(augmented) and "SpatialTransform" not in steps(plain)
    assert (
        nnUNetTrainerTuckerNoDA.build_network_architecture
        is nnUNetTrainerTucker.build_network_architecture
    )
    assert nnUNetTrainerTuckerNoDA.configure_optimizers is nnUNetTrainerTucker.configure_optimizers


def test_a_structurally_pruned_model_is_fine_tuned_as_it_is(
    tiny_dataset, tmp_path, isolated_home, cli
):
    """--start-from a `prune --structured` model: nnU-Net's trainer trains that smaller network
    (not a fresh decomposition); the result keeps its channels and its pruning record, loads,
    and has learned (its weights moved); a model of other weights is refused in one line. (The
    prunes and the refusal run in this process: a child process adds nothing to them.)"""
    from TuckerSegmentLib.storage.compressed_format import load_compressed

    env = {**os.environ, **isolated_home}
    pruned = tmp_path / "pruned"
    made = cli(
        *["prune", "--model", "3mm", "--weights-dir", MODELS, "--method", "random-widest"],
        *["--ratio", "0.3", "--structured", "-o", pruned],
    )
    assert made.returncode == 0, made.stderr
    out = tmp_path / "model"
    command = _command(tiny_dataset, out) + ["--start-from", str(pruned), "--epochs", "1"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    start_network, start = load_compressed(pruned)
    network, manifest = load_compressed(out)
    assert manifest.extra["prune"] == start.extra["prune"]  # the same structure, recorded
    assert manifest.extra["params"] == start.extra["params"]
    assert manifest.extra["finetune"]["started_from"] == str(pruned.resolve())
    before, after = start_network.state_dict(), network.state_dict()
    assert {k: v.shape for k, v in after.items()} == {k: v.shape for k, v in before.items()}
    assert any(not torch.equal(before[k], after[k]) for k in before)
    other = tmp_path / "other-pruned"
    six = cli(
        *["prune", "--model", "6mm", "--weights-dir", MODELS, "--method", "l2", "--ratio", "0.3"],
        *["-o", other],
    )
    assert six.returncode == 0, six.stderr
    refused = cli(*_command(tiny_dataset, tmp_path / "x")[1:], "--start-from", other)
    assert refused.returncode == 1
    assert "was not made from the installed 3mm model's weights" in refused.stderr


def test_stamp_ranks_and_drops_as_the_reference_does():
    """Scores normalised per layer, the lowest of the whole network chosen (never below the
    channel floor); the weakest layer gets the largest dropout probability, 0.1."""
    from TuckerSegmentLib.ts.trainers.nnUNetTrainerSTAMP import drop_probabilities, lowest_filters

    scores = {"a": torch.tensor([0.1, 0.9, 0.2, 0.8]), "b": torch.tensor([0.5, 0.5, 0.6])}
    assert lowest_filters(scores, 2, 1) == {"a": [0, 2]}
    assert lowest_filters(scores, 5, 3) == {"a": [0]}  # b has 3 channels: at the floor
    drop = drop_probabilities(scores)
    assert drop["a"] == pytest.approx(0.1) or drop["b"] == pytest.approx(0.1)
    weakest = min(scores, key=lambda n: float(scores[n].mean()))
    assert drop[weakest] == pytest.approx(0.1)
    assert all(0 < p <= 0.1 + 1e-12 for p in drop.values())


def test_stamp_stops_pruning_when_dice_falls_or_the_target_is_reached():
    """The two stops the issue names: validation Dice more than the margin below its best (first:
    a worse network stops even if not small enough), or the target share of parameters."""
    from TuckerSegmentLib.ts.trainers.nnUNetTrainerSTAMP import stop_reason

    assert stop_reason([], 1000, 1000, 0.5, 0.05) is None  # nothing validated yet
    assert stop_reason([0.80, 0.78], 900, 1000, 0.5, 0.05) is None  # 0.02 below: within
    assert "margin" in stop_reason([0.80, 0.74], 900, 1000, 0.5, 0.05)
    assert "margin" in stop_reason([0.60, 0.80, 0.74], 400, 1000, 0.5, 0.05)  # best, not first
    assert "target" in stop_reason([0.80, 0.80], 500, 1000, 0.5, 0.05)
    assert stop_reason([0.80, 0.80], 501, 1000, 0.5, 0.05) is None


def test_stamp_prunes_while_training_and_the_result_segments(
    tiny_dataset, tmp_path, isolated_home, phantom_files
):
    """`finetune --stamp`: nnU-Net's trainer trains the original network and removes the
    lowest-ranked filters for real after every epoch (Torch-Pruning); killed after a removal it
    resumes with the pruned shapes; the result is a smaller network in the compressed-model
    format with its shapes and STAMP record, loads with weights_only and segments through TS's
    pipeline."""
    from TuckerSegmentLib.storage.compressed_format import load_compressed
    from TuckerSegmentLib.ts.model_folder import open_model_folder

    env = {**os.environ, **isolated_home}
    out = tmp_path / "stamp"
    # a target one removal reaches: removed after epoch 0, killed, resumed; after epoch 1 the
    # target stops pruning (the margin 1 never does)
    command = _command(tiny_dataset, out) + ["--stamp", "99.9%", "--stamp-filters", "6"]
    command += ["--stamp-margin", "1", "--epochs", "2"]
    first = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    for line in first.stdout:  # killed in its second epoch: the first removal is saved
        event = json.loads(line)
        if event.get("kind") == "step" and event.get("epoch") == 1:
            first.send_signal(signal.SIGKILL)
            break
    first.wait(timeout=120)
    work = out.parent / f".{out.name}.finetune-work"
    assert list(work.rglob("checkpoint_latest.pth")) and not out.exists()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]  # resumed with the pruned shapes
    network, manifest = load_compressed(out)
    prune = manifest.extra["prune"]
    assert prune["method"] == "stamp" and prune["structured"]
    params = manifest.extra["params"]
    assert params["compressed"] < params["original"]
    from TuckerSegmentLib.engine.counting import count_network

    spec = manifest.spec
    assert params["compressed"] == count_network(network, spec.patch_size).params
    folder = next(MODELS.glob("Dataset297*/*__3d_fullres"))
    original = open_model_folder(folder).load_network("cpu")
    before = {n: m.out_channels for n, m in original.named_modules() if hasattr(m, "out_channels")}
    after = {n: m.out_channels for n, m in network.named_modules() if hasattr(m, "out_channels")}
    removed = sum(before[n] - after[n] for n in before)
    assert removed == 6  # one removal of the lowest six, then the target stopped it
    logs = "".join(p.read_text() for p in (out / "training").glob("training_log_*.txt"))
    assert "STAMP: removed 6 filters" in logs and "STAMP: target size reached" in logs
    assert "STAMP" in manifest.extra["finetune"]["trainer"]
    seg = tmp_path / "seg.nii.gz"
    ran = run_segment(phantom_files[0], seg, "--fast", "--compressed-model", str(out), env=env)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(seg.with_name("seg.json").read_text())["models"]["3mm"]["cache"] == "given"
