"""Run TotalSegmentator privately: its usage statistics off, the user's TS settings untouched.

TS posts usage statistics to its server by default (``send_usage_stats`` in its config.json).
While TuckerSegment runs TS, TS reads a config of TuckerSegment's own (TOTALSEG_HOME_DIR) with
the upload off, and still finds the user's weights (TOTALSEG_WEIGHTS_PATH).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..storage.cache import cache_root

PRIVATE_CONFIG = {
    "totalseg_id": "tuckersegment-private",
    "send_usage_stats": False,
    "prediction_counter": 0,
    "statistics_disclaimer_shown": True,
}


def silence_known_warnings() -> None:
    """Warnings of TS's and nnU-Net's dependencies that a user can't act on, each by its exact
    message and origin (for every process that runs TS: the CLI, a cohort's workers)."""
    warnings.filterwarnings("ignore", message="Detected old nnU-Net plans format")
    # torch 2.14 warns when timm (imported by TS's dependencies) uses torch.jit.interface: not
    # ours to fix and nothing a user can act on; only that one message from that one place
    warnings.filterwarnings(
        "ignore",
        message=r"`torch\.jit\.interface` is deprecated",
        category=FutureWarning,
        module=r"torch\.jit\._script",
    )


def private_ts_home() -> Path:
    """TuckerSegment's own TS home with a config whose usage-statistics upload is off."""
    home = cache_root() / "totalsegmentator-home"
    home.mkdir(parents=True, exist_ok=True)
    config_file = home / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError):
        config = {}
    if (
        not isinstance(config, dict)
        or config.get("send_usage_stats") is not False
        or any(k not in config for k in PRIVATE_CONFIG)
    ):
        merged = {**PRIVATE_CONFIG, **(config if isinstance(config, dict) else {})}
        merged["send_usage_stats"] = False
        tmp = config_file.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(merged, indent=4))
        os.replace(tmp, config_file)
    return home


@contextmanager
def environment_variables(values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` (child processes inherit them); restore after."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def ts_environment(weights: Path) -> Iterator[Path]:
    """Point TS at ``weights`` and at the private config; restore the environment after."""
    home = private_ts_home()
    with environment_variables(
        {"TOTALSEG_HOME_DIR": str(home), "TOTALSEG_WEIGHTS_PATH": str(weights)}
    ):
        yield home
