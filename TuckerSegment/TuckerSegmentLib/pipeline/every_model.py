"""Compress whichever network TotalSegmentator loads, for TS's own command line.

`segment` knows its models in advance; TS's command line decides at run time which ones an
option needs (the 6 mm crop model of ``--roi_subset``, ``--fastest``, ``--body_seg``, another
task's models). The predictor asks ``choose`` as each model folder loads: the model is named
from TS's task tables, its DF is ``--expert-df NAME=…``, else ``--df``, else its default
(engine/fidelity.py), and its compressed network comes from the cache (decomposed once).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.compress import CompressionSettings
from ..engine.fidelity import below_floor_warning, default_df
from ..engine.ranks import DEFAULT_RANK_FLOOR


@dataclass
class CompressionChoice:
    """The compression options of `tucker-totalsegmentator`."""

    df: float | None = None
    expert_df: dict[str, float] = field(default_factory=dict)
    rank_floor: int = DEFAULT_RANK_FLOOR
    method: str = "hosvd"
    policy: str = "default"
    runtime: str = "auto"


@dataclass
class LoadedModel:
    """What ran for one model folder TS loaded (for the one-line summary)."""

    name: str
    task_id: int | None
    df: float
    runtime: str
    cache: str
    warning: str | None = None
    network: Any = None  # a measured runtime choice (auto): what it chose is known after the run

    @property
    def ran(self) -> str:
        """The runtime that ran (auto's choice once made)."""
        return getattr(self.network, "chosen", None) or self.runtime


def on_loaded_for(loaded: list[LoadedModel]) -> Any:
    """The predictor's ``on_loaded`` callback, as `segment`'s (runtime_choice.start_model)."""

    def on_loaded(folder: Path, wrapped: Any, predictor: Any) -> None:
        from ..runtime.runtime_choice import start_model

        earlier = [model.network for model in loaded[:-1]]
        start_model(wrapped.network, earlier, lambda: predictor.windows)

    return on_loaded


def model_df(choice: CompressionChoice, name: str) -> float:
    explicit = choice.expert_df.get(name, choice.df)
    return default_df(name) if explicit is None else explicit


def compressing_chooser(
    choice: CompressionChoice, device: str, precision: str, loaded: list[LoadedModel]
) -> Any:
    """A predictor ``choose`` callback (ts/predictor.py) that compresses each model TS loads;
    ``loaded`` collects what ran."""
    from ..runtime.cpu_fusion import fuse
    from ..runtime.devices import device_kind
    from ..storage.cache import compressed_model
    from ..ts.tasks import identify_model_folder
    from .segment import PreparedModel, fold_networks

    def choose(folder: Path, fold_states: list[dict]) -> list | None:
        identity = identify_model_folder(folder)
        df = model_df(choice, identity.name)
        explicit = identity.name in choice.expert_df or choice.df is not None
        warning = below_floor_warning(identity.name, df) if explicit else None
        if df == 1.0:
            loaded.append(LoadedModel(identity.name, identity.task_id, 1.0, "original", "-"))
            return None
        settings = CompressionSettings(
            df=df, rank_floor=choice.rank_floor, method=choice.method, policy=choice.policy
        )
        cached = compressed_model(folder, settings, device_kind(device), precision)
        network = cached.network
        cpu_fp32 = device == "cpu" and precision == "fp32"
        if choice.runtime == "auto" and cpu_fp32:
            from ..runtime.runtime_choice import choose_runtime
            from ..storage.cache import cache_root

            manifest = cached.manifest
            runtime, network, _ = choose_runtime(
                network, manifest.spec, manifest.layers, cached.path, cache_root()
            )
        else:
            fused = choice.runtime == "fused" and cpu_fp32 and fuse(network)
            runtime = "fused" if fused else "eager"
        loaded.append(
            LoadedModel(
                identity.name,
                identity.task_id,
                df,
                runtime,
                "hit" if cached.hit else "miss",
                warning,
                network,
            )
        )
        prepared = PreparedModel(network, cached.manifest.layers, settings.method)
        return fold_networks(prepared, folder, fold_states)

    return choose
