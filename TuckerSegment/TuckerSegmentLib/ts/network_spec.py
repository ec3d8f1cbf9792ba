"""What it takes to build an nnU-Net network: class, kwargs, channels, patch size.

Built with nnU-Net's own ``get_network_from_plans``; the spec is JSON-serializable so a
compressed model's manifest can rebuild its network without the original model folder.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class NetworkSpec:
    """Architecture of one nnU-Net network (one TS model or expert)."""

    network_class_name: str
    arch_kwargs: dict[str, Any]
    arch_kwargs_req_import: list[str]
    input_channels: int
    num_classes: int
    patch_size: list[int]
    name: str = ""
    labels: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_configuration(
        cls,
        configuration: Any,
        input_channels: int,
        num_classes: int,
        name: str = "",
        labels: dict[str, int] | None = None,
    ) -> NetworkSpec:
        """From an nnU-Net ``ConfigurationManager`` (old-format plans are converted by it)."""
        return cls(
            network_class_name=configuration.network_arch_class_name,
            arch_kwargs=copy.deepcopy(dict(configuration.network_arch_init_kwargs)),
            arch_kwargs_req_import=list(configuration.network_arch_init_kwargs_req_import),
            input_channels=int(input_channels),
            num_classes=int(num_classes),
            patch_size=[int(p) for p in configuration.patch_size],
            name=name,
            labels=dict(labels or {}),
        )

    def build(self, device: str | torch.device = "cpu", seed: int | None = None) -> nn.Module:
        """The network in inference form (no deep supervision), on ``device``.

        With ``seed`` the weights are nnU-Net's He initialization from that seed; without it
        the weights are left as torch creates them (to be overwritten by a checkpoint).
        """
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

        def make() -> nn.Module:
            return get_network_from_plans(
                self.network_class_name,
                self.arch_kwargs,
                self.arch_kwargs_req_import,
                self.input_channels,
                self.num_classes,
                allow_init=seed is not None,
                deep_supervision=False,
            )

        if seed is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                with torch.device(device):
                    return make().eval()
        with torch.device(device):
            return make().eval()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetworkSpec:
        return cls(**data)
