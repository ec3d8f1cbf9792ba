"""`tucker-segment plan`: per-layer ranks for a parameter or GFLOP budget, without training.

tucker-segment plan --model 3mm --max-params 15% -o plan.json [--calibrate CT …] [--verify CT]
tucker-segment plan --model 3mm --min-agreement 0.95 --image ct.nii.gz -o plan.json
tucker-segment segment -i ct.nii.gz -o ct.seg.nrrd --fast --plan plan.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from ..engine.agreement_prediction import SIGNAL_NAMES
from ..engine.ranks import DEFAULT_RANK_FLOOR
from ..errors import TuckerSegmentError
from ..pipeline.image_complexity import MEASURE_NAMES


def budget_value(text: str, original: float) -> float:
    """``15%`` of ``original``, or an absolute number (``1.5e6``, ``1.5M``, ``800k``)."""
    raw = text.strip()
    try:
        if raw.endswith("%"):
            value = float(raw[:-1]) / 100 * original
        else:
            scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(raw[-1:].lower(), 1.0)
            value = float(raw[:-1] if scale != 1.0 else raw) * scale
    except ValueError:
        raise TuckerSegmentError(
            f"budget {text!r}: a number, or a percentage such as 15%"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise TuckerSegmentError(f"budget {text!r} must be positive")
    if value >= original:  # nothing to plan: every layer would stay as it is
        raise TuckerSegmentError(
            f"budget {text!r} is not below the original's {original:,.6g}: nothing to compress"
        )
    return value


def add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="choose per-layer Tucker ranks for a parameter or GFLOP budget (no training)",
        description="Measure how much of each conv's kernel energy every rank pair keeps (the "
        "paper's explained variance) and spend the budget where it keeps the most; prints what "
        "one DF for all layers would keep for the same spend. Run the plan with "
        "`segment --plan PLAN.json`.",
    )
    p.add_argument(
        "--model",
        required=True,
        help="3mm, 6mm, organs, vertebrae, cardiac, …; full = TS's five experts under one "
        "budget (-o names a folder: a plan per expert)",
    )
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--max-params", help="parameters of the whole network: 15%% or 1.5M")
    budget.add_argument("--max-gflops", help="GFLOPs per patch: 20%% or 150")
    budget.add_argument(
        "--max-latency-ms",
        type=float,
        help="milliseconds per patch on --device (each layer's conv and Tucker block are timed "
        "there once and cached; the planner prices ranks by those times)",
    )
    budget.add_argument(
        "--min-agreement",
        type=float,
        metavar="DICE",
        help="the smallest plan whose predicted mean Dice with the original is at least DICE "
        "(on every --image, adjusted for its complexity); needs a calibration (--calibrate)",
    )
    p.add_argument(
        "--image",
        nargs="+",
        metavar="CT",
        help="the CTs the plan is for: their complexity (one fast low-resolution pass each) is "
        "measured and printed, and each gets its own predicted agreement",
    )
    p.add_argument(
        "--device", default="cpu", help="for --max-latency-ms and the segmenting: cpu, cuda:N"
    )
    p.add_argument(
        "--verify",
        nargs="?",
        const="",
        metavar="CT",
        help="measure the plan: with a CT, segment it with the plan beside the original and "
        "print the mean Dice next to the predicted one; with --max-latency-ms, also time the "
        "planned network",
    )
    p.add_argument(
        "--calibrate",
        nargs="+",
        metavar="CT",
        help="first measure how agreement follows the ranks on these CTs (one-DF and planned "
        "models of several sizes beside the original; once per checkpoint, kept in the cache); "
        "plans then come with a predicted agreement",
    )
    p.add_argument(
        "--calibrate-removed",
        nargs="+",
        type=float,
        metavar="SHARE",
        help="with --calibrate: the shares of parameters removed to measure (default: "
        "0.5 0.7 0.8 0.85 0.9 0.92)",
    )
    p.add_argument("--rank-floor", type=int, default=DEFAULT_RANK_FLOOR)
    p.add_argument("--weights-dir", help="TS weights folder (default: where TS keeps them)")
    p.add_argument("-o", "--output", help="write the plan (JSON) here")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(run=run_plan)


JOINT = "full"  # `plan --model full`: the experts of TS's full mode under one budget
MIN_WEIGHT = 0.1  # an expert with none of its structures in the images still runs: its floor


def expert_weights(experts: dict[str, set[str]], present: list[frozenset[str]]) -> dict[str, float]:
    """How much each expert's kept variance counts in a joint plan: the share of its structures
    the low-resolution pass found, averaged over the images, never below MIN_WEIGHT (TS runs
    every expert on every CT, and what an expert's structures are absent from matters least)."""
    return {
        name: max(
            MIN_WEIGHT, sum(len(labels & found) / len(labels) for found in present) / len(present)
        )
        for name, labels in experts.items()
    }


def _run_joint_plan(
    args: argparse.Namespace, weights: Path | None, rank_floor: int, output: Path | None
) -> int:
    """`plan --model full`: one budget for the five experts, their layers competing for it
    (engine/planner.py:plan_networks), weighted by their structures in --image CTs."""
    import tempfile

    from ..engine.counting import count_network
    from ..engine.planner import plan_networks
    from ..storage.plan_file import plan_json
    from ..ts.model_folder import open_model_folder
    from ..ts.weights import total_models

    if args.max_params is None and args.max_gflops is None:
        raise TuckerSegmentError(
            "--model full plans the five experts for --max-params or --max-gflops; latency "
            "and agreement budgets are per model: plan one expert at a time"
        )
    if args.calibrate or args.verify is not None:
        raise TuckerSegmentError("--calibrate/--verify are per model: plan one expert at a time")
    if output is not None and output.exists() and not output.is_dir():
        raise TuckerSegmentError(f"-o {output}: --model full writes a folder (a plan per expert)")
    folders = {
        m.name: open_model_folder(model_folder(m.name, weights)) for m in total_models(False)
    }
    networks = {
        name: (folder.load_network("cpu"), folder.spec.patch_size, folder.spec.input_channels)
        for name, folder in folders.items()
    }
    kind = "params" if args.max_params else "gflops"
    totals = [count_network(*entry) for entry in networks.values()]
    total = sum(c.params if kind == "params" else c.gflops for c in totals)
    value = budget_value(args.max_params or args.max_gflops, total)
    gains = None
    if args.image:
        from ..pipeline.image_complexity_run import low_resolution_pass

        with tempfile.TemporaryDirectory(prefix="tuckersegment-complexity-") as work:
            present = [
                low_resolution_pass(Path(image), Path(work) / str(k), weights, args.device)[1]
                for k, image in enumerate(args.image)
            ]
        experts = {
            name: {label for label in folder.spec.labels if label != "background"}
            for name, folder in folders.items()
        }
        gains = expert_weights(experts, present)
    plans = plan_networks(networks, kind, value, rank_floor, gains)
    joint = {
        "models": list(plans),
        "budget": {"kind": kind, "value": value, "given": args.max_params or args.max_gflops},
        "weights": gains or {name: 1.0 for name in plans},
        "images": [Path(image).name for image in args.image or []],
    }
    data = {
        name: plan_json(
            plan,
            name,
            folders[name].checkpoint_sha256(),
            {"rank_floor": rank_floor, "budget_given": joint["budget"]["given"], "joint": joint},
        )
        for name, plan in plans.items()
    }
    if output is not None:
        output.mkdir(exist_ok=True)
        for name, entry in data.items():
            partial = output / f".{name}.json.part"
            partial.write_text(json.dumps(entry, indent=2) + "\n")
            partial.replace(output / f"{name}.json")
    if args.json:
        print(json.dumps({"joint": joint, "plans": data}, indent=2))
        return 0
    planned = sum(p.params for p in plans.values())
    original = sum(p.params_original for p in plans.values())
    for name, plan in plans.items():
        print(
            f"{name}: {plan.params:,} parameters ({plan.params / plan.params_original:.1%}), "
            f"{plan.gflops:.2f} GFLOPs per patch, mean explained variance "
            f"{plan.mean_explained_variance:.4f}, weight {joint['weights'][name]:.2f}"
        )
    print(
        f"the five experts: {planned:,} parameters ({planned / original:.1%} of {original:,})"
        + (f"; written to {output}/ (run with one --plan per expert)" if output else "")
    )
    return 0


def model_folder(name: str, weights: Path | None) -> Path:
    """The installed folder of one of TS's `total` models (3mm, 6mm or an expert)."""
    from ..ts.weights import fastest_model, total_models, weights_dir

    models = {m.name: m for m in [*total_models(True), fastest_model(), *total_models(False)]}
    if name not in models:
        raise TuckerSegmentError(f"unknown model {name!r}; choose from {', '.join(models)}")
    folder = models[name].folder(weights or weights_dir())
    if not (folder / "fold_0" / "checkpoint_final.pth").is_file():
        raise TuckerSegmentError(f"the {name} model's TS weights are not installed ({folder})")
    return folder


def run_plan(args: argparse.Namespace) -> int:
    from ..engine.counting import count_network
    from ..engine.planner import layer_spectra, plan_network
    from ..engine.ranks import check_rank_floor
    from ..pipeline.output_files import check_output_file, check_writable
    from ..storage.plan_file import plan_json
    from ..ts.model_folder import open_model_folder

    rank_floor = check_rank_floor(args.rank_floor)
    output = Path(args.output) if args.output else None
    weights = Path(args.weights_dir) if args.weights_dir else None
    images = [*(args.calibrate or []), *(args.image or []), *([args.verify] if args.verify else [])]
    for image in images:
        if not Path(image).exists():
            raise TuckerSegmentError(f"input not found: {image}")
    if output is not None and args.model == JOINT:  # a folder of plans, one per expert
        if any(output.exists() and Path(i).exists() and output.samefile(i) for i in images):
            raise TuckerSegmentError(f"-o {output} is an input of this command; choose another")
        check_writable(output / "plan.json" if output.is_dir() else output)
    elif output is not None:  # before any segmenting: a CT is never overwritten with JSON
        check_output_file(output, (".json",))
    if args.max_latency_ms is not None and args.max_latency_ms <= 0:
        raise TuckerSegmentError("--max-latency-ms: milliseconds per patch, above 0")
    if args.min_agreement is not None and not 0 < args.min_agreement < 1:
        raise TuckerSegmentError("--min-agreement: a mean Dice between 0 and 1, e.g. 0.95")
    if args.calibrate_removed and not all(0 < r < 1 for r in args.calibrate_removed):
        raise TuckerSegmentError("--calibrate-removed: shares between 0 and 1, e.g. 0.5 0.8 0.9")
    from ..pipeline.curves import curve_models

    if (args.calibrate or args.verify) and args.model not in curve_models():
        raise TuckerSegmentError(
            f"--calibrate/--verify CT: segmenting is for {', '.join(curve_models())}"
        )
    if args.model == JOINT:
        return _run_joint_plan(args, weights, rank_floor, output)
    folder = open_model_folder(model_folder(args.model, weights))
    if args.min_agreement is not None and not args.calibrate:  # before any segmenting
        from ..storage.calibration_file import find_calibration

        if find_calibration(folder.checkpoint_sha256(), folder.path) is None:
            raise TuckerSegmentError(
                "--min-agreement needs this checkpoint's agreement calibration: add --calibrate CT"
            )
    network = folder.load_network("cpu")
    spec = folder.spec
    original = count_network(network, spec.patch_size, spec.input_channels)
    kind = "params" if args.max_params or args.min_agreement is not None else "gflops"
    table = None
    if args.calibrate:
        _calibrate(args, weights, rank_floor)
    complexities = _complexities(args.image or [], weights, args.device)
    if args.min_agreement is not None:
        plan = _plan_for_agreement(network, folder, rank_floor, args.min_agreement, complexities)
    else:
        spectra = layer_spectra(network, spec.patch_size, spec.input_channels)
        if args.max_latency_ms is not None:  # each layer priced by its measured time here
            table = _latency_table(network, folder, spectra, args.device)
            kind, value = "ms", args.max_latency_ms
            spectra = table.attach(spectra)
        else:
            total = original.params if kind == "params" else original.gflops
            value = budget_value(args.max_params or args.max_gflops, total)
        plan = plan_network(
            network,
            spec.patch_size,
            kind,
            value,
            spec.input_channels,
            rank_floor,
            spectra,
            table.original_ms if table else None,
        )
    prediction = _prediction(folder, plan)
    extra = {
        "rank_floor": rank_floor,
        "budget_given": args.max_params
        or args.max_gflops
        or (
            f"{args.max_latency_ms:g} ms"
            if args.max_latency_ms is not None
            else f"predicted mean Dice ≥ {args.min_agreement:g}"
        ),
        "predicted_agreement": prediction.to_json() if prediction else None,
    }
    if complexities:
        extra["images"] = _image_predictions(folder, plan, complexities)
    if table is not None:
        extra["latency"] = {
            "device": args.device,
            "budget_ms": args.max_latency_ms,
            "predicted_ms": plan.milliseconds,
            "original_ms": table.original_ms,
            "all_blocks_ms": table.probe_ms,  # every layer at DF 0.3 ranks, timed whole
            "block_scale": table.block_scale,  # layers' block times scaled by this
            "layers": {  # measured: the conv, and its block at DF 0.3 ranks
                name: {"conv_ms": conv, "block_ms": block, "block_gflops": gflops}
                for name, (conv, block, gflops) in table.layers.items()
            },
        }
        if args.verify is not None:
            extra["latency"]["measured_ms"] = _measured_ms(network, folder, plan, args.device)
    data = plan_json(plan, args.model, folder.checkpoint_sha256(), extra)
    if args.verify:
        data["measured_agreement"] = _measured_agreement(data, args, weights)
    if output is not None:
        partial = output.with_name(f".{output.name}.part")
        partial.write_text(json.dumps(data, indent=2) + "\n")
        partial.replace(output)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(
        f"{args.model}: {plan.params:,} parameters ({plan.params / plan.params_original:.1%} of "
        f"{plan.params_original:,}), {plan.gflops:.2f} GFLOPs per patch "
        f"({plan.gflops / plan.gflops_original:.1%}); {len(plan.layers)} layers factorized, mean "
        f"explained variance {plan.mean_explained_variance:.4f} — one DF for all layers at the "
        f"same spend (DF {plan.uniform_df:g}) keeps {plan.uniform_mean_explained_variance:.4f}"
        + (f"; written to {output}" if output else ""),
        file=sys.stdout,
    )
    measured = data.get("measured_agreement")
    if prediction is not None:
        print(
            f"predicted mean Dice with the original: {prediction.mean_dice:.3f} "
            f"± {prediction.error:.3f} (calibration's leave-one-out error; "
            f"read off {SIGNAL_NAMES[prediction.signal]})"
            + ("" if prediction.inside_measured_range else " — outside the calibrated range")
            + (
                f"; measured on {Path(args.verify).name}: {measured:.3f}"
                if measured is not None
                else ""
            )
        )
    else:
        print(
            "no agreement calibration for this checkpoint: add --calibrate CT [CT …] (once) for "
            "a predicted agreement"
            + (
                f"; measured on {Path(args.verify).name}: {measured:.3f}"
                if measured is not None
                else ""
            )
        )
    for name, entry in data.get("images", {}).items():
        measures = ", ".join(
            f"{MEASURE_NAMES[m]} {entry['complexity'][m]:.3g}" for m in entry["complexity"]
        )
        guess = entry["predicted_agreement"]
        print(
            f"{name}: {measures}"
            + (
                f"; predicted mean Dice {guess['mean_dice']:.3f} ± {guess['error']:.3f}"
                + (
                    f" (adjusted for its {MEASURE_NAMES[guess['complexity_measure']]})"
                    if guess["complexity_measure"]
                    else f" (not adjusted: {entry['not_adjusted']})"
                )
                if guess
                else ""
            )
        )
    if table is not None:
        latency = data["latency"]
        measured = latency.get("measured_ms")
        scale = table.block_scale
        slower = sum(block * scale >= conv for conv, block, _ in table.layers.values())
        print(
            f"latency on {args.device}: {latency['predicted_ms']:.0f} ms per patch predicted "
            f"(budget {args.max_latency_ms:g} ms; original {table.original_ms:.0f} ms measured)"
            + (f", {measured:.0f} ms measured" if measured is not None else "")
            + (
                f"; {slower} of {len(table.layers)} layers' Tucker blocks were not faster than "
                "their convs here and keep them"
                if slower
                else ""
            )
        )
    return 0


def _calibrate(args: argparse.Namespace, weights: Path | None, rank_floor: int) -> None:
    import tempfile

    from ..pipeline.agreement_calibration import DEFAULT_REMOVED, measure_calibration
    from ..storage.calibration_file import save_calibration

    with tempfile.TemporaryDirectory(prefix="tuckersegment-calibrate-") as work:
        calibration = measure_calibration(
            [Path(i) for i in args.calibrate],
            args.model,
            Path(work),
            weights,
            rank_floor,
            tuple(args.calibrate_removed or DEFAULT_REMOVED),
            args.device,
        )
    where = save_calibration(calibration)
    print(
        f"calibrated on {len(calibration.images)} image(s), {len(calibration.points)} points: "
        f"{SIGNAL_NAMES[calibration.chosen_signal]} predicts the points left out within "
        f"{calibration.leave_one_out_error:.3f} mean Dice; saved to {where}"
    )


def _prediction(folder, plan):  # noqa: ANN001, ANN202
    from ..engine.agreement_prediction import predict
    from ..storage.calibration_file import find_calibration

    calibration = find_calibration(folder.checkpoint_sha256(), folder.path)
    return predict(calibration, plan.signals) if calibration is not None else None


def _complexities(images: list[str], weights: Path | None, device: str) -> dict[str, dict]:
    """Each --image's complexity measures (pipeline/image_complexity.py), by file name."""
    import tempfile

    from ..pipeline.image_complexity_run import image_complexity

    found: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="tuckersegment-complexity-") as work:
        for k, image in enumerate(images):
            found[Path(image).name] = image_complexity(
                Path(image), Path(work) / str(k), weights, device
            ).to_json()
    return found


def _image_predictions(folder, plan, complexities: dict[str, dict]) -> dict[str, dict]:  # noqa: ANN001
    """Per image: its complexity and the plan's predicted agreement on it."""
    from ..engine.agreement_prediction import predict
    from ..storage.calibration_file import find_calibration

    calibration = find_calibration(folder.checkpoint_sha256(), folder.path)
    entries = {}
    for name, complexity in complexities.items():
        guess = predict(calibration, plan.signals, complexity) if calibration else None
        entries[name] = {
            "complexity": complexity,
            "predicted_agreement": guess.to_json() if guess else None,
            "not_adjusted": (calibration.complexity or {}).get(
                "reason", "the calibration predates complexity: calibrate again"
            )
            if calibration and not (guess and guess.complexity_measure)
            else "",
        }
    return entries


def _plan_for_agreement(network, folder, rank_floor: int, target: float, complexities: dict):  # noqa: ANN001, ANN202
    """The smallest parameter budget whose plan is predicted to reach ``target`` on every
    image (on the calibration's images when none is given): a bisection over the budget,
    the prediction being monotone in the kept energy."""
    from ..engine.agreement_prediction import predict
    from ..engine.counting import count_network
    from ..engine.planner import layer_spectra, plan_network
    from ..storage.calibration_file import find_calibration

    calibration = find_calibration(folder.checkpoint_sha256(), folder.path)
    if calibration is None:
        raise TuckerSegmentError(
            "--min-agreement needs this checkpoint's agreement calibration: add --calibrate CT"
        )
    spec = folder.spec
    spectra = layer_spectra(network, spec.patch_size, spec.input_channels)
    total = count_network(network, spec.patch_size, spec.input_channels).params

    def attempt(share: float):  # noqa: ANN202
        try:
            plan = plan_network(
                network,
                spec.patch_size,
                "params",
                share * total,
                spec.input_channels,
                rank_floor,
                spectra,
            )
        except TuckerSegmentError:  # below the rank floor's smallest network
            return None
        guesses = [predict(calibration, plan.signals, c).mean_dice for c in complexities.values()]
        reached = min(guesses or [predict(calibration, plan.signals).mean_dice]) >= target
        return plan if reached else None

    best = attempt(1.0)
    if best is None:
        raise TuckerSegmentError(
            f"no plan is predicted to reach a mean Dice of {target:g}, not even the full network "
            "(the calibration's best point); lower --min-agreement"
        )
    low, high = 0.0, 1.0
    for _ in range(14):  # the share to 1e-4 of the parameters
        middle = (low + high) / 2
        found = attempt(middle)
        if found is None:
            low = middle
        else:
            high, best = middle, found
    return best


def _measured_agreement(plan: dict, args: argparse.Namespace, weights: Path | None) -> float:
    """Mean Dice with the original over the model's structures present on the --verify CT."""
    import tempfile

    from ..pipeline.curves import model_agreement
    from ..storage.plan_file import planned_model

    with tempfile.TemporaryDirectory(prefix="tuckersegment-verify-") as work:
        path = Path(work) / "plan.json"
        path.write_text(json.dumps(plan))
        model = planned_model(path, model_folder(args.model, weights))
        _, dice, _ = model_agreement(
            Path(args.verify), args.model, model, Path(work) / "seg.nii.gz", weights, args.device
        )
    if dice is None:
        raise TuckerSegmentError(
            f"the original {args.model} model finds none of its structures in {args.verify}"
        )
    return dice


def _latency_table(network, folder, spectra, device: str):  # noqa: ANN001, ANN202
    from ..runtime.devices import resolve_device
    from ..runtime.latency_model import latency_table
    from ..storage.cache import cache_root

    return latency_table(
        network,
        folder.spec,
        spectra,
        folder.checkpoint_sha256(),
        resolve_device(device),
        "fp32",
        cache_root() / "latency",
    )


def _measured_ms(network, folder, plan, device: str) -> float:  # noqa: ANN001
    import copy

    import torch

    from ..engine.compress import compress_layers
    from ..runtime.devices import resolve_device
    from ..runtime.latency_model import _median_ms

    device = resolve_device(device)
    planned = copy.deepcopy(network)
    compress_layers(planned, plan.layers)
    x = torch.randn(1, folder.spec.input_channels, *folder.spec.patch_size, device=device)
    return _median_ms(planned.to(device).eval(), x, device, "fp32")
