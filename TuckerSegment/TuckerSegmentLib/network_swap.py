"""Swap the network inside nnU-Net's predictor while TotalSegmentator runs.

TS builds an ``nnUNetPredictor`` and calls ``initialize_from_trained_model_folder`` for each
model; everything else (TS's resampling, cropping, expert merge, nnU-Net's preprocessing,
sliding window, export) runs unchanged. While this context is active, that call is followed by
replacing the predictor's network with the one ``choose`` returns for the model folder (the
original when it returns None), wrapped for the chosen precision.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from torch import nn

from .precision import PrecisionNetwork

Chooser = Callable[[Path], "nn.Module | None"]
OnLoaded = Callable[[Path, PrecisionNetwork, object], None]


@contextmanager
def swapped_networks(
    choose: Chooser, device_type: str, precision: str, on_loaded: OnLoaded | None = None
) -> Iterator[None]:
    """Within the context, nnU-Net predictors run ``choose(model_folder)`` or the original."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    original = nnUNetPredictor.initialize_from_trained_model_folder

    def initialize(
        self, model_training_output_dir, use_folds, checkpoint_name="checkpoint_final.pth"
    ):  # noqa: ANN001
        original(self, model_training_output_dir, use_folds, checkpoint_name)
        folder = Path(model_training_output_dir)
        replacement = choose(folder)
        network = self.network if replacement is None else replacement
        wrapped = PrecisionNetwork(network, device_type, precision)
        self.network = wrapped
        # nnU-Net loads these weights into self.network before predicting
        self.list_of_parameters = [wrapped.state_dict()]
        if on_loaded is not None:
            on_loaded(folder, wrapped, self)

    nnUNetPredictor.initialize_from_trained_model_folder = initialize
    try:
        yield
    finally:
        nnUNetPredictor.initialize_from_trained_model_folder = original
