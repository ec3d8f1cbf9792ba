"""`tucker-segment plan`: per-layer ranks for a budget without training. The energy table is
exact, the counts are the real network's, budgets are met or refused in one line, and a plan
runs through TS's pipeline with `segment --plan`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import MODELS, run_cli
from TuckerSegmentLib.engine.compress import LayerRanks, compress_layers
from TuckerSegmentLib.engine.counting import count_network, count_original_and_compressed
from TuckerSegmentLib.engine.factorize import explained_variance, factorize
from TuckerSegmentLib.engine.planner import layer_spectra, plan_network
from TuckerSegmentLib.errors import TuckerSegmentError
from TuckerSegmentLib.ts.architectures import builtin_spec
from TuckerSegmentLib.ts.model_folder import open_model_folder

FOLDER_3MM = next(MODELS.glob("Dataset297*/*__3d_fullres"))


@pytest.fixture(scope="module")
def ts_3mm():
    """TS's full-size 3 mm architecture (seeded weights: counts and shapes are what matter)."""
    spec = builtin_spec("3mm")
    return spec, spec.build("cpu", seed=0).eval()


def test_the_energy_table_is_hosvds_explained_variance():
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(24, 40, 3, padding=1)
    spectrum = layer_spectra(torch.nn.Sequential(conv), [8, 8, 8], in_channels=24)[0]
    for rank_in, rank_out in ((3, 5), (24, 7), (10, 40), (24, 40)):
        factors = factorize(conv.weight, (rank_out, rank_in), "hosvd")  # modes: (out, in)
        assert spectrum.explained_variance(rank_in, rank_out) == pytest.approx(
            explained_variance(conv.weight, factors), abs=1e-9
        )


@pytest.fixture(scope="module")
def ts_organs():
    """TS's full-size 1.5 mm architecture (the organs expert's), seeded weights."""
    spec = builtin_spec("1.5mm", "organs")
    return spec, spec.build("cpu", seed=0).eval()


@pytest.mark.parametrize(
    "model, kind, share",
    [
        ("ts_3mm", "params", 0.15),
        ("ts_3mm", "params", 0.3),
        ("ts_3mm", "gflops", 0.3),
        ("ts_organs", "params", 0.15),
        ("ts_organs", "gflops", 0.2),
    ],
)
def test_a_plan_meets_its_budget_exactly_as_counted(model, kind, share, request):
    spec, network = request.getfixturevalue(model)
    original = count_network(network, spec.patch_size)
    budget = share * (original.params if kind == "params" else original.gflops)
    plan = plan_network(network, spec.patch_size, kind, budget)
    before, after = count_original_and_compressed(spec, plan.layers)
    assert (after.params, after.flops / 1e9) == (plan.params, pytest.approx(plan.gflops))
    assert (after.params if kind == "params" else after.gflops) <= budget
    assert (after.params if kind == "params" else after.gflops) > 0.9 * budget  # spent, not hoarded
    assert before.params == plan.params_original
    assert all(
        layer.rank_in >= min(8, layer.in_channels) and layer.rank_out >= min(8, layer.out_channels)
        for layer in plan.layers
    )
    assert plan.mean_explained_variance >= plan.uniform_mean_explained_variance


@pytest.mark.parametrize("kind, budget", [("params", 1000), ("gflops", 1.0)])
def test_an_impossible_budget_is_refused_in_one_line(ts_3mm, kind, budget):
    spec, network = ts_3mm
    with pytest.raises(TuckerSegmentError, match="below the smallest network these ranks allow"):
        plan_network(network, spec.patch_size, kind, budget)


def test_planned_layers_decompose_and_run():
    folder = open_model_folder(FOLDER_3MM)
    small = folder.load_network("cpu")
    plan = plan_network(small, folder.spec.patch_size, "params", 60_000)
    compress_layers(small, plan.layers)
    x = torch.randn(1, 1, *folder.spec.patch_size)
    with torch.no_grad():
        assert small(x).shape[1] == folder.spec.num_classes
    assert all(isinstance(layer, LayerRanks) for layer in plan.layers)


def test_plan_command_and_segment_with_the_plan(isolated_home, tmp_path, phantom_files):
    """The CLI writes a plan; `segment --plan` decomposes it once into the cache and runs it
    through TS's pipeline; a plan for another mode, a broken file and other weights are refused."""
    plan_path = tmp_path / "plan.json"
    common = ["--weights-dir", str(MODELS)]
    made = run_cli(
        "plan",
        "--model",
        "3mm",
        "--max-params",
        "15%",
        "-o",
        str(plan_path),
        *common,
        env=isolated_home,
    )
    assert made.returncode == 0, made.stderr
    assert "one DF for all layers at the same spend" in made.stdout
    plan = json.loads(plan_path.read_text())
    assert plan["params"]["planned"] <= 0.15 * plan["params"]["original"]
    out = tmp_path / "seg.nii.gz"
    env = {**isolated_home, "TOTALSEG_WEIGHTS_PATH": str(MODELS)}
    args = [
        "segment",
        "-i",
        str(phantom_files[0]),
        "--fast",
        "--device",
        "cpu",
        "--progress",
        "none",
    ]
    run = run_cli(*args, "-o", str(out), "--plan", str(plan_path), env=env)
    assert run.returncode == 0, run.stderr
    model = json.loads((tmp_path / "seg.json").read_text())["models"]["3mm"]
    assert model["params"] == plan["params"]["planned"]
    assert [[n, i, o] for n, i, o in model["ranks"]] == [
        [layer["name"], layer["rank_in"], layer["rank_out"]] for layer in plan["layers"]
    ]
    # `compress --plan`: the same model as a folder of its own (for --start-from, to share)
    folder = next(MODELS.glob("Dataset297_*/*__3d_fullres"))
    copied = tmp_path / "planned-model"
    made = run_cli(
        "compress",
        "--model-dir",
        str(folder),
        "--plan",
        str(plan_path),
        "-o",
        str(copied),
        env=isolated_home,
    )
    assert made.returncode == 0, made.stderr
    manifest = json.loads((copied / "manifest.json").read_text())
    assert manifest["params"]["compressed"] == plan["params"]["planned"]
    assert [[x["name"], x["rank_in"], x["rank_out"]] for x in manifest["layers"]] == [
        [layer["name"], layer["rank_in"], layer["rank_out"]] for layer in plan["layers"]
    ]
    # a damaged cache entry of the plan is rebuilt, never used
    entry = next((Path(isolated_home["TUCKERSEGMENT_CACHE"]) / "planned").iterdir())
    (entry / "weights.pt").write_bytes(b"damaged")
    again = run_cli(*args, "-o", str(tmp_path / "again.nii.gz"), "--plan", str(plan_path), env=env)
    assert again.returncode == 0, again.stderr
    full_args = [a for a in args if a != "--fast"]
    full = run_cli(*full_args, "-o", str(tmp_path / "f.nii.gz"), "--plan", str(plan_path), env=env)
    assert (
        full.returncode == 1
        and "is a plan for the 3mm model, not one of full mode's" in full.stderr
    )
    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    bad = run_cli(*args, "-o", str(tmp_path / "b.nii.gz"), "--plan", str(broken), env=env)
    assert bad.returncode == 1 and "is not a plan made by `tucker-segment plan`" in bad.stderr
    other = dict(plan, source_checkpoint_sha256="0" * 64)
    (tmp_path / "other.json").write_text(json.dumps(other))
    stale = run_cli(
        *args, "-o", str(tmp_path / "o.nii.gz"), "--plan", str(tmp_path / "other.json"), env=env
    )
    assert stale.returncode == 1 and "was made for other 3mm weights" in stale.stderr
    impossible = run_cli("plan", "--model", "3mm", "--max-params", "1%", *common, env=isolated_home)
    assert impossible.returncode == 1
    assert (
        impossible.stderr.strip().splitlines()[-1].startswith("tucker-segment: error: the budget")
    )


def test_report_draws_the_explained_variance_heatmap(isolated_home, tmp_path):
    """`report`: the heatmap PNG and the table of the DF's ranks and kept share per layer."""
    png = tmp_path / "ev.png"
    args = ["report", "--model", "3mm", "--df", "0.3", "--weights-dir", str(MODELS)]
    result = run_cli(*args, "-o", str(png), env=isolated_home)
    assert result.returncode == 0, result.stderr
    assert png.stat().st_size > 20_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    folder = open_model_folder(FOLDER_3MM)
    layers = [
        n
        for n, m in folder.load_network("cpu").named_modules()
        if isinstance(m, torch.nn.Conv3d | torch.nn.ConvTranspose3d)
        and any(k > 1 for k in m.kernel_size)
    ]
    lines = [
        line for line in result.stdout.splitlines() if line.split() and line.split()[0] in layers
    ]
    assert len(lines) == len(layers)
    kept = [float(line.split()[3]) for line in lines]
    assert all(0.0 < k <= 1.0 for k in kept)
    bad = run_cli(*args, "-o", str(tmp_path / "ev.jpg"), env=isolated_home)
    assert bad.returncode == 1 and "give a file name ending in .png" in bad.stderr


def test_a_layer_s_time_is_read_off_its_two_measured_points():
    from TuckerSegmentLib.engine.planner import LayerLatency

    faster = LayerLatency(conv_ms=10.0, block_ms=4.0, block_gflops=1.0)
    assert faster.milliseconds(3.0, 3.0, True) == 10.0  # full ranks: the original conv
    assert faster.milliseconds(2.0, 3.0, False) == pytest.approx(7.0)  # on the line
    assert faster.milliseconds(0.0, 3.0, False) == pytest.approx(1.0)  # below the probe
    slower = LayerLatency(conv_ms=10.0, block_ms=12.0, block_gflops=1.0)
    assert slower.milliseconds(0.1, 3.0, False) == 10.0  # no rank buys time here
    # a probe with no fewer FLOPs than the conv (few channels, ranks at the floor): its time
    # at every rank, not a line over a vanishing span (which priced ranks past any budget)
    degenerate = LayerLatency(conv_ms=10.0, block_ms=8.0, block_gflops=3.2)
    assert degenerate.milliseconds(1.0, 3.0, False) == 8.0
    assert degenerate.milliseconds(4.0, 3.0, False) == 8.0


def test_blocks_timed_alone_are_scaled_to_what_they_take_inside_the_network():
    """The layers' block times add up to the whole all-blocks network's time less what is not
    a conv (the original's time less its convs'); a layer made not faster by it keeps its conv."""
    from TuckerSegmentLib.engine.planner import LayerSpectrum
    from TuckerSegmentLib.runtime.latency_model import LatencyTable

    layers = {"a": [10.0, 4.0, 0.1], "b": [10.0, 9.0, 0.1]}  # conv ms, block ms, block GFLOPs
    table = LatencyTable("cpu", original_ms=50.0, probe_ms=45.0, layers=layers)
    assert table.block_scale == pytest.approx((45.0 - 30.0) / 13.0)
    spectra = [
        LayerSpectrum(n, "conv", 8, 8, [3, 3, 3], 1000, 1000, 1000, True, torch.ones(9, 9))
        for n in layers
    ]
    a, b = (s.latency for s in table.attach(spectra))
    assert a.block_ms == pytest.approx(4.0 * 15 / 13) and b.block_ms > b.conv_ms
    assert b.milliseconds(0.01, 0.2, False) == 10.0  # b's block is not faster inside: its conv
    flat = LatencyTable("cpu", original_ms=50.0, probe_ms=20.0, layers=layers)
    assert flat.block_scale == 1.0  # the sums can't say (a probe faster than the non-convs)


def test_a_latency_plan_buys_time_only_where_blocks_are_faster():
    """Each layer priced by its own measured times: a layer whose block was not faster keeps
    its conv (however tight the budget), the predicted time meets the budget, and a budget
    below what the rank floor allows is refused in one line."""
    from TuckerSegmentLib.engine.planner import LayerLatency, layer_spectra

    folder = open_model_folder(FOLDER_3MM)
    network = folder.load_network("cpu")
    spec = folder.spec
    spectra = layer_spectra(network, spec.patch_size)
    slow = {s.name for s in spectra[::2]}  # every other layer: its block not faster here
    for s in spectra:
        full = s.flops(s.in_channels, s.out_channels) / 1e9
        block = 12.0 if s.name in slow else 2.0
        s.latency = LayerLatency(conv_ms=10.0, block_ms=block, block_gflops=full / 10)
    original_ms = 100.0 + 10.0 * len(spectra)  # 100 ms outside the factorizable convs
    budget = original_ms - 4.0 * (len(spectra) - len(slow))
    plan = plan_network(
        network, spec.patch_size, "ms", budget, spectra=spectra, original_ms=original_ms
    )
    assert plan.milliseconds <= budget
    assert {layer.name for layer in plan.layers}.isdisjoint(slow)
    assert len(plan.layers) >= (len(spectra) - len(slow)) // 2  # the time bought where it is
    with pytest.raises(TuckerSegmentError, match=r"ms per patch\) is below the smallest network"):
        plan_network(network, spec.patch_size, "ms", 90.0, spectra=spectra, original_ms=original_ms)
    # with time to spare every layer keeps its conv, a probe without FLOP savings included
    middle = spectra[len(spectra) // 2]
    full = middle.flops(middle.in_channels, middle.out_channels) / 1e9
    middle.latency = LayerLatency(conv_ms=10.0, block_ms=8.0, block_gflops=full)
    roomy = plan_network(
        network, spec.patch_size, "ms", 1e9, spectra=spectra, original_ms=original_ms
    )
    assert roomy.layers == [] and roomy.milliseconds == pytest.approx(original_ms)


def test_plan_for_a_latency_budget_times_each_layer_once_and_verifies(isolated_home, cli):
    """`plan --max-latency-ms` on the 3 mm test model: every factorizable conv and its block are
    timed on this machine once (cached; a second plan times nothing), the plan's predicted time
    meets the budget, --verify times the planned network too; bad budgets are refused."""
    args = ["plan", "--model", "3mm", "--weights-dir", str(MODELS), "--json"]
    first = cli(*args, "--max-latency-ms", "1e9")
    assert first.returncode == 0, first.stderr
    latency = json.loads(first.stdout)["latency"]
    folder = open_model_folder(FOLDER_3MM)
    spectra = layer_spectra(folder.load_network("cpu"), folder.spec.patch_size)
    assert set(latency["layers"]) == {s.name for s in spectra}
    assert all(v["conv_ms"] > 0 and v["block_ms"] > 0 for v in latency["layers"].values())
    assert latency["all_blocks_ms"] > 0 and latency["block_scale"] > 0
    assert latency["predicted_ms"] == pytest.approx(latency["original_ms"])  # nothing to buy
    (table,) = (Path(isolated_home["TUCKERSEGMENT_CACHE"]) / "latency").glob("*.json")
    made = table.stat().st_mtime_ns
    budget = f"{latency['original_ms']:.6f}"
    again = cli(*args, "--verify", "--max-latency-ms", budget)
    assert again.returncode == 0, again.stderr
    planned = json.loads(again.stdout)["latency"]
    assert planned["predicted_ms"] <= float(budget) and planned["measured_ms"] > 0
    assert table.stat().st_mtime_ns == made  # read from the cache, not timed again
    too_fast = cli(*args, "--max-latency-ms", "0.001")
    assert too_fast.returncode == 1 and "below the smallest network" in too_fast.stderr
    zero = cli(*args, "--max-latency-ms", "0")
    assert zero.returncode == 1 and "above 0" in zero.stderr


def test_a_model_folder_of_another_configuration_is_read_as_that_one(tmp_path):
    """Some TS tasks run 3d_fullres_high: the folder's name says which configuration to read."""
    import shutil

    target = tmp_path / "Dataset999_x" / "nnUNetTrainer__nnUNetPlans__3d_fullres_high"
    shutil.copytree(FOLDER_3MM, target)
    plans = json.loads((target / "plans.json").read_text())
    high = json.loads(json.dumps(plans["configurations"]["3d_fullres"]))
    high["patch_size"] = [32, 32, 32]
    plans["configurations"]["3d_fullres_high"] = high
    (target / "plans.json").write_text(json.dumps(plans))
    assert open_model_folder(target).spec.patch_size == [32, 32, 32]
    assert open_model_folder(FOLDER_3MM).spec.patch_size != [32, 32, 32]


def _point(dice: float, **signals: float):
    from TuckerSegmentLib.engine.agreement_prediction import CalibrationPoint

    return CalibrationPoint("tucker", 0.5, 1000, dice, signals)


def test_the_prediction_uses_the_signal_that_predicts_points_left_out_best():
    from TuckerSegmentLib.engine.agreement_prediction import calibrate, predict

    # agreement follows neg_error_sum exactly; the mean energy is scrambled; the minimum flat
    points = [
        _point(d, neg_error_sum=e, mean_explained_variance=m, min_explained_variance=0.5)
        for d, e, m in ((0.2, -4.0, 0.9), (0.5, -3.0, 0.6), (0.7, -2.0, 0.95), (0.9, -1.0, 0.7))
    ]
    calibration = calibrate("3mm", "0" * 64, 8, ["a.nii.gz"], points)
    assert calibration.chosen_signal == "neg_error_sum"
    assert calibration.errors["neg_error_sum"] < calibration.errors["mean_explained_variance"]
    inside = predict(calibration, {"neg_error_sum": -2.5})
    assert inside.mean_dice == pytest.approx(0.6) and inside.inside_measured_range
    beyond = predict(calibration, {"neg_error_sum": -6.0})
    assert beyond.mean_dice == pytest.approx(0.2) and not beyond.inside_measured_range
    # a non-monotone measurement is fitted monotone (pooled), never predicting a rise backwards
    bumpy = calibrate(
        "3mm",
        "0" * 64,
        8,
        ["a"],
        [
            _point(d, neg_error_sum=e, mean_explained_variance=e, min_explained_variance=e)
            for d, e in ((0.3, -3.0), (0.6, -2.0), (0.5, -1.5), (0.9, -1.0))
        ],
    )
    from TuckerSegmentLib.engine.agreement_prediction import SIGNALS

    assert predict(bumpy, dict.fromkeys(SIGNALS, -1.75)).mean_dice == pytest.approx(0.55)
    with pytest.raises(TuckerSegmentError, match="at least three"):
        calibrate("3mm", "0" * 64, 8, ["a"], points[:2])


def test_a_calibration_is_found_for_its_own_checkpoint_only(tmp_path, monkeypatch):
    from TuckerSegmentLib.engine.agreement_prediction import calibrate
    from TuckerSegmentLib.storage.calibration_file import (
        SHIPPED_NAME,
        cached_calibration_path,
        find_calibration,
        save_calibration,
    )

    monkeypatch.setenv("TUCKERSEGMENT_CACHE", str(tmp_path / "cache"))
    points = [
        _point(
            0.1 * k,
            neg_error_sum=-k,
            mean_explained_variance=0.1 * k,
            min_explained_variance=0.1 * k,
        )
        for k in (1, 2, 3)
    ]
    mine = calibrate("3mm", "a" * 64, 8, ["ct.nii.gz"], points)
    folder = tmp_path / "model"
    folder.mkdir()
    assert find_calibration("a" * 64, folder) is None
    save_calibration(mine, folder / SHIPPED_NAME)  # shipped beside the model folder
    assert find_calibration("a" * 64, folder) == mine
    assert find_calibration("b" * 64, folder) is None  # other weights
    cached = save_calibration(calibrate("3mm", "a" * 64, 4, ["other.nii.gz"], points))
    assert cached == cached_calibration_path("a" * 64)
    assert find_calibration("a" * 64, folder).images == ["other.nii.gz"]  # the user's own first
    cached.write_text("{damaged")
    assert find_calibration("a" * 64, folder) == mine


def test_plan_calibrates_predicts_and_verifies_on_a_ct(isolated_home, tmp_path, phantom_files):
    """`--calibrate CT` measures one-DF and planned models beside the original through TS's
    pipeline, keeps the calibration in the cache; the plan carries a prediction with its error,
    `--verify CT` the measured mean Dice; a later plan predicts without segmenting."""
    ct = str(phantom_files[0])
    common = ["--model", "3mm", "--weights-dir", str(MODELS)]
    plan_path = tmp_path / "plan.json"
    made = run_cli(
        "plan",
        *common,
        "--max-params",
        "20%",
        "--calibrate",
        ct,
        "--calibrate-removed",
        "0.5",
        "0.8",
        "--verify",
        ct,
        "-o",
        str(plan_path),
        env=isolated_home,
    )
    assert made.returncode == 0, made.stderr
    assert "calibrated on 1 image(s), 4 points" in made.stdout
    assert "predicted mean Dice with the original:" in made.stdout
    assert "measured on ct.nii.gz:" in made.stdout
    plan = json.loads(plan_path.read_text())
    predicted, measured = plan["predicted_agreement"], plan["measured_agreement"]
    assert 0 <= predicted["mean_dice"] <= 1 and 0 <= measured <= 1
    assert predicted["signal"] in plan["signals"]
    kept = Path(isolated_home["TUCKERSEGMENT_CACHE"]) / "agreement-calibration"
    calibration = json.loads((kept / f"{plan['source_checkpoint_sha256']}.json").read_text())
    assert {(p["method"], p["removed"]) for p in calibration["points"]} == {
        ("tucker", 0.5),
        ("tucker", 0.8),
        ("plan", 0.5),
        ("plan", 0.8),
    }
    # at the same parameter share the plan keeps more energy and agrees at least as well
    by = {(p["method"], p["removed"]): p for p in calibration["points"]}
    for share in (0.5, 0.8):
        assert (
            by["plan", share]["signals"]["mean_explained_variance"]
            > (by["tucker", share]["signals"]["mean_explained_variance"])
        )
    again = run_cli("plan", *common, "--max-params", "30%", "--json", env=isolated_home)
    assert again.returncode == 0, again.stderr
    thirty = json.loads(again.stdout)
    assert thirty["predicted_agreement"]["error"] == pytest.approx(
        calibration["leave_one_out_error"]
    )
    # the calibration keeps each image's Dice per point and its complexity (one 6 mm pass)
    assert set(calibration["image_complexity"]) == {"ct.nii.gz"}
    assert all(set(p["image_dice"]) == {"ct.nii.gz"} for p in calibration["points"])
    assert "≥ 3" in calibration["complexity"]["reason"]  # one image: no complexity mapping
    # the smallest plan predicted to reach what the 30 % plan reaches, for this CT
    target = thirty["predicted_agreement"]["mean_dice"] - 1e-9
    smallest = run_cli(
        "plan",
        *common,
        "--min-agreement",
        f"{target!r}",
        "--image",
        ct,
        "--json",
        env=isolated_home,
    )
    assert smallest.returncode == 0, smallest.stderr
    found = json.loads(smallest.stdout)
    assert found["predicted_agreement"]["mean_dice"] >= target
    assert found["params"]["planned"] <= thirty["params"]["planned"] * 1.001  # 30 % qualifies
    image = found["images"]["ct.nii.gz"]
    assert set(image["complexity"]) == {
        "foreground_fraction",
        "structures_present",
        "boundary_density",
        "body_entropy_bits",
    }
    assert image["complexity"]["structures_present"] >= 1
    assert 0 < image["complexity"]["foreground_fraction"] <= 1
    assert image["predicted_agreement"]["complexity_measure"] == ""
    assert "≥ 3" in image["not_adjusted"]
    printed = run_cli("plan", *common, "--max-params", "30%", "--image", ct, env=isolated_home)
    assert printed.returncode == 0, printed.stderr
    assert "ct.nii.gz: labelled share of the body" in printed.stdout
    assert "(not adjusted: calibrated on 1 image(s)" in printed.stdout
    uncalibrated = {**isolated_home, "TUCKERSEGMENT_CACHE": str(tmp_path / "empty-cache")}
    needs = run_cli("plan", *common, "--min-agreement", "0.9", env=uncalibrated)
    assert needs.returncode == 1 and "needs this checkpoint's agreement calibration" in needs.stderr
    bad = run_cli("plan", *common, "--min-agreement", "1.5", env=isolated_home)
    assert bad.returncode == 1 and "--min-agreement: a mean Dice between 0 and 1" in bad.stderr
    missing = run_cli(
        "plan",
        *common,
        "--max-params",
        "30%",
        "--verify",
        str(tmp_path / "no.nii.gz"),
        env=isolated_home,
    )
    assert missing.returncode == 1 and "input not found" in missing.stderr
    shares = run_cli(
        "plan",
        *common,
        "--max-params",
        "30%",
        "--calibrate",
        ct,
        "--calibrate-removed",
        "1.5",
        env=isolated_home,
    )
    assert shares.returncode == 1 and "--calibrate-removed: shares between 0 and 1" in shares.stderr


def test_a_budget_plan_is_made_once_per_weights_share_and_floor(tmp_path, monkeypatch):
    """`segment --max-params` (the panel's "fit my budget") on one model: `plan_network`'s plan
    for that share, kept in the cache by checkpoint, share and rank floor."""
    from TuckerSegmentLib.storage.plan_file import budget_plans, read_plan

    monkeypatch.setenv("TUCKERSEGMENT_CACHE", str(tmp_path / "cache"))
    first = budget_plans({"3mm": FOLDER_3MM}, 0.2, 8)["3mm"]
    plan = read_plan(first)
    folder = open_model_folder(FOLDER_3MM)
    network = folder.load_network("cpu")
    total = count_network(network, folder.spec.patch_size).params
    alone = plan_network(network, folder.spec.patch_size, "params", 0.2 * total)
    assert plan["model"] == "3mm" and plan["params"]["planned"] == alone.params <= 0.2 * total
    assert plan["layers"] == [layer.to_json() for layer in alone.layers]
    made = first.stat().st_mtime_ns
    assert budget_plans({"3mm": FOLDER_3MM}, 0.2, 8)["3mm"] == first
    assert first.stat().st_mtime_ns == made  # not planned again
    other = budget_plans({"3mm": FOLDER_3MM}, 0.2, 4)["3mm"]
    assert other != first and read_plan(other)["rank_floor"] == 4
    first.write_text("{damaged")
    assert read_plan(budget_plans({"3mm": FOLDER_3MM}, 0.2, 8)["3mm"])["layers"] == plan["layers"]


def test_segment_max_params_in_full_mode_gives_the_experts_one_budget(
    tmp_path, monkeypatch, isolated_home
):
    """Full mode's five experts share `--max-params`: together within the share, not each at
    it — an expert whose kernels compress well gives parameters to one whose kernels don't —
    and the planned models are what `segment` runs (given_models, as in a run)."""
    from TuckerSegmentLib.pipeline.segment import SegmentOptions, given_models, plan_run
    from TuckerSegmentLib.storage.compressed_format import read_manifest
    from TuckerSegmentLib.ts.weights import total_models

    monkeypatch.setenv("TUCKERSEGMENT_CACHE", str(tmp_path / "cache"))
    options = SegmentOptions(
        tmp_path / "ct.nii.gz", tmp_path / "out.nii.gz", max_params=0.15, weights_dir=MODELS
    )
    plan = plan_run(options)
    folders = {m.name: m.folder(MODELS) for m in total_models(False)}
    models = given_models(plan, folders)
    assert sorted(models) == sorted(folders)
    counts = {name: read_manifest(path).extra["params"] for name, path in models.items()}
    planned = sum(c["compressed"] for c in counts.values())
    original = sum(c["original"] for c in counts.values())
    assert planned <= 0.15 * original
    shares = [c["compressed"] / c["original"] for c in counts.values()]
    assert max(shares) - min(shares) > 0.01, shares  # not the same share for every expert
    assert planned >= 0.14 * original  # the budget is spent, not left over


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--max-params", "20"], "a percentage of the networks' parameters, e.g. 15%"),
        (["--max-params", "0%"], "--max-params: a share of the networks' parameters"),
        (["--max-params", "20%", "--df", "0.3"], "drop --df/--expert-df"),
    ],
)
def test_segment_refuses_a_bad_budget_before_any_work(options, message, tmp_path, isolated_home):
    from conftest import run_segment

    ct = tmp_path / "missing-is-fine-the-budget-is-checked-first.nii.gz"
    result = run_segment(ct, tmp_path / "out.nii.gz", "--fast", *options, env=isolated_home)
    assert result.returncode != 0 and message in result.stderr
    assert not (tmp_path / "out.nii.gz").exists()


def _experts(*names: str) -> dict:
    from TuckerSegmentLib.ts.weights import total_models

    models = {m.name: m for m in total_models(False)}
    out = {}
    for name in names:
        folder = open_model_folder(models[name].folder(MODELS))
        out[name] = (folder.load_network("cpu"), folder.spec.patch_size, folder.spec.input_channels)
    return out


def test_one_budget_for_several_networks_goes_where_it_keeps_most():
    """plan_networks: the experts' layers compete for one budget, met exactly as counted; one
    network alone is plan_network; a weight moves parameters toward the expert it favours."""
    from TuckerSegmentLib.engine.planner import plan_networks

    networks = _experts("organs", "vertebrae")
    total = sum(count_network(*entry).params for entry in networks.values())
    budget = 0.15 * total
    equal = plan_networks(networks, "params", budget, rank_floor=4)
    spent = sum(plan.params for plan in equal.values())
    assert 0.9 * budget < spent <= budget
    for name, plan in equal.items():
        _, after = count_original_and_compressed(_spec_of(name), plan.layers)
        assert after.params == plan.params and plan.budget == plan.params
    alone = plan_networks({"organs": networks["organs"]}, "params", 50_000, rank_floor=4)
    single = plan_network(networks["organs"][0], [128, 128, 128], "params", 50_000, 1, 4)
    assert [(x.name, x.rank_in, x.rank_out) for x in alone["organs"].layers] == [
        (x.name, x.rank_in, x.rank_out) for x in single.layers
    ]
    favoured = plan_networks(
        networks, "params", budget, rank_floor=4, weights={"organs": 1.0, "vertebrae": 0.1}
    )
    assert favoured["organs"].params > equal["organs"].params
    assert favoured["vertebrae"].params < equal["vertebrae"].params
    assert sum(plan.params for plan in favoured.values()) <= budget


def _spec_of(name: str):  # noqa: ANN201
    from TuckerSegmentLib.ts.weights import total_models

    model = next(m for m in total_models(False) if m.name == name)
    return open_model_folder(model.folder(MODELS)).spec


def test_plan_for_the_five_experts_writes_a_plan_each(cli, tmp_path, phantom_files):
    """`plan --model full`: one budget for TS's five experts, a plan file per expert (each a
    plan `segment --plan` reads); with --image each expert's weight is the share of its
    structures the low-resolution pass found; budgets that are per model are refused."""
    from TuckerSegmentLib.storage.plan_file import read_plan

    common = ["plan", "--model", "full", "--weights-dir", MODELS]
    out = tmp_path / "plans"
    made = cli(*common, "--max-params", "15%", "-o", out, "--image", phantom_files[0], "--json")
    assert made.returncode == 0, made.stderr
    printed = json.loads(made.stdout)
    experts = ["organs", "vertebrae", "cardiac", "muscles", "ribs"]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{e}.json" for e in experts)
    plans = {e: read_plan(out / f"{e}.json") for e in experts}
    planned = sum(p["params"]["planned"] for p in plans.values())
    original = sum(p["params"]["original"] for p in plans.values())
    assert 0.9 * 0.15 * original < planned <= 0.15 * original
    weights = printed["joint"]["weights"]
    assert all(0.1 <= w <= 1 for w in weights.values()) and weights["organs"] > 0.1
    assert len({p["params"]["planned"] / p["params"]["original"] for p in plans.values()}) > 1
    for args, message in (
        (["--max-latency-ms", "5"], "plan one expert at a time"),
        (["--max-params", "15%", "-o", phantom_files[0]], "writes a folder"),
    ):
        refused = cli(*common, *args)
        assert refused.returncode == 1 and message in refused.stderr, refused.stderr
