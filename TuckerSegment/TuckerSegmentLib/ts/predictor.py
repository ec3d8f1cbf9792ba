"""The predictor TotalSegmentator builds, running our network: an ``nnUNetPredictor`` subclass
injected through the one name TS builds its predictor with (``totalsegmentator.nnunet
.nnUNetPredictor``, see private_symbols.py). Everything else — TS's resampling, cropping, expert
merge, nnU-Net's preprocessing, sliding window and export — runs unchanged.

The subclass extends nnU-Net's public ``initialize_from_trained_model_folder``: after nnU-Net
has built the network and read every fold's parameters, ``choose`` may replace them with one
network per fold (compressed), and the network is wrapped for the chosen precision. nnU-Net
finds the trainer class by importing only its module (trainer_lookup.py). All folds
are kept: nnU-Net loads each fold's parameters into the network and averages the predictions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

from ..runtime.precision import PrecisionNetwork

# model folder, the folds' original parameters -> one network per fold, or None (the original)
Chooser = Callable[[Path, list[dict[str, Any]]], "list[nn.Module] | None"]
OnLoaded = Callable[[Path, PrecisionNetwork, Any], None]


def predictor_class(
    choose: Chooser,
    device_type: str,
    precision: str,
    on_loaded: OnLoaded | None = None,
    in_process: bool = False,
    threads: int | None = None,
) -> type:
    """An ``nnUNetPredictor`` subclass that runs ``choose``'s networks.

    ``in_process``: preprocess in this process instead of nnU-Net's worker (in_process.py).
    ``threads``: torch threads for the networks. TS sets every core on the CPU just before it
    builds the predictor; several runs side by side (a cohort's workers) would oversubscribe
    the cores, so a budget is set again here, after TS (which restores its own at the end)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    class SwappedNetworkPredictor(nnUNetPredictor):
        windows = 0  # sliding-window patches of the current image, for progress

        def initialize_from_trained_model_folder(
            self,
            model_training_output_dir: str,
            use_folds: Any,
            checkpoint_name: str = "checkpoint_final.pth",
        ) -> None:
            from .trainer_lookup import direct_trainer_lookup

            with direct_trainer_lookup():
                super().initialize_from_trained_model_folder(
                    model_training_output_dir, use_folds, checkpoint_name
                )
            if threads:
                import torch

                torch.set_num_threads(threads)
            folder = Path(model_training_output_dir)
            replacements = choose(folder, self.list_of_parameters)
            network = getattr(self.network, "_orig_mod", self.network)  # nnUNet_compile=1
            if replacements is None:
                states = self.list_of_parameters
            else:
                network, states = replacements[0], [n.state_dict() for n in replacements]
            wrapped = PrecisionNetwork(network, device_type, precision)
            self.network = wrapped
            # nnU-Net loads each entry into self.network before predicting with that fold
            self.list_of_parameters = [{f"network.{k}": v for k, v in s.items()} for s in states]
            if on_loaded is not None:
                on_loaded(folder, wrapped, self)

        def _internal_get_sliding_window_slicers(self, image_size: Any) -> Any:
            slicers = super()._internal_get_sliding_window_slicers(image_size)
            self.windows = len(slicers)
            return slicers

        if in_process:

            def _internal_get_data_iterator_from_lists_of_filenames(
                self,
                input_list_of_lists: Any,
                seg_from_prev_stage_files: Any,
                output_filenames_truncated: Any,
                num_processes: int,
            ) -> Iterator[dict]:
                from .in_process import preprocess_in_process

                return preprocess_in_process(
                    input_list_of_lists,
                    seg_from_prev_stage_files,
                    output_filenames_truncated,
                    self.plans_manager,
                    self.dataset_json,
                    self.configuration_manager,
                    self.verbose_preprocessing,
                )

    return SwappedNetworkPredictor


@contextmanager
def predictor_in_ts(cls: type) -> Iterator[None]:
    """Within the context, TotalSegmentator builds ``cls`` wherever it builds its predictor."""
    import totalsegmentator.nnunet as ts_nnunet

    original = ts_nnunet.nnUNetPredictor
    ts_nnunet.nnUNetPredictor = cls
    try:
        yield
    finally:
        ts_nnunet.nnUNetPredictor = original
