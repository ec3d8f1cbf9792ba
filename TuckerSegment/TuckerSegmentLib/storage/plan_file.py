"""Rank plans on disk (`tucker-segment plan -o PLAN.json`) and the compressed models they make.

A plan names the TS model it was made for (name and checkpoint SHA-256), its budget and the
ranks of every factorized layer. `segment --plan PLAN.json` decomposes the model with exactly
those ranks into the cache (keyed by the plan's content, written atomically) and runs it like
any compressed model; a plan made for other weights is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..engine.compress import CompressionSettings, LayerRanks
from ..engine.planner import Plan
from ..errors import TuckerSegmentError

FORMAT = "tuckersegment-plan"
FORMAT_VERSION = 1


def plan_json(plan: Plan, model: str, checkpoint_sha256: str, extra: dict[str, Any]) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model,
        "source_checkpoint_sha256": checkpoint_sha256,
        "budget": {"kind": plan.budget_kind, "value": plan.budget},
        "params": {"planned": plan.params, "original": plan.params_original},
        "gflops_per_patch": {"planned": plan.gflops, "original": plan.gflops_original},
        "mean_explained_variance": plan.mean_explained_variance,
        "uniform_equivalent": {
            "df": plan.uniform_df,
            "mean_explained_variance": plan.uniform_mean_explained_variance,
        },
        "signals": plan.signals,
        "layers": [layer.to_json() for layer in plan.layers],
        **extra,
    }


def read_plan(path: Path) -> dict:
    """A plan file, checked; one line for anything else."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TuckerSegmentError(f"plan not found: {path}") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise TuckerSegmentError(f"{path} is not a plan (invalid JSON: {error})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise TuckerSegmentError(f"{path} is not a plan made by `tucker-segment plan`")
    if data.get("format_version") != FORMAT_VERSION:
        raise TuckerSegmentError(f"{path}: plan format version {data.get('format_version')}")
    try:
        [LayerRanks(**layer) for layer in data["layers"]]
        str(data["model"]), str(data["source_checkpoint_sha256"])
    except (KeyError, TypeError) as error:
        raise TuckerSegmentError(f"{path} is incomplete: {error!r}") from None
    return data


def plan_digest(plan: dict) -> str:
    """What the planned model depends on — the weights and the ranks — not the plan's budget,
    prediction or measurements (a plan saved after `--verify` reuses the model it verified)."""
    made_of = {k: plan[k] for k in ("model", "source_checkpoint_sha256", "layers")}
    return hashlib.sha256(json.dumps(made_of, sort_keys=True).encode()).hexdigest()


def planned_model(plan_path: Path, model_folder: Path, method: str = "hosvd") -> Path:
    """The compressed model of a plan for ``model_folder``: from the cache, or decomposed with
    the plan's ranks and stored (atomically). Returns its folder (a `--compressed-model`)."""
    from ..engine.compress import compress_layers
    from ..engine.counting import count_original_and_compressed
    from ..ts.model_folder import file_sha256, open_model_folder
    from .cache import cache_root
    from .compressed_format import Manifest, read_manifest, save_compressed

    plan = read_plan(plan_path)
    folder = open_model_folder(model_folder)
    source = folder.checkpoint_sha256()
    if plan["source_checkpoint_sha256"] != source:
        raise TuckerSegmentError(
            f"{plan_path} was made for other {plan['model']} weights (checkpoint "
            f"{plan['source_checkpoint_sha256'][:12]}…, installed {source[:12]}…); make it again"
        )
    path = cache_root() / "planned" / f"{plan_digest(plan)[:24]}-{method}"
    if (path / "manifest.json").is_file():
        try:
            manifest = read_manifest(path)
            if file_sha256(path / "weights.pt") == manifest.weights_sha256:
                return path
        except (TuckerSegmentError, OSError):
            pass  # damaged: rebuilt below
    layers = [LayerRanks(**layer) for layer in plan["layers"]]
    network = folder.load_network("cpu")
    compress_layers(network, layers, method)
    before, after = count_original_and_compressed(folder.spec, layers)
    nominal = min(1.0, max(1e-3, after.params / before.params))  # a record, not the ranks' rule
    manifest = Manifest(
        spec=folder.spec,
        settings=CompressionSettings(df=round(nominal, 4), method=method),
        layers=layers,
        source_sha256=source,
        extra={
            "model": plan["model"],
            "source_model": folder.path.name,
            "params": {"original": before.params, "compressed": after.params},
            "gflops_per_patch": {"original": before.gflops, "compressed": after.gflops},
            "plan": {k: v for k, v in plan.items() if k != "layers"},
        },
    )
    save_compressed(path, network.eval(), manifest)
    return path


def budget_plans(folders: dict[str, Path], share: float, rank_floor: int) -> dict[str, Path]:
    """Plans for ``share`` of the parameters of the networks in ``folders`` (name → model
    folder) together (`segment --max-params`, the panel's "fit my budget"): in full mode the five
    experts' layers compete for one budget (engine/planner.py:plan_networks), so an expert whose
    kernels compress well gives its share to one whose kernels don't; one network alone gets
    exactly `plan_network`'s plan. Kept in the cache by the models' checkpoints, share and rank
    floor, so a second run on the same weights plans nothing. Returns a plan file per model."""
    from ..engine.counting import count_network
    from ..engine.planner import plan_networks
    from ..ts.model_folder import open_model_folder
    from .atomic_dir import atomic_directory
    from .cache import cache_root

    if not folders:  # every model of the run was given (--plan/--compressed-model)
        return {}
    opened = {name: open_model_folder(folder) for name, folder in sorted(folders.items())}
    shas = {name: folder.checkpoint_sha256() for name, folder in opened.items()}
    key = hashlib.sha256(json.dumps([shas, f"{share:.6g}", rank_floor]).encode()).hexdigest()
    target = cache_root() / "budget-plans" / f"{key[:24]}-{share:.6g}-floor{rank_floor}"
    paths = {name: target / f"{name}.json" for name in opened}
    try:
        for path in paths.values():
            read_plan(path)
        return paths
    except TuckerSegmentError:
        pass  # not planned yet, or damaged: planned again below
    networks = {
        name: (folder.load_network("cpu"), folder.spec.patch_size, folder.spec.input_channels)
        for name, folder in opened.items()
    }
    total = sum(count_network(*entry).params for entry in networks.values())  # as `plan` counts
    plans = plan_networks(networks, "params", share * total, rank_floor)
    given = f"{share:.6g} of the parameters" + (
        f" of {', '.join(opened)}" if len(opened) > 1 else ""
    )
    with atomic_directory(target) as staging:
        for name, plan in plans.items():
            data = plan_json(
                plan, name, shas[name], {"rank_floor": rank_floor, "budget_given": given}
            )
            (staging / f"{name}.json").write_text(json.dumps(data, indent=2))
    return paths
