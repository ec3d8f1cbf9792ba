"""The Flat U-Net (Hassler 2024, the STAMP pruning thesis): the first stage's filter count in
every stage, as an nnU-Net plans variant users train with nnU-Net itself.

The thesis found that filters pruned at random from the widest stages did as well as STAMP, and
that a U-Net built flat from the start (equal filters everywhere) matched a regular U-Net's Dice
with more than 12× fewer parameters and ~35% fewer computations. Here a plans file gains a
configuration ``<configuration>_flat`` — a copy of the chosen one with every stage at the given
width (the first stage's by default) — so ``nnUNetv2_train DATASET 3d_fullres_flat FOLD -p
PLANS`` trains it with nnU-Net's own trainer. The copy keeps the parent's ``data_identifier``:
the data already preprocessed for the parent configuration is reused as it is.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from ..errors import TuckerSegmentError
from .network_spec import NetworkSpec

SUFFIX = "_flat"


def flat_features(features: list[int], width: int | None = None) -> list[int]:
    """Every stage at ``width`` (default: the first stage's)."""
    width = int(features[0] if width is None else width)
    if width < 1:
        raise TuckerSegmentError(f"--width must be a positive number of filters, not {width}")
    return [width] * len(features)


def flat_spec(spec: NetworkSpec, width: int | None = None) -> NetworkSpec:
    """The Flat U-Net of an architecture (for `stats --flat`)."""
    flat = copy.deepcopy(spec)
    flat.arch_kwargs["features_per_stage"] = flat_features(
        list(spec.arch_kwargs["features_per_stage"]), width
    )
    flat.name = f"{spec.name} flat"
    return flat


def flat_plans(
    plans: dict[str, Any],
    configuration: str = "3d_fullres",
    width: int | None = None,
    plans_name: str | None = None,
) -> tuple[dict[str, Any], str]:
    """``plans`` with the configuration ``<configuration>_flat`` added (new- and old-format
    nnU-Net plans); returns the plans and the new configuration's name."""
    configurations = plans.get("configurations")
    if not isinstance(configurations, dict) or configuration not in configurations:
        have = ", ".join(configurations) if isinstance(configurations, dict) else "none"
        raise TuckerSegmentError(
            f"the plans have no configuration {configuration} (they have: {have})"
        )
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    # the parent as nnU-Net resolves it (inherits_from; the old format TS ships becomes
    # nnU-Net's `architecture` entry), copied in full
    parent = PlansManager(copy.deepcopy(plans)).get_configuration(configuration).configuration
    flat = copy.deepcopy(parent)
    flat.pop("inherits_from", None)
    kwargs = flat.get("architecture", {}).get("arch_kwargs", {})
    if "features_per_stage" not in kwargs:
        raise TuckerSegmentError(f"configuration {configuration} names no U-Net filter counts")
    kwargs["features_per_stage"] = flat_features(list(kwargs["features_per_stage"]), width)
    result = copy.deepcopy(plans)
    name = configuration + SUFFIX
    result["configurations"][name] = flat
    if plans_name:
        result["plans_name"] = plans_name
    return result, name


def write_flat_plans(
    source: Path,
    output: Path,
    configuration: str = "3d_fullres",
    width: int | None = None,
) -> tuple[str, list[int]]:
    """Read ``source`` (never modified), write the plans with the flat configuration to
    ``output`` (its stem becomes the plans name nnU-Net's ``-p`` takes); returns the
    configuration's name and its filters per stage."""
    if output.resolve() == source.resolve():
        raise TuckerSegmentError("-o must be a new file: the plans given are never modified")
    if output.suffix != ".json" or not output.parent.is_dir():
        raise TuckerSegmentError(f"{output}: a .json file in an existing folder")
    try:
        plans = json.loads(source.read_text())
    except FileNotFoundError:
        raise TuckerSegmentError(f"plans not found: {source}") from None
    except (OSError, ValueError) as error:
        raise TuckerSegmentError(f"{source} is not an nnU-Net plans file: {error}") from None
    if not isinstance(plans, dict):
        raise TuckerSegmentError(f"{source} is not an nnU-Net plans file")
    flat, name = flat_plans(plans, configuration, width, plans_name=output.stem)
    partial = output.with_name(f".{output.name}.partial")
    partial.write_text(json.dumps(flat, indent=2))
    partial.replace(output)
    return name, flat["configurations"][name]["architecture"]["arch_kwargs"]["features_per_stage"]
