"""`tucker-segment prune`: the paper's L2 baseline and the thesis's random-widest, as zeroed
filters in the compressed-model format, run through TS's pipeline like any compressed model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import MODELS, run_cli
from TuckerSegmentLib.engine.prune import channel_norms, prune_network, zeroed_share
from TuckerSegmentLib.errors import TuckerSegmentError
from TuckerSegmentLib.ts.architectures import builtin_spec


@pytest.fixture()
def ts_3mm():
    spec = builtin_spec("3mm")  # TS's full-size 3 mm architecture, seeded weights
    return spec.build("cpu", seed=0).eval()


def test_l2_zeroes_each_layers_weakest_filters(ts_3mm):
    before = {
        n: channel_norms(m)
        for n, m in ts_3mm.named_modules()
        if hasattr(m, "weight")
        and isinstance(m, torch.nn.Conv3d | torch.nn.ConvTranspose3d)
        and any(k > 1 for k in m.kernel_size)
    }
    pruned = prune_network(ts_3mm, "l2", 0.5)
    modules = dict(ts_3mm.named_modules())
    assert {p.name for p in pruned} == set(before)
    for p in pruned:
        assert len(p.zeroed) == p.out_channels // 2
        after = channel_norms(modules[p.name])
        assert torch.all(after[p.zeroed] == 0)
        kept = [c for c in range(p.out_channels) if c not in p.zeroed]
        assert before[p.name][p.zeroed].max() <= before[p.name][kept].min()  # the weakest ones
        assert torch.equal(after[kept], before[p.name][kept])  # the rest untouched
    assert zeroed_share(ts_3mm, pruned) == pytest.approx(0.5, abs=0.01)


def test_random_widest_takes_filters_from_the_widest_layers_only(ts_3mm):
    pruned = prune_network(ts_3mm, "random-widest", 0.3, seed=1)
    widths = {p.name: p.out_channels for p in pruned}
    touched = [p for p in pruned if p.zeroed]
    assert touched and min(widths[p.name] for p in touched) >= sorted(set(widths.values()))[-2]
    remaining = [p.out_channels - len(p.zeroed) for p in pruned]
    widest_left = max(remaining)
    assert all(
        r >= widest_left - 1 for r, p in zip(remaining, pruned, strict=True) if p.zeroed
    )  # levelled
    assert zeroed_share(ts_3mm, pruned) == pytest.approx(0.3, abs=0.01)
    again = prune_network(builtin_spec("3mm").build("cpu", seed=0), "random-widest", 0.3, seed=1)
    assert [p.zeroed for p in again] == [p.zeroed for p in pruned]  # seeded


@pytest.mark.parametrize("method, ratio", [("l2", 0.0), ("l2", 1.0), ("magnitude", 0.5)])
def test_bad_settings_are_refused(ts_3mm, method, ratio):
    with pytest.raises(TuckerSegmentError):
        prune_network(ts_3mm, method, ratio)


def _inference_params(network: torch.nn.Module) -> int:
    """Every parameter but those of nnU-Net's deep-supervision heads (unused in inference)."""
    unused = list(network.decoder.seg_layers)[:-1]
    return sum(p.numel() for p in network.parameters()) - sum(
        p.numel() for layer in unused for p in layer.parameters()
    )


@pytest.mark.parametrize(
    "model, method, ratio",
    [("3mm", "l2", 0.5), ("3mm", "random-widest", 0.3), ("1.5mm", "l2", 0.5)],
)
def test_structured_pruning_removes_the_channels_it_claims(model, method, ratio):
    """On TS's full 3 mm architecture and the 1.5 mm experts' (organs): the chosen filters are
    gone (each pruned conv has that many fewer outputs, its norm too, the next convs fewer
    inputs, skip concatenations included), the network is smaller and cheaper — its count
    exactly its inference parameters —, runs, and rebuilds from its shapes."""
    from TuckerSegmentLib.engine.counting import count_network
    from TuckerSegmentLib.engine.prune import (
        module_shapes,
        remove_channels,
        reshape_modules,
        shapes_in_state,
    )

    spec = builtin_spec(model)
    network = spec.build("cpu", seed=0).eval()
    before = count_network(network, [64, 64, 64], 1)
    assert before.params == _inference_params(network)
    pruned = prune_network(network, method, ratio, seed=1)
    remove_channels(network, pruned, 1, spec.arch_kwargs["strides"])
    modules = dict(network.named_modules())
    for p in pruned:
        assert modules[p.name].out_channels == p.out_channels - len(p.zeroed)
    for name, module in modules.items():  # every norm follows its conv
        if name.endswith(".norm"):
            assert module.num_features == modules[name[: -len("norm")] + "conv"].out_channels
    after = count_network(network, [64, 64, 64], 1)
    assert after.params < before.params and after.gflops < before.gflops
    assert after.params == _inference_params(network)
    x = torch.randn(1, 1, 64, 64, 64)
    with torch.no_grad():
        expected = network(x)
    assert expected.shape == (1, spec.num_classes, 64, 64, 64)  # the heads keep TS's outputs
    rebuilt = spec.build("meta")
    # the weights alone carry the shapes (how a STAMP checkpoint resumes and is exported)
    assert shapes_in_state(rebuilt, network.state_dict()) == module_shapes(network)
    assert shapes_in_state(rebuilt, rebuilt.state_dict()) != module_shapes(network)
    reshape_modules(rebuilt, shapes_in_state(rebuilt, network.state_dict()))
    rebuilt.load_state_dict(network.state_dict(), assign=True)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), expected)


def test_a_pruned_model_runs_through_segment(isolated_home, tmp_path, phantom_files):
    out = tmp_path / "pruned"
    command = ["prune", "--model", "3mm", "--method", "l2", "--ratio", "0.25", "-o", str(out)]
    command += ["--weights-dir", str(MODELS)]
    made = run_cli(*command, env=isolated_home)
    assert made.returncode == 0, made.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["prune"]["method"] == "l2" and manifest["layers"] == []
    assert manifest["params"]["compressed"] < manifest["params"]["original"]
    state = torch.load(out / "weights.pt", weights_only=True)
    assert any(float(v.abs().sum()) > 0 for v in state.values())
    seg = tmp_path / "seg.nii.gz"
    run = run_cli(
        "segment",
        "-i",
        str(phantom_files[0]),
        "-o",
        str(seg),
        "--fast",
        "--device",
        "cpu",
        "--progress",
        "none",
        "--compressed-model",
        str(out),
        env={**isolated_home, "TOTALSEG_WEIGHTS_PATH": str(MODELS)},
    )
    assert run.returncode == 0, run.stderr
    assert "3mm pruned l2 0.25" in run.stdout
    model = json.loads((tmp_path / "seg.json").read_text())["models"]["3mm"]
    assert model["prune"]["ratio"] == 0.25 and model["cache"] == "given"
    again = run_cli(*command, env=isolated_home)  # the output exists now
    assert again.returncode == 1 and "exists" in again.stderr


def test_a_structurally_pruned_model_is_smaller_and_runs_through_segment(
    isolated_home, tmp_path, phantom_files
):
    out = tmp_path / "smaller"
    made = run_cli(
        *["prune", "--model", "3mm", "--method", "random-widest", "--ratio", "0.3"],
        *["--structured", "--weights-dir", str(MODELS), "-o", str(out)],
        env=isolated_home,
    )
    assert made.returncode == 0, made.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["prune"]["structured"] is True
    assert manifest["gflops_per_patch"]["compressed"] < manifest["gflops_per_patch"]["original"]
    assert manifest["params"]["compressed"] < 0.8 * manifest["params"]["original"]
    from TuckerSegmentLib.ts.model_folder import open_model_folder

    original = open_model_folder(next(MODELS.glob("Dataset297_*/*__3d_fullres")))
    full = original.load_network("cpu").state_dict()
    state = torch.load(out / "weights.pt", weights_only=True)
    assert state.keys() == full.keys()  # the same network, with smaller tensors
    assert sum(v.numel() for v in state.values()) < 0.8 * sum(v.numel() for v in full.values())
    seg = tmp_path / "seg.nii.gz"
    run = run_cli(
        *["segment", "-i", str(phantom_files[0]), "-o", str(seg), "--fast", "--device", "cpu"],
        *["--progress", "none", "--compressed-model", str(out), "--compare"],
        env={**isolated_home, "TOTALSEG_WEIGHTS_PATH": str(MODELS)},
    )
    assert run.returncode == 0, run.stderr
    model = json.loads((tmp_path / "seg.json").read_text())["models"]["3mm"]
    assert model["prune"]["structured"] is True
    assert model["params"] == manifest["params"]["compressed"]
    assert (tmp_path / "seg.agreement.csv").is_file()


def test_curves_compare_the_methods_through_ts(isolated_home, tmp_path, phantom_files):
    """`curves`: each method's model at each share, segmented beside the original; CSV + PNG."""
    import csv

    stem = tmp_path / "curves"
    command = ["curves", "--model", "3mm", "--image", str(phantom_files[0])]
    command += ["--weights-dir", str(MODELS), "-o", str(stem)]
    env = {**isolated_home, "TOTALSEG_WEIGHTS_PATH": str(MODELS)}
    given = tmp_path / "given"  # a model made elsewhere (`finetune`'s output comes the same way)
    made = run_cli(
        *["prune", "--model", "3mm", "--method", "random-widest", "--ratio", "0.3"],
        *["--structured", "--weights-dir", str(MODELS), "-o", str(given)],
        env=env,
    )
    assert made.returncode == 0, made.stderr
    run = run_cli(
        *command, "--methods", "tucker,l2", "--ratios", "0.5", "--trained", str(given), env=env
    )
    assert run.returncode == 0, run.stderr
    rows = list(csv.DictReader(open(stem.with_suffix(".csv"))))
    assert [r["method"] for r in rows] == ["tucker", "l2", "random-widest (given)"]
    for row in rows[:2]:
        assert 0.4 < int(row["params"]) / int(row["params_original"]) <= 0.55
    for row in rows:
        assert 0.0 <= float(row["mean_dice"]) <= 1.0
    assert float(rows[0]["mean_dice"]) > float(rows[1]["mean_dice"])  # the paper's finding
    params = json.loads((given / "manifest.json").read_text())["params"]
    assert int(rows[2]["params"]) == params["compressed"]  # at the share it really removed
    assert float(rows[2]["removed"]) == round(1 - params["compressed"] / params["original"], 4)
    assert stem.with_suffix(".png").stat().st_size > 20_000
    bad = run_cli(*command, "--methods", "svd", env=env)
    assert bad.returncode == 1 and "unknown method svd" in bad.stderr
    bad = run_cli(*command, "--trained", str(tmp_path), env=env)
    assert bad.returncode == 1 and "not a compressed model" in bad.stderr


def test_pruned_models_are_benchmarked_beside_their_original(cli, tmp_path, isolated_home):
    """`benchmark --compressed-model`: a structured prune times as the smaller network it is, a
    zeroed one (the paper's variant) as the original's shapes; rows of the models' own
    architecture, the DF grid's saved rows untouched; clashes refused in one line."""
    from TuckerSegmentLib.cli.info import BENCHMARK_FILE

    models = {"smaller": ["--structured", "--method", "random-widest", "--ratio", "0.3"]}
    models["zeroed"] = ["--method", "l2", "--ratio", "0.5"]
    for name, options in models.items():
        made = cli(
            "prune", "--model", "3mm", "--weights-dir", MODELS, *options, "-o", tmp_path / name
        )
        assert made.returncode == 0, made.stderr
    common = ["benchmark", "--device", "cpu", "--runtime", "eager", "--repeats", "1"]
    run = cli(*common, "--compressed-model", tmp_path / "smaller", tmp_path / "zeroed", "--json")
    assert run.returncode == 0, run.stderr
    rows = {row["label"]: row for row in json.loads(run.stdout)}
    assert list(rows) == ["original", "smaller", "zeroed"]
    manifests = {n: json.loads((tmp_path / n / "manifest.json").read_text()) for n in models}
    assert rows["original"]["params"] == manifests["smaller"]["params"]["original"]
    assert rows["smaller"]["params"] == manifests["smaller"]["params"]["compressed"]
    assert rows["smaller"]["gflops"] < rows["original"]["gflops"]
    assert rows["zeroed"]["params"] == rows["original"]["params"]  # zeros still run
    assert rows["original"]["speedup"] == 1.0 and rows["smaller"]["variant"] == "given"
    assert not (Path(isolated_home["TUCKERSEGMENT_CACHE"]) / BENCHMARK_FILE).exists()
    six = cli(
        *["prune", "--model", "6mm", "--weights-dir", MODELS, "--method", "l2", "--ratio", "0.3"],
        *["-o", tmp_path / "six"],
    )
    assert six.returncode == 0, six.stderr
    for extra, message in (
        ([tmp_path / "smaller", tmp_path / "six"], "of different architectures"),
        ([tmp_path / "smaller", "--df", "0.5"], "--df and --compressed-model"),
        ([tmp_path], "not a compressed model"),
    ):
        refused = cli(*common, "--compressed-model", *extra)
        assert refused.returncode == 1 and message in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
