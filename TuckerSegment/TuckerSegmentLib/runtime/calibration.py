"""Calibration inputs for post-training int8 quantization (NNCF): what the network sees.

NNCF sets each activation's int8 range from a few representative inputs. A TS network's input
is a CT after nnU-Net's CT normalization (clip to the training foreground's 0.5–99.5th
percentiles, then subtract its mean and divide by its standard deviation, from the model's
plans). The inputs here are the project's synthetic body phantoms (air, fat, muscle, organs,
bone: the HU range of a CT) at the model's spacing, normalized with the model's own numbers and
cut into patches of the network's size; deterministic, no patient data, no download.

A quantized model is cached under the key of its `CalibrationRecipe` (what the patches are made
from, and the source of the code that makes them), so a cached int8 model is reused without
generating a single phantom.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


def ct_normalization(plans: dict[str, Any]) -> tuple[float, float, float, float]:
    """(low, high, mean, std) of nnU-Net's CTNormalization for channel 0 of ``plans``."""
    props = plans["foreground_intensity_properties_per_channel"]["0"]
    return (
        float(props["percentile_00_5"]),
        float(props["percentile_99_5"]),
        float(props["mean"]),
        max(float(props["std"]), 1e-8),
    )


def phantom_patches(
    spacing: float,
    patch: list[int],
    normalization: tuple[float, float, float, float],
    count: int = 8,
    seed: int = 900,
) -> list[np.ndarray]:
    """``count`` normalized (1, 1, *patch) float32 patches from phantoms at ``spacing`` mm,
    centred on the body (where the structures are) with a deterministic jitter."""
    from ..demo.phantom import make_phantom

    low, high, mean, std = normalization
    rng = np.random.default_rng(seed)
    patches: list[np.ndarray] = []
    phantom_index = 0
    while len(patches) < count:
        ct = make_phantom(seed + phantom_index, spacing=spacing).ct.astype(np.float32)
        phantom_index += 1
        ct = (np.clip(ct, low, high) - mean) / std
        pads = [
            (max(0, (p - s + 1) // 2), max(0, p - s - (p - s + 1) // 2))
            for p, s in zip(patch, ct.shape, strict=True)
        ]
        ct = np.pad(ct, pads, mode="edge")
        for _ in range(4):
            starts = [
                int(np.clip((s - p) // 2 + rng.integers(-s // 4, s // 4 + 1), 0, s - p))
                for s, p in zip(ct.shape, patch, strict=True)
            ]
            window = tuple(slice(a, a + p) for a, p in zip(starts, patch, strict=True))
            patches.append(np.ascontiguousarray(ct[window][None, None]))
            if len(patches) == count:
                break
    return patches


def random_patches(
    in_channels: int, patch: list[int], count: int = 8, seed: int = 0
) -> list[np.ndarray]:
    """Unit-normal patches: for networks with random weights (the benchmark), where no input is
    more representative than another."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, in_channels, *patch), dtype=np.float32) for _ in range(count)]


@dataclass(frozen=True)
class CalibrationRecipe:
    """How a quantization's calibration patches are made: phantoms at a spacing with a model's
    CT normalization, or unit-normal patches. ``patches()`` makes them (only when quantizing);
    ``key()`` names them for the cache without making them."""

    kind: str  # "phantom" or "random"
    patch: tuple[int, ...]
    count: int = 8
    seed: int = 900
    spacing: float | None = None
    normalization: tuple[float, float, float, float] | None = None
    in_channels: int = 1

    def patches(self) -> list[np.ndarray]:
        if self.kind == "phantom":
            return phantom_patches(
                float(self.spacing), list(self.patch), self.normalization, self.count, self.seed
            )
        return random_patches(self.in_channels, list(self.patch), self.count, self.seed)

    def key(self) -> str:
        """SHA-256 of the recipe and of the code that turns it into patches (this file and the
        phantom's): a change to either makes a new quantization."""
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode())
        here = Path(__file__).resolve()
        for source in (here, here.parent.parent / "demo" / "phantom.py"):
            digest.update(source.read_bytes())
        return digest.hexdigest()


def model_calibration(model_folder: Any, patch: list[int], count: int = 8) -> CalibrationRecipe:
    """The phantom recipe for the TS model in ``model_folder`` (its plans' spacing and CT
    normalization)."""
    plans = json.loads((Path(model_folder) / "plans.json").read_text())
    parts = Path(model_folder).name.split("__")  # Trainer__Plans__configuration
    configuration = parts[-1] if len(parts) == 3 else "3d_fullres"
    spacing = float(min(plans["configurations"][configuration]["spacing"]))
    return CalibrationRecipe(
        "phantom", tuple(patch), count, spacing=spacing, normalization=ct_normalization(plans)
    )
