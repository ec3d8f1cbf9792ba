"""nnU-Net's trainer, fine-tuning a Tucker-compressed TotalSegmentator network.

Everything is nnU-Net's: preprocessing, data augmentation (without mirroring, like TS's own
trainers; or none, with nnU-Net's nnUNetTrainerNoDA mixed in), deep-supervision loss, the training loop, validation, checkpoints, DDP. This subclass
changes only what the paper changes: the
network is built by nnU-Net and loaded with the installed TS checkpoint, then every conv is
replaced by its Tucker-2 decomposition (the same engine as `compress`), and the optimizer and
schedule are the authors' (ClinicalDataScience/tucker-cnn, configs/finetune_baseline.yml:
AdamW, learning rate 1e-5, 50 epochs, nnU-Net's polynomial decay) unless the user overrides them.
With ``--distill`` (not the authors'), the original network runs beside it as a teacher and its
class probabilities join nnU-Net's loss (`TeacherLoss`).

The settings travel in the plans (``plans["tuckersegment_finetune"]``), which nnU-Net reads in
every process it starts, so nnU-Net's own `run_training` (with ``num_gpus``) can build this class
by name. Progress goes to stdout as JSON lines (rank 0 only); nnU-Net's console messages go to
its log file, so stdout stays machine-readable.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoDA import (
    nnUNetTrainerNoDA,
)
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import (
    nnUNetTrainerNoMirroring,
)
from torch.nn import functional as F

SETTINGS_KEY = "tuckersegment_finetune"


def finetune_settings(plans: dict) -> dict:
    """The fine-tuning settings written into the plans by ts/training.py."""
    try:
        return plans[SETTINGS_KEY]
    except KeyError:
        raise RuntimeError(
            f"nnUNetTrainerTucker needs plans with '{SETTINGS_KEY}' (run `tucker-segment finetune`)"
        ) from None


def checkpoint_network(
    plans_manager,  # noqa: ANN001
    configuration_manager,  # noqa: ANN001
    num_input_channels: int,
    num_output_channels: int,
    enable_deep_supervision: bool,
) -> torch.nn.Module:
    """nnU-Net's network for the plans, with the installed TS checkpoint's weights."""
    from TuckerSegmentLib.ts.model_folder import load_checkpoint_weights

    network = nnUNetTrainer.build_network_architecture(
        plans_manager,
        configuration_manager,
        num_input_channels,
        num_output_channels,
        enable_deep_supervision,
    )
    settings = finetune_settings(plans_manager.plans)
    network.load_state_dict(load_checkpoint_weights(Path(settings["base_checkpoint"])))
    return network


class TeacherLoss(torch.nn.Module):
    """nnU-Net's loss plus ``weight`` times the KL divergence from the original network's class
    probabilities to the compressed one's on the same patch (knowledge distillation at
    temperature 1, full resolution): hard labels, even the original's own, give one class per
    voxel; the probabilities also say how close the original came to the others (on the organs
    test expert, agreement over the structures the original segments 0.948 → 0.947 with it,
    0.935 without). The trainer sets ``teacher_logits`` for each training step; without them
    (validation) it is nnU-Net's loss."""

    def __init__(self, loss: torch.nn.Module, weight: float) -> None:
        super().__init__()
        self.loss = loss
        self.weight = weight
        self.teacher_logits: torch.Tensor | None = None

    def forward(self, output, target):  # noqa: ANN001, ANN201 - nnU-Net's loss signature
        loss = self.loss(output, target)
        if self.teacher_logits is None:
            return loss
        student = output[0] if isinstance(output, (list, tuple)) else output
        divergence = F.kl_div(
            F.log_softmax(student.float(), 1),
            F.log_softmax(self.teacher_logits.float(), 1),
            reduction="none",
            log_target=True,
        )
        return loss + self.weight * divergence.sum(1).mean()


class nnUNetTrainerTucker(nnUNetTrainerNoMirroring):  # noqa: N801 - nnU-Net's naming
    """TS's networks are trained without mirroring (its trainers are nnUNetTrainerNoMirroring
    and nnUNetTrainer_4000epochs_NoMirroring): left and right structures are different labels,
    and a mirrored patch would teach the network to swap them."""

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 - nnU-Net's signature
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        settings = finetune_settings(self.plans_manager.plans)
        self.initial_lr = float(settings["lr"])
        self.weight_decay = float(settings["weight_decay"])
        self.num_epochs = int(settings["epochs"])
        self.num_iterations_per_epoch = int(settings["iterations_per_epoch"])
        self.num_val_iterations_per_epoch = int(settings["val_iterations"])
        if settings.get("foreground_oversampling") is not None:  # nnU-Net's own knob (0.33)
            self.oversample_foreground_percent = float(settings["foreground_oversampling"])
        self.save_every = 1  # an interrupted run loses at most one epoch
        self._progress = settings.get("progress", "none")
        self._distill = float(settings.get("distill") or 0.0)
        self._teacher: torch.nn.Module | None = None
        self._steps_done = 0
        self._started = time.perf_counter()

    @staticmethod
    def build_network_architecture(
        plans_manager,  # noqa: ANN001
        configuration_manager,  # noqa: ANN001
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> torch.nn.Module:
        """nnU-Net's network with the TS checkpoint's weights, then Tucker-decomposed; or,
        with ``start_model``, that compressed model (planned ranks, pruned channels, an earlier
        fine-tuning) as it was saved."""
        from TuckerSegmentLib.engine.compress import CompressionSettings, compress_network

        settings = finetune_settings(plans_manager.plans)
        if settings.get("start_model"):
            from TuckerSegmentLib.storage.compressed_format import load_compressed

            started, _ = load_compressed(settings["start_model"])
            started.decoder.deep_supervision = enable_deep_supervision  # its heads all exist
            return started
        network = checkpoint_network(
            plans_manager,
            configuration_manager,
            num_input_channels,
            num_output_channels,
            enable_deep_supervision,
        )
        compression = CompressionSettings(**settings["compression"])
        compress_network(network, compression, decompose=True)
        return network

    def configure_optimizers(self):  # noqa: ANN201
        optimizer = torch.optim.AdamW(
            self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay
        )
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def _build_loss(self):  # noqa: ANN202 - nnU-Net's
        """nnU-Net's loss; with ``distill``, wrapped in `TeacherLoss` beside the original
        network (the installed checkpoint, never trained, no gradients) as the teacher."""
        loss = super()._build_loss()
        if self._distill <= 0:
            return loss
        self._teacher = checkpoint_network(
            self.plans_manager,
            self.configuration_manager,
            self.num_input_channels,
            self.label_manager.num_segmentation_heads,
            False,
        ).to(self.device)
        self._teacher.eval().requires_grad_(False)
        size = sum(p.numel() for p in self._teacher.parameters())
        self.print_to_log_file(
            f"knowledge distillation: weight {self._distill:g}, teacher the original network "
            f"({size} parameters)"
        )
        return TeacherLoss(loss, self._distill)

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written beside and renamed into place: a run killed while
        saving leaves the previous checkpoint to resume from, never a truncated one."""
        import os

        partial = f"{filename}.partial"
        super().save_checkpoint(partial)
        if self.local_rank == 0 and os.path.exists(partial):
            os.replace(partial, filename)

    def print_to_log_file(self, *args, also_print_to_console=True, add_timestamp=True):  # noqa: ANN001, ANN002, ANN201
        super().print_to_log_file(*args, also_print_to_console=False, add_timestamp=add_timestamp)

    def _report(self, kind: str, **values: float | int | str) -> None:
        if self.local_rank != 0 or self._progress == "none":
            return
        total = max(1, self.num_epochs * self.num_iterations_per_epoch)
        done = self.current_epoch * self.num_iterations_per_epoch + self._steps_done
        fraction = min(1.0, done / total)
        text = ", ".join(
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()
        )
        message = f"epoch {self.current_epoch + 1}/{self.num_epochs}: {text}"
        if self._progress == "json":
            line = {"stage": "finetune", "fraction": round(fraction, 4), "message": message}
            line.update(kind=kind, epoch=self.current_epoch, **values)
            stream = sys.__stdout__ or sys.stdout  # nnU-Net's own prints are redirected
            stream.write(json.dumps(line) + "\n")
            stream.flush()
        else:
            elapsed = time.perf_counter() - self._started
            sys.stderr.write(
                f"\r{100 * fraction:3.0f}% {message} [{elapsed:.0f}s]".ljust(100)[:120]
            )
            sys.stderr.flush()

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._steps_done = 0

    def train_step(self, batch: dict) -> dict:
        if self._teacher is not None:  # the teacher sees the same patch, as nnU-Net's step will
            data = batch["data"].to(self.device, non_blocking=True)
            cuda = self.device.type == "cuda"
            with torch.no_grad(), torch.autocast("cuda") if cuda else nullcontext():
                self.loss.teacher_logits = self._teacher(data)
        try:
            result = super().train_step(batch)
        finally:
            if self._teacher is not None:
                self.loss.teacher_logits = None
        self._steps_done += 1
        self._report("step", step=self._steps_done, loss=float(result["loss"]))
        return result

    def on_epoch_end(self) -> None:
        def logged(key: str) -> float:
            return float(self.logger.get_value(key, step=self.current_epoch))

        values = {
            "train_loss": logged("train_losses"),
            "val_loss": logged("val_losses"),
            "val_dice": logged("mean_fg_dice"),
            "val_dice_ema": logged("ema_fg_dice"),
        }
        self._steps_done = self.num_iterations_per_epoch
        self._report("epoch", **values)
        super().on_epoch_end()


class nnUNetTrainerTuckerNoDA(nnUNetTrainerTucker, nnUNetTrainerNoDA):  # noqa: N801
    """`--augmentation none`: nnU-Net's own nnUNetTrainerNoDA mixed in (its validation
    transforms for training, patches at the plans' size). For self-distillation on the images
    the model will segment, the augmented variants only take steps away from the target:
    3 mm test model at DF 0.3, 750 steps, agreement 0.87 with augmentation, 0.92 without."""
