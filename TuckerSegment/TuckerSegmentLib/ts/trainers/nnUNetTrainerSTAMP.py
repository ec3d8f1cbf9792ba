"""STAMP (structured targeted activation-based model pruning, Dinsdale et al.) on nnU-Net's
trainer: filters are removed for real while the network trains, instead of a post-training cut.

What follows the reference code (nkdinsdale/STAMP, read at fbb1d50) and where this differs:

* **Ranking**: each filter's score is the L2 norm of its activation map over the spatial axes,
  averaged over the batch and summed over the batches since the last removal (the reference sums
  over one extra pass of the training data); scores are L2-normalised within each layer before
  the global comparison, as there. The activation is nnU-Net's block output (conv → instance
  norm → LeakyReLU): the reference takes ReLU(conv) before its batch norm, but an instance norm
  would make every channel's norm equal, so the score is read after the norm's affine scale.
* **Targeted dropout**: one channel-dropout probability per layer from the pooled ranks, as the
  reference computes it — filters sorted by score, the weakest given the largest rank value, a
  layer's mean rank value S_l, p_l = 0.1 · S_l / max S (initially 0.005 everywhere); applied to
  the block's output in training only (nnU-Net's blocks have no dropout module to swap).
* **Removal**: every ``every`` epochs the ``filters`` lowest-ranked filters of the whole network
  (never below ``min_channels`` in a layer) are removed with Torch-Pruning's dependency graph —
  the instance norm, the next convs' inputs, the decoder's skip concatenations and transposed
  convs shrink with them (engine/prune.py) — and the optimizer and schedule are made again (the
  reference makes a fresh Adam after every removal too). Transposed convs and the segmentation
  heads are never pruned, as there.
* **Stopping**: the reference prunes for a given number of iterations and stops the run by early
  stopping on validation loss. Here pruning stops when the network is at or below the target share
  of the original parameters, or when nnU-Net's validation pseudo-Dice (its moving average) falls
  more than ``margin`` below its best; the remaining epochs fine-tune the network as it is.
* Resume: the network is rebuilt to the channels of the checkpoint's own weights before nnU-Net
  loads them (a checkpoint carries its shapes: nothing beside it can fall out of step).
"""

from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoDA import (
    nnUNetTrainerNoDA,
)

from TuckerSegmentLib.ts.trainers.nnUNetTrainerTucker import (
    checkpoint_network,
    finetune_settings,
    nnUNetTrainerTucker,
)

INITIAL_DROP = 0.1 * 0.05  # the reference's starting probability
MAX_DROP = 0.10  # the reference's base probability for the weakest layer


def _plain(network: torch.nn.Module) -> torch.nn.Module:
    """The network itself, not nnU-Net's DDP or torch.compile wrapper."""
    network = getattr(network, "module", network)
    return getattr(network, "_orig_mod", network)


def prunable_blocks(network: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """nnU-Net's conv → norm → nonlinearity blocks of the encoder and decoder, by conv name."""
    return {
        f"{name}.conv": module
        for name, module in _plain(network).named_modules()
        if type(module).__name__ == "ConvDropoutNormReLU"
    }


def drop_probabilities(scores: dict[str, torch.Tensor]) -> dict[str, float]:
    """The reference's per-layer targeted-dropout probabilities from normalised scores."""
    pooled = sorted((float(v), name) for name, s in scores.items() for v in s)
    value = {}  # the weakest filter gets the largest value (N - 1)
    sums: dict[str, float] = dict.fromkeys(scores, 0.0)
    for k, (_, name) in enumerate(pooled):
        sums[name] += len(pooled) - 1 - k
    for name, s in scores.items():
        value[name] = sums[name] / max(1, len(s))
    top = max(value.values(), default=0.0)
    return {name: (MAX_DROP * v / top if top > 0 else INITIAL_DROP) for name, v in value.items()}


def lowest_filters(
    scores: dict[str, torch.Tensor], count: int, min_channels: int
) -> dict[str, list[int]]:
    """The ``count`` filters with the lowest layer-normalised scores, never leaving a layer with
    fewer than ``min_channels``."""
    pooled = sorted(
        (float(v), name, index) for name, s in scores.items() for index, v in enumerate(s)
    )
    chosen: dict[str, list[int]] = {}
    for _, name, index in pooled:
        if sum(len(v) for v in chosen.values()) >= count:
            break
        if len(scores[name]) - len(chosen.get(name, [])) > min_channels:
            chosen.setdefault(name, []).append(index)
    return chosen


def stop_reason(
    dice: list[float], params: int, original_params: int, target_share: float, margin: float
) -> str | None:
    """Why pruning stops now (None: remove the next filters): validation Dice (nnU-Net's EMA
    pseudo-Dice, per epoch) more than ``margin`` below its best, or the network at or below
    ``target_share`` of the original's parameters. Dice is checked first: a network that
    got worse stops even if it is not small enough yet."""
    if dice and max(dice) - dice[-1] > margin:
        return "validation Dice fell by more than the margin: stop"
    if params <= target_share * original_params:
        return "target size reached: pruning stops"
    return None


class nnUNetTrainerSTAMP(nnUNetTrainerTucker):  # noqa: N801 - nnU-Net's naming
    """STAMP's pruning during nnU-Net's training of the original TS network."""

    @staticmethod
    def build_network_architecture(
        plans_manager,  # noqa: ANN001
        configuration_manager,  # noqa: ANN001
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> torch.nn.Module:
        """nnU-Net's network with the TS checkpoint's weights: STAMP prunes the original."""
        return checkpoint_network(
            plans_manager,
            configuration_manager,
            num_input_channels,
            num_output_channels,
            enable_deep_supervision,
        )

    # --- ranking and targeted dropout, on every block's output -------------------------------

    def _attach(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = [
            block.register_forward_hook(self._block_output(name))
            for name, block in prunable_blocks(self.network).items()
        ]

    def _block_output(self, name: str):  # noqa: ANN202
        def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            if not module.training:
                return output
            with torch.no_grad():
                norms = output.detach().float().flatten(2).norm(dim=2).mean(dim=0).cpu()
                if name in self._scores and self._scores[name].shape == norms.shape:
                    self._scores[name] += norms
                else:
                    self._scores[name] = norms
            p = self._drop.get(name, INITIAL_DROP)
            if p <= 0:
                return output
            keep = torch.empty(output.shape[:2], device=output.device).bernoulli_(1 - p)
            return output * keep.view(*output.shape[:2], *([1] * (output.ndim - 2))) / (1 - p)

        return hook

    def on_train_start(self) -> None:
        """STAMP's settings (from the plans, like the Tucker trainer's) and a fresh ranking;
        nnU-Net's own __init__ signature stays untouched."""
        super().on_train_start()
        stamp = finetune_settings(self.plans_manager.plans)["stamp"]
        self._every = int(stamp["every"])
        self._filters = int(stamp["filters"])
        self._target_share = float(stamp["target_share"])
        self._margin = float(stamp["margin"])
        self._min_channels = int(stamp["min_channels"])
        self._original_params = int(stamp["original_params"])
        self._scores: dict[str, torch.Tensor] = {}
        self._drop: dict[str, float] = {}
        self._pruning = True
        self._hooks: list = []
        self._attach()

    def _params(self) -> int:
        return sum(p.numel() for p in _plain(self.network).parameters())

    def _normalised(self) -> dict[str, torch.Tensor]:
        return {name: s / max(float(s.norm()), 1e-12) for name, s in self._scores.items()}

    # --- removal every ``every`` epochs -----------------------------------------------------

    def on_epoch_end(self) -> None:
        """Remove filters at the end of every ``every``-th epoch, before nnU-Net's checkpoint,
        so a checkpoint always holds the network the next epoch trains."""
        finished = self.current_epoch + 1
        if self._pruning and finished % self._every == 0 and self._scores:
            self._prune_step()
        super().on_epoch_end()

    def _prune_step(self) -> None:
        dice = list(self.logger.get_value("ema_fg_dice", step=None) or [])
        reason = stop_reason(
            dice, self._params(), self._original_params, self._target_share, self._margin
        )
        if reason:
            self._pruning = False
            self.print_to_log_file(f"STAMP: {reason}")
            return
        self._remove(lowest_filters(self._normalised(), self._filters, self._min_channels))

    def _remove(self, chosen: dict[str, list[int]]) -> None:
        from TuckerSegmentLib.engine.prune import PrunedLayer, remove_channels

        if not chosen:
            self._pruning = False
            return
        network = _plain(self.network)
        modules = dict(network.named_modules())
        layers = [PrunedLayer(n, modules[n].out_channels, sorted(i)) for n, i in chosen.items()]
        self._drop = drop_probabilities(self._normalised())
        network.cpu()
        remove_channels(
            network,
            layers,
            self.num_input_channels,
            self.configuration_manager.pool_op_kernel_sizes,
        )
        network.to(self.device)
        self._scores = {}
        # AdamW made afresh for the new parameters (the reference makes a fresh Adam too); the
        # schedule sets each epoch's rate itself (nnU-Net steps it with the epoch number)
        self.optimizer, self.lr_scheduler = self.configure_optimizers()
        self.print_to_log_file(
            f"STAMP: removed {sum(len(i) for i in chosen.values())} filters; "
            f"{self._params():,} parameters"
        )

    # --- resuming with the pruned shapes ----------------------------------------------------

    def load_checkpoint(self, filename_or_checkpoint) -> None:  # noqa: ANN001
        from TuckerSegmentLib.engine.prune import reshape_modules, shapes_in_state

        if not self.was_initialized:
            self.initialize()
        checkpoint = filename_or_checkpoint
        if isinstance(checkpoint, str):  # read as nnU-Net reads it (which takes only a path)
            checkpoint = torch.load(checkpoint, map_location=self.device, weights_only=False)
        network = _plain(self.network)
        shapes = shapes_in_state(network, checkpoint["network_weights"])
        if shapes != shapes_in_state(network, network.state_dict()):
            reshape_modules(network, shapes)
            self.optimizer, self.lr_scheduler = self.configure_optimizers()
        super().load_checkpoint(filename_or_checkpoint)


class nnUNetTrainerSTAMPNoDA(nnUNetTrainerSTAMP, nnUNetTrainerNoDA):  # noqa: N801
    """STAMP with `--augmentation none` (nnU-Net's nnUNetTrainerNoDA mixed in)."""
