"""Agreement against compression for each method, on the user's own CTs.

For every method and share of parameters removed, the model is made (Tucker at the uniform DF
with that many parameters, Tucker with planned ranks, or a pruning baseline) and each image is
segmented through TS's pipeline with the original alongside (`segment --compare`; the original's
run is kept between the points of one image). The points hold the mean Dice and NSD with the
original over the structures present, and the parameters the model really has.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import TuckerSegmentError

METHODS = ("tucker", "plan", "l2", "random-widest")


@dataclass
class CurvePoint:
    method: str
    removed: float  # share of the model's parameters asked to be removed
    params: int
    params_original: int
    image: str
    mean_dice: float | None
    mean_nsd: float | None


def make_model(
    method: str, removed: float, model: str, model_folder: Path, work: Path, rank_floor: int
) -> Path:
    """The model for one point, as a `--compressed-model` folder under ``work``."""
    from ..engine.compress import CompressionSettings
    from ..engine.counting import count_network
    from ..engine.planner import plan_network, uniform_dfs_around
    from ..storage.decompose import compress_model_folder, write_compressed_model
    from ..storage.plan_file import plan_json, planned_model
    from ..storage.pruned import write_pruned_model
    from ..ts.model_folder import open_model_folder

    out = work / f"{model}-{method}-{removed:g}"
    if method in ("l2", "random-widest"):
        return write_pruned_model(model_folder, model, method, removed, 0, out).path
    folder = open_model_folder(model_folder)
    network = folder.load_network("cpu")
    spec = folder.spec
    budget = (1 - removed) * count_network(network, spec.patch_size, spec.input_channels).params
    if method == "tucker":
        (df, _), _ = uniform_dfs_around(spec, int(budget), rank_floor)
        result = compress_model_folder(
            model_folder, CompressionSettings(df=df, rank_floor=rank_floor)
        )
        result.manifest.extra["model"] = model
        return write_compressed_model(result, out)
    plan = plan_network(network, spec.patch_size, "params", budget, spec.input_channels, rank_floor)
    path = work / f"{model}-plan-{removed:g}.json"
    path.write_text(json.dumps(plan_json(plan, model, folder.checkpoint_sha256(), {})))
    return planned_model(path, model_folder)


def compression_curves(
    images: list[Path],
    model: str,
    methods: list[str],
    removed: list[float],
    work: Path,
    weights_dir: Path | None = None,
    rank_floor: int = 8,
    device: str = "cpu",
    made_models: dict[tuple[str, float], Path] | None = None,
    trained: list[Path] | None = None,
) -> list[CurvePoint]:
    """Every (method, share) point on every image, and a point for each ``trained`` model
    (fine-tuned, STAMP: `finetune`'s output) at the share it removed; ``made_models``, when
    given, receives the model folder of each (method, share)."""
    from . import warm_cache

    given = {trained_point(Path(t), model): Path(t) for t in trained or []}
    if not methods and not given:
        raise TuckerSegmentError(f"--methods: one or more of {', '.join(METHODS)}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise TuckerSegmentError(f"unknown method {unknown[0]}; choose from {', '.join(METHODS)}")
    if not removed or any(not 0 < r < 1 for r in removed):
        raise TuckerSegmentError("--removed: shares between 0 and 1, e.g. 0.5 0.75 0.85")
    from ..runtime.devices import resolve_device
    from .input_image import load_ct

    resolve_device(device)
    for image in images:  # each read and checked as `segment` would, before any model is made
        load_ct(image)
    folder = curve_model_folder(model, weights_dir)
    made = {
        (m, r): make_model(m, r, model, folder, work, rank_floor) for m in methods for r in removed
    }
    if made_models is not None:
        made_models.update(made)
    made.update(given)
    points = []
    warm_cache.keep_between_runs(True)  # the original's run, once per image
    try:
        for image in images:
            for (method, share), path in made.items():
                out = work / f"seg-{method.replace(' ', '-')}-{share:g}.nii.gz"
                info, dice, nsd = model_agreement(
                    Path(image), model, path, out, weights_dir, device
                )
                points.append(
                    CurvePoint(
                        method,
                        share,
                        int(info["params"]),
                        int(info.get("params_original", info["params"])),
                        str(image),
                        dice,
                        nsd,
                    )
                )
    finally:
        warm_cache.keep_between_runs(False)
    return points


def trained_point(path: Path, model: str) -> tuple[str, float]:
    """(method, share removed) of a given model: "stamp", or how it was made and "fine-tuned";
    one line when it is not a compressed model of ``model``."""
    from ..storage.compressed_format import read_manifest

    extra = read_manifest(path).extra
    if extra.get("model", model) != model:
        raise TuckerSegmentError(f"--trained {path}: a model of {extra['model']}, not {model}")
    prune = extra.get("prune") or {}
    if prune.get("method") == "stamp":
        label = "stamp"
    else:
        made = prune.get("method") or ("plan" if extra.get("plan") else "tucker")
        label = f"{made} fine-tuned" if extra.get("finetune") else f"{made} (given)"
    params = extra.get("params") or {}
    if not params.get("original"):
        raise TuckerSegmentError(f"--trained {path}: its manifest has no parameter counts")
    return label, round(1 - params["compressed"] / params["original"], 4)


def curve_models() -> dict:
    """The models a curve (or a calibration) segments with: the fast 3 mm model and the
    experts of TS's full mode, by name."""
    from ..ts.weights import total_models

    return {m.name: m for m in [*total_models(True), *total_models(False)]}


def curve_model_folder(model: str, weights_dir: Path | None = None) -> Path:
    """The installed folder of the fast 3 mm model or an expert; one line otherwise."""
    from ..ts.weights import weights_dir as default_weights

    models = curve_models()
    if model not in models:
        raise TuckerSegmentError(f"--model: one of {', '.join(models)}")
    folder = models[model].folder(Path(weights_dir) if weights_dir else default_weights())
    if not (folder / "fold_0" / "checkpoint_final.pth").is_file():
        raise TuckerSegmentError(f"the {model} model's TS weights are not installed ({folder})")
    return folder


def model_agreement(
    image: Path,
    model: str,
    compressed_model: Path,
    out: Path,
    weights_dir: Path | None = None,
    device: str = "cpu",
) -> tuple[dict, float | None, float | None]:
    """Segment ``image`` through TS's pipeline with ``compressed_model`` in place of ``model``
    (the other experts unchanged) beside the original: the run's model record and the mean
    Dice and NSD with the original over the model's own structures present."""
    from ..ts.model_folder import open_model_folder
    from ..ts.weights import total_models
    from .segment import SegmentOptions, segment

    fast = model == "3mm"
    others = {} if fast else {m.name: 1.0 for m in total_models(False) if m.name != model}
    result = segment(
        SegmentOptions(
            Path(image),
            out,
            fast=fast,
            expert_df=others,
            compressed_models=[compressed_model],
            compare=True,
            device=device,
            precision="fp32",
            weights_dir=Path(weights_dir) if weights_dir else None,
        )
    )
    labels = set(
        open_model_folder(curve_model_folder(model, weights_dir)).spec.labels
    )  # the other experts run unchanged
    dice, nsd = _model_agreement(Path(result["comparison"]["report"]), labels)
    return result["models"][model], dice, nsd


def _model_agreement(report: Path, labels: set[str]) -> tuple[float | None, float | None]:
    """Mean Dice and NSD over the compressed model's own structures present (in full mode the
    other experts run unchanged: their structures would only pull the mean towards 1)."""
    from .agreement import read_agreement_csv

    present = [s for s in read_agreement_csv(report.read_text()).present() if s.name in labels]
    if not present:
        return None, None
    return (
        sum(s.dice for s in present) / len(present),
        sum(s.nsd for s in present) / len(present),
    )


def write_curves(points: list[CurvePoint], stem: Path) -> tuple[Path, Path]:
    """``stem``.csv (every point) and ``stem``.png (mean over images: Dice and NSD against the
    share of parameters kept, one line per method)."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = stem.with_suffix(".csv")
    with open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(points[0])))
        writer.writeheader()
        writer.writerows(asdict(p) for p in points)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method in dict.fromkeys(p.method for p in points):
        mine = [p for p in points if p.method == method]
        shares = sorted({p.removed for p in mine})
        for metric, axis in (("mean_dice", axes[0]), ("mean_nsd", axes[1])):
            values, kept = [], []
            for share in shares:
                row = [getattr(p, metric) for p in mine if p.removed == share]
                row = [v for v in row if v is not None]
                if row:
                    values.append(sum(row) / len(row))
                    point = next(p for p in mine if p.removed == share)
                    kept.append(point.params / point.params_original)
            axis.plot(kept, values, marker="o", label=method)
    for axis, name in zip(
        axes, ("mean Dice with the original", "mean NSD with the original"), strict=True
    ):
        axis.set_xlabel("share of the parameters kept")
        axis.set_ylabel(name)
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle("agreement against compression, per method (zero-shot unless fine-tuned)")
    figure.tight_layout()
    picture = stem.with_suffix(".png")
    figure.savefig(picture, dpi=120)
    plt.close(figure)
    return table, picture
