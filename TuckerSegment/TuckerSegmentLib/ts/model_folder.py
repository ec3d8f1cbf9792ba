"""Read an nnU-Net model folder as TotalSegmentator installs it.

``DIR/plans.json``, ``DIR/dataset.json``, ``DIR/fold_0/checkpoint_final.pth``. TS ships
old-format plans; nnU-Net's ``PlansManager`` converts them.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import TuckerSegmentError
from .network_spec import NetworkSpec

CHECKPOINT = Path("fold_0") / "checkpoint_final.pth"
CONFIGURATION = "3d_fullres"


@dataclass
class ModelFolder:
    """A located, validated nnU-Net model folder."""

    path: Path
    spec: NetworkSpec

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    def checkpoint_sha256(self) -> str:
        return file_sha256(self.checkpoint)

    def load_network(self, device: str | torch.device = "cpu") -> nn.Module:
        """The network with the checkpoint's weights, in eval mode."""
        state = load_checkpoint_weights(self.checkpoint)
        # Built on the meta device and given the checkpoint's tensors: torch's random
        # initialization of 16-31 M parameters (0.2-0.5 s a load) would only be overwritten.
        network = self.spec.build("meta")
        try:
            network.load_state_dict(state, assign=True)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0]
            raise TuckerSegmentError(
                f"{self.checkpoint} does not fit the architecture in plans.json: {first}"
            ) from None
        if any(t.is_meta for t in (*network.parameters(), *network.buffers())):
            raise TuckerSegmentError(f"{self.checkpoint} lacks some of the network's tensors")
        return network.float().to(device).eval()  # as load_state_dict would have cast them


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise TuckerSegmentError(f"missing {path.name} in {path.parent}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TuckerSegmentError(f"{path} is not valid JSON: {error}") from None


def open_model_folder(path: str | Path, configuration: str | None = None) -> ModelFolder:
    """Validate ``path`` and derive the network's architecture from its plans and dataset, for
    its configuration: ``configuration``, else the one its name says (nnU-Net's
    ``Trainer__Plans__3d_fullres_high``; some TS tasks are not 3d_fullres), else 3d_fullres."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder = Path(path)
    if configuration is None:
        parts = folder.name.split("__")
        configuration = parts[-1] if len(parts) == 3 else CONFIGURATION
    if not folder.is_dir():
        raise TuckerSegmentError(f"model folder not found: {folder}")
    plans = _read_json(folder / "plans.json")
    dataset = _read_json(folder / "dataset.json")
    if not (folder / CHECKPOINT).is_file():
        raise TuckerSegmentError(f"missing {CHECKPOINT} in {folder}")
    try:
        manager = PlansManager(plans)
        config = manager.get_configuration(configuration)
        label_manager = manager.get_label_manager(dataset)
        in_channels = determine_num_input_channels(manager, config, dataset)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise TuckerSegmentError(
            f"{folder}: plans.json/dataset.json not usable: {error!r}"
        ) from None
    labels = {str(k): int(v) for k, v in dataset.get("labels", {}).items() if isinstance(v, int)}
    spec = NetworkSpec.from_configuration(
        config, in_channels, label_manager.num_segmentation_heads, name=folder.name, labels=labels
    )
    return ModelFolder(folder, spec)


def load_checkpoint_weights(path: Path) -> dict[str, torch.Tensor]:
    """The ``network_weights`` of an nnU-Net checkpoint.

    Tries ``weights_only=True``; nnU-Net's own checkpoints also hold training logs that the
    restricted unpickler refuses, in which case they are read the way nnU-Net's predictor reads
    them (only do this for checkpoints you trust, such as TS's official downloads).
    """
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            if "weights only load failed" not in str(error).lower():
                raise
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TuckerSegmentError(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise TuckerSegmentError(f"{path} is not an nnU-Net checkpoint (no 'network_weights')")
    return checkpoint["network_weights"]
