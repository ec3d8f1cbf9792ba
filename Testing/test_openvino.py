"""OpenVINO as a runtime: no telemetry connection, same outputs as torch, converted once and
cached (damaged or stale conversions rebuilt, never used), through TS's pipeline with the same
labels, and `--runtime auto` measuring once per CPU and model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import GUARD_DIR, load_labels, run_segment
from TuckerSegmentLib.engine.compress import CompressionSettings, compress_network
from TuckerSegmentLib.engine.tucker_block import TuckerConv3d
from TuckerSegmentLib.runtime.openvino_runtime import (
    DENSE_SHARE,
    FOLDER,
    INT8_RECIPE,
    example_size,
    native_bf16,
    openvino_network,
    with_dense_blocks,
)
from TuckerSegmentLib.runtime.runtime_choice import MeasuredChoice, Records, best_for
from TuckerSegmentLib.ts.architectures import builtin_spec

CONVERT_IN_CHILD = r"""
import sys, torch
sys.path.insert(0, sys.argv[2])
from TuckerSegmentLib.runtime.openvino_runtime import import_openvino, openvino_network
ov = import_openvino()
import openvino.tools.ovc.telemetry_utils as telemetry
assert telemetry.tm.__name__.endswith("telemetry_stub"), telemetry.tm
net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU()).eval()
converted, _ = openvino_network(net, 1, 4, sys.argv[1])
print("converted")
"""


def _child_env(tmp_path, log):
    """No CI variable (OpenVINO's telemetry stays quiet under CI) and a fresh HOME (no opt-out)."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(HOME=str(tmp_path), TUCKERSEGMENT_NETWORK_GUARD=str(log))
    return env


def _run_in_child(script: str, tmp_path) -> tuple[subprocess.CompletedProcess, str]:
    """``script`` in a fresh child (no pytest, no CI variable) under the network guard: the
    result and the connection attempts it logged."""
    log = tmp_path / "attempts.log"
    log.touch()
    lib = str(GUARD_DIR.parent.parent / "TuckerSegment")
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "cache"), lib],
        capture_output=True,
        text=True,
        env=_child_env(tmp_path, log),
        timeout=300,
    )
    return result, log.read_text()


def test_openvino_is_loaded_without_its_telemetry(tmp_path):
    result, attempts = _run_in_child(CONVERT_IN_CHILD, tmp_path)
    assert result.returncode == 0 and "converted" in result.stdout, result.stderr[-2000:]
    assert attempts == ""


def test_plain_openvino_import_would_phone_home(tmp_path):
    """Why import_openvino exists: the guard sees OpenVINO's own import event."""
    log = tmp_path / "attempts.log"
    log.touch()
    # the attempt comes from a background thread: wait for it (up to a minute), not a fixed time
    code = (
        "import openvino, pathlib, sys, time\n"
        "log, start = pathlib.Path(sys.argv[1]), time.monotonic()\n"
        "while 'google-analytics' not in log.read_text() and time.monotonic() - start < 60:\n"
        "    time.sleep(0.1)\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(log)],
        env=_child_env(tmp_path, log),
        timeout=120,
        check=False,
    )
    assert "google-analytics" in log.read_text()  # recorded in this test's own log only


@pytest.fixture(scope="module")
def compressed_3mm():
    torch.manual_seed(0)
    spec = builtin_spec("3mm")
    network = spec.build("cpu", seed=0).eval()
    compress_network(network, CompressionSettings(df=0.3))
    return spec, network


def test_openvino_gives_the_torch_outputs_converted_once(compressed_3mm, tmp_path):
    spec, network = compressed_3mm
    converted, hit = openvino_network(network, 1, spec.num_classes, tmp_path)
    assert not hit
    x = torch.randn(1, 1, 48, 64, 80)  # not the 32³ the conversion traced: dynamic shapes
    with torch.no_grad():
        expected = network(x)
    got = converted(x)
    assert got.shape == expected.shape
    assert got.dtype == torch.float16, "logits are handed to nnU-Net in the fp16 it sums them in"
    got = got.float()
    assert torch.allclose(got, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()))
    _, hit = openvino_network(network, 1, spec.num_classes, tmp_path)
    assert hit
    # compiled for nnU-Net's patch as well: that request writes into a new tensor each pass, so a
    # result held while the next patch runs (nnU-Net's mirroring sums several) stays valid
    static, _ = openvino_network(network, 1, spec.num_classes, tmp_path, patch_size=(48, 64, 80))
    y = torch.randn(1, 1, 48, 64, 80)
    got, again = static(x).float(), static(y).float()
    with torch.no_grad():
        expected_y = network(y)
    assert torch.allclose(got, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()))
    assert torch.allclose(again, expected_y, rtol=1e-3, atol=1e-3 * float(expected_y.abs().max()))


def test_bf16_is_the_same_conversion_compiled_for_bf16(compressed_3mm, tmp_path):
    """`openvino-bf16` reuses the fp32 conversion (a compile-time hint), runs bf16 exactly where
    OpenVINO reports native bf16 on this CPU (f32 elsewhere), and stays close to fp32."""
    spec, network = compressed_3mm
    fp32, _ = openvino_network(network, 1, spec.num_classes, tmp_path, patch_size=(32, 32, 32))
    bf16, hit = openvino_network(
        network, 1, spec.num_classes, tmp_path, patch_size=(32, 32, 32), precision="bf16"
    )
    assert hit, "one conversion serves both precisions"
    assert fp32.ran_in == "f32"
    assert bf16.ran_in == ("bf16" if native_bf16() else "f32")
    x = torch.randn(1, 1, 32, 32, 32)
    want, got = fp32(x).float(), bf16(x).float()
    scale = float(want.abs().max())
    assert torch.allclose(got, want, atol=0.05 * scale)  # bf16 keeps 8 bits of mantissa
    if bf16.ran_in == "bf16":
        assert not torch.equal(got, want), "bf16 really ran"


def test_blocks_that_would_not_pay_are_converted_as_one_conv(tmp_path):
    spec = builtin_spec("3mm")
    network = spec.build("cpu", seed=0).eval()
    compress_network(network, CompressionSettings(df=0.5))
    blocks = [m for m in network.modules() if isinstance(m, TuckerConv3d)]
    dear = [b for b in blocks if b.work_share() > DENSE_SHARE]
    assert dear and len(dear) < len(blocks), "DF 0.5 has blocks on both sides of the rule"
    converted_from = with_dense_blocks(network)
    left = [m for m in converted_from.modules() if isinstance(m, TuckerConv3d)]
    assert len(left) == len(blocks) - len(dear)
    assert all(b.work_share() <= DENSE_SHARE for b in left)
    assert sum(isinstance(m, TuckerConv3d) for m in network.modules()) == len(blocks), "untouched"
    depth, height, width = example_size(network)
    x = torch.randn(1, 1, depth, 2 * height, width)
    with torch.no_grad():
        expected = network(x)
        assert torch.allclose(converted_from(x), expected, rtol=1e-4, atol=1e-4)
    converted, _ = openvino_network(network, 1, spec.num_classes, tmp_path)
    scale = float(expected.abs().max())
    assert torch.allclose(converted(x).float(), expected, rtol=1e-3, atol=1e-3 * scale)


def test_logits_are_the_fp32_ones_rounded_to_fp16(compressed_3mm, tmp_path):
    """The fp16 handover changes nothing but the rounding nnU-Net's fp16 sum applies anyway:
    the same compiled network asked for fp32 logits gives these, rounded."""
    spec, network = compressed_3mm
    half, _ = openvino_network(network, 1, spec.num_classes, tmp_path, patch_size=(32, 48, 32))
    full, hit = openvino_network(
        network, 1, spec.num_classes, tmp_path, patch_size=(32, 48, 32), logits=torch.float32
    )
    assert hit, "one conversion: the logits' dtype is set when compiling"
    x = torch.randn(1, 1, 32, 48, 32)
    got, want = half(x), full(x)
    assert (got.dtype, want.dtype) == (torch.float16, torch.float32)
    step = torch.finfo(torch.float16).eps * want.abs().clamp_min(2**-14)  # one fp16 step at most:
    assert ((got.float() - want).abs() <= step).all()  # the two graphs may add the bias apart
    assert half(torch.randn(1, 1, 32, 32, 64)).dtype == torch.float16, "dynamic shapes too"


def test_skip_concatenations_are_merged_away(compressed_3mm, tmp_path):
    """Where a decoder stage's transposed conv and first block are Tucker blocks, the converted
    graph sums two 1×1×1 convs instead of concatenating: the same function, no Concat left."""
    from TuckerSegmentLib.runtime.openvino_runtime import import_openvino, with_skip_merges

    spec, network = compressed_3mm
    merged = with_skip_merges(network)
    assert merged is not network and len(merged.decoder.skip_merges) == 4
    x = torch.randn(1, 1, 32, 64, 48)
    with torch.no_grad():
        expected = network(x)
        assert torch.allclose(
            merged(x), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max())
        )
    assert not hasattr(network.decoder, "skip_merges"), "the network itself is untouched"
    openvino_network(network, 1, spec.num_classes, tmp_path)
    model = import_openvino().Core().read_model(str(tmp_path / FOLDER / "model.xml"))
    assert "Concat" not in {op.get_type_name() for op in model.get_ops()}
    original = builtin_spec("3mm").build("cpu", seed=0).eval()
    assert with_skip_merges(original) is original, "nothing to merge without Tucker blocks"


def test_damaged_or_stale_conversions_are_rebuilt(compressed_3mm, tmp_path):
    spec, network = compressed_3mm
    openvino_network(network, 1, spec.num_classes, tmp_path)
    (tmp_path / FOLDER / "model.xml").write_text("<broken")
    _, hit = openvino_network(network, 1, spec.num_classes, tmp_path)
    assert not hit, "a damaged conversion must not be used"
    # the same architecture with other weights: the conversion is stale
    other = builtin_spec("3mm").build("cpu", seed=1).eval()
    compress_network(other, CompressionSettings(df=0.3))
    converted, hit = openvino_network(other, 1, spec.num_classes, tmp_path)
    assert not hit
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.allclose(converted(x).float(), other(x), rtol=1e-3, atol=1e-3)


def test_openvino_converts_an_expert_deeper_than_the_3mm_network(tmp_path):
    """TS's 1.5 mm experts halve five times: a 32³ tracing input left one voxel at the
    bottleneck, where instance norm refuses it; the tracing size follows the encoder's strides."""
    from TuckerSegmentLib.runtime.openvino_runtime import example_size

    spec = builtin_spec("1.5mm")
    network = spec.build("cpu", seed=0).eval()
    compress_network(network, CompressionSettings(df=0.3))
    assert example_size(network) == [64, 64, 64]
    converted, hit = openvino_network(network, 1, spec.num_classes, tmp_path)
    assert not hit
    x = torch.randn(1, 1, 64, 64, 96)
    with torch.no_grad():
        expected = network(x)
    assert torch.allclose(
        converted(x).float(), expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max())
    )


def test_a_failed_conversion_is_one_line(tmp_path):
    from TuckerSegmentLib.errors import TuckerSegmentError

    class Untraceable(torch.nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN202
            raise RuntimeError("no trace here\nand a second line")

    with pytest.raises(TuckerSegmentError, match=r"^OpenVINO could not convert this network: no"):
        openvino_network(Untraceable(), 1, 4, tmp_path)
    assert not (tmp_path / FOLDER).exists(), "nothing half-written is left"


@pytest.mark.parametrize("runtime", ["openvino", "auto"])
def test_segment_runtimes_give_the_eager_labels(runtime, phantom_files, isolated_home, tmp_path):
    """`openvino`: converted once, then read from the cache. `auto` (the default): the first
    run measures the fused runtime; where OpenVINO is not worth trying (an image the fused
    runtime runs in less than the threshold: here set out of reach, since the default 10 s
    depends on the machine's load; best_for's test below checks the default), the next run
    stays fused and converts nothing; where trying pays (forced with TUCKERSEGMENT_EXPLORE_S=0),
    a run measures OpenVINO and the next takes the better for its patch count."""
    env = {**isolated_home, "TUCKERSEGMENT_CACHE": str(tmp_path / "cache")}  # a first use
    env["TUCKERSEGMENT_EXPLORE_S"] = "1e9"  # never worth trying
    explore = {**env, "TUCKERSEGMENT_EXPLORE_S": "0"}
    runs = [("eager", env), (runtime, env), (runtime, env)]
    runs += [("auto", explore), ("auto", explore)] if runtime == "auto" else []
    sidecars = []
    for i, (name, run_env) in enumerate(runs):
        out = tmp_path / f"{name}-{i}.nii.gz"
        args = ["--fast", "--df", "0.5", "--progress", "none"]
        args += [] if name == "auto" else ["--runtime", name]  # auto: the default
        result = run_segment(phantom_files[0], out, *args, env=run_env)
        assert result.returncode == 0, result.stderr
        assert "torch.jit" not in result.stderr and "TracerWarning" not in result.stderr
        sidecars.append(json.loads(out.with_name(f"{name}-{i}.json").read_text())["models"]["3mm"])
        labels = load_labels(out)[0]
        if name == "eager":
            eager = labels
        else:
            assert np.mean(labels == eager) > 0.999
        if runtime == "auto" and i == 2:
            assert not list((tmp_path / "cache").rglob("openvino")), "not worth converting"
    if runtime == "openvino":
        assert [s["runtime"] for s in sidecars[1:]] == ["openvino", "openvino"]
        assert sidecars[2]["openvino_conversion"] == "hit"
        return
    first, second, third, fourth = (s["runtime_choice"] for s in sidecars[1:])
    assert [s["runtime"] for s in sidecars[1:4]] == ["fused", "fused", "openvino"]
    assert first["tried"] and not second["tried"]
    assert set(second["first_ms"]) == {"fused"}, "not worth trying: not measured"
    assert third["tried"] and not fourth["tried"]
    assert set(fourth["first_ms"]) == {"fused", "openvino"}  # both measured in the runs
    chosen, _ = best_for(third, ["fused", "openvino"], fourth["patches"], 0)
    assert sidecars[4]["runtime"] == chosen  # from what the runs measured


def test_auto_falls_back_when_openvino_cannot_convert(tmp_path, monkeypatch):
    """`--runtime auto` is the default: an OpenVINO failure must not fail the run, and it is
    recorded, so later runs don't try again."""
    from types import SimpleNamespace

    from TuckerSegmentLib.runtime.runtime_choice import choose_runtime

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder: the conversion cannot be saved under it")
    spec = SimpleNamespace(
        input_channels=1,
        num_classes=4,
        name="tiny",
        network_class_name="Sequential",
        arch_kwargs={},
        patch_size=[16, 16, 16],
    )
    network = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1)).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        expected = network(x)
    monkeypatch.setenv("TUCKERSEGMENT_EXPLORE_S", "0")  # try OpenVINO on any image
    runtime, choice, _ = choose_runtime(network, spec, [], blocked, tmp_path / "choices")
    assert runtime == "per image"
    for _ in range(2):  # the first image measures eager, the second would try OpenVINO
        choice.start_image(lambda: 1)
        with torch.no_grad():
            assert torch.allclose(choice(x), expected)
        assert choice.chosen == "eager"
    assert choice.unavailable  # why, in the sidecar
    record = choice.records.get()
    assert set(record["first_ms"]) | set(record["ms_per_patch"]) == {"eager"}
    assert record["openvino_unavailable"]
    runtime, chosen, basis = choose_runtime(network, spec, [], blocked, tmp_path / "choices")
    assert runtime == "eager" and chosen is network and basis["openvino_unavailable"]


def test_the_patch_count_decides_between_a_cheap_first_pass_and_cheap_later_ones(tmp_path):
    """OpenVINO's first pass of a process is the dear one, its later ones the cheap ones: one
    patch and thirty choose differently, each image at its first patch; the fused runtime is
    tried first, OpenVINO on an image fused would take ≥ 10 s on; the runtime not chosen
    releases what it holds."""
    record = {
        "first_ms": {"fused": 2400, "openvino": 3500},
        "ms_per_patch": {"fused": 1700, "openvino": 1200},
    }
    both = ["fused", "openvino"]
    assert best_for(record, both, 1) == ("fused", False)
    assert best_for(record, both, 3) == ("fused", False)  # 5800 < 5900 ms
    assert best_for(record, both, 4) == ("openvino", False)
    assert best_for({"first_ms": {}, "ms_per_patch": {}}, both, 30) == ("fused", True)
    fused_only = {"first_ms": {"fused": 2400}, "ms_per_patch": {"fused": 1700}}
    assert best_for(fused_only, both, 1) == ("fused", False)  # 2.4 s: OpenVINO can't pay
    assert best_for(fused_only, both, 5) == ("fused", False)  # 9.2 s
    assert best_for(fused_only, both, 6) == ("openvino", True)  # 10.9 s: worth trying
    assert best_for(fused_only, both, 1, explore_from_ms=0) == ("openvino", True)

    class Candidate(torch.nn.Module):
        def __init__(self, value: float) -> None:
            super().__init__()
            self.value, self.released = value, 0

        def forward(self, x):  # noqa: ANN001, ANN202
            return x * 0 + self.value

        def load(self) -> None:
            pass

        def release(self) -> None:
            self.released += 1

    fused, openvino = Candidate(1.0), Candidate(2.0)
    records = Records(tmp_path, "a key")
    records.update(lambda r: r.update(record))
    choice = MeasuredChoice({"fused": fused, "openvino": openvino}, records)
    x = torch.zeros(1, 1, 2, 2, 2)
    choice.start_image(lambda: 30)
    assert float(choice(x).max()) == 2.0 and choice.chosen == "openvino" and fused.released == 1
    assert records.get() == {**record}  # measured once, then kept: choices don't drift
    choice.start_image(lambda: 1)  # the next image (a warm worker): chosen again
    assert float(choice(x).max()) == 1.0 and choice.chosen == "fused" and openvino.released == 1
    assert not choice.tried


QUANTIZE_IN_CHILD = r"""
import sys, numpy as np, torch
sys.path.insert(0, sys.argv[2])
from TuckerSegmentLib.runtime.openvino_runtime import openvino_network
net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU()).eval()
patches = [np.random.default_rng(i).standard_normal((1, 1, 16, 16, 16), dtype=np.float32) for i in range(4)]
converted, _ = openvino_network(net, 1, 4, sys.argv[1], calibration=patches)
from nncf.telemetry import wrapper  # already loaded by the quantization, stub and all
assert isinstance(wrapper.telemetry, wrapper.NNCFTelemetryStub), wrapper.telemetry
assert not isinstance(wrapper.telemetry, wrapper.NNCFTelemetry)
print("quantized")
"""


def test_nncf_is_loaded_without_its_telemetry(tmp_path):
    """Outside pytest (NNCF silences itself under pytest), NNCF's Google Analytics telemetry is
    its no-op stub and no connection is attempted."""
    result, attempts = _run_in_child(QUANTIZE_IN_CHILD, tmp_path)
    assert result.returncode == 0 and "quantized" in result.stdout, result.stderr[-2000:]
    assert attempts == ""
    assert (tmp_path / "cache" / f"{FOLDER}-int8" / "model.xml").is_file()


def test_int8_segments_like_fp32_and_is_cached(phantom_files, isolated_home, tmp_path):
    """`--runtime openvino-int8` on the test models: the labels agree with fp32 (eager) within
    the tolerance README states, and the quantized model is made once."""
    sidecars, labels = [], {}
    for name in ("eager", "openvino-int8", "openvino-int8"):
        out = tmp_path / f"{name}-{len(sidecars)}.nii.gz"
        result = run_segment(
            phantom_files[0],
            out,
            "--fast",
            "--runtime",
            name,
            "--progress",
            "none",
            env=isolated_home,
        )
        assert result.returncode == 0, result.stderr
        sidecars.append(json.loads(out.with_name(out.name.replace(".nii.gz", ".json")).read_text()))
        labels[name] = load_labels(out)[0]
    assert np.mean(labels["openvino-int8"] == labels["eager"]) > INT8_VOXEL_AGREEMENT
    first, second = sidecars[1]["models"]["3mm"], sidecars[2]["models"]["3mm"]
    assert first["runtime"] == "openvino-int8" and first["openvino_conversion"] == "miss"
    assert first["openvino_precision"] == "int8"
    assert second["openvino_conversion"] == "hit"


INT8_VOXEL_AGREEMENT = 0.9  # README, Performance: 0.92–0.96 of the voxels measured


def test_bf16_segments_close_to_fp32(phantom_files, isolated_home, tmp_path):
    """`--runtime openvino-bf16` through TS's pipeline: labels close to fp32's (README: 99.6 % of
    the voxels identical on the test models), the precision OpenVINO ran in recorded, and the
    one conversion shared with `--runtime openvino`."""
    env = {**isolated_home, "TUCKERSEGMENT_CACHE": str(tmp_path / "cache")}
    sidecars, labels = [], {}
    for name in ("eager", "openvino", "openvino-bf16"):
        out = tmp_path / f"{name}.nii.gz"
        args = ["--fast", "--df", "0.5", "--runtime", name, "--progress", "none"]
        result = run_segment(phantom_files[0], out, *args, env=env)
        assert result.returncode == 0, result.stderr
        assert ("no native bf16" in result.stderr) == (
            name == "openvino-bf16" and not native_bf16()
        )
        sidecars.append(json.loads(out.with_name(f"{name}.json").read_text())["models"]["3mm"])
        labels[name] = load_labels(out)[0]
    assert np.mean(labels["openvino-bf16"] == labels["eager"]) > BF16_VOXEL_AGREEMENT
    fp32, bf16 = sidecars[1], sidecars[2]
    assert fp32["openvino_precision"] == "f32"
    assert bf16["runtime"] == "openvino-bf16" and bf16["openvino_conversion"] == "hit"
    assert bf16["openvino_precision"] == ("bf16" if native_bf16() else "f32")


BF16_VOXEL_AGREEMENT = 0.98  # README: 99.6 % measured (four phantoms, default DFs)


def test_a_model_quantized_with_other_settings_is_requantized(tmp_path):
    """The quantization's settings (INT8_RECIPE) are recorded with the int8 model: one made with
    other settings, or before they were recorded, is quantized anew, never used."""
    from TuckerSegmentLib.runtime.calibration import CalibrationRecipe

    network = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU()).eval()
    recipe = CalibrationRecipe("random", (16, 16, 16), count=2, seed=1)
    _, hit = openvino_network(network, 1, 4, tmp_path, calibration=recipe)
    source_file = tmp_path / f"{FOLDER}-int8" / "source.json"
    source = json.loads(source_file.read_text())
    assert not hit and source["int8_recipe"] == INT8_RECIPE
    for stale in ({**source, "int8_recipe": "other settings"}, {**source, "int8_recipe": None}):
        source_file.write_text(json.dumps(stale))
        _, hit = openvino_network(network, 1, 4, tmp_path, calibration=recipe)
        assert not hit and json.loads(source_file.read_text()) == source
    _, hit = openvino_network(network, 1, 4, tmp_path, calibration=recipe)
    assert hit


def test_a_cached_int8_model_is_reused_without_making_calibration_patches(tmp_path, monkeypatch):
    """The int8 conversion is keyed by its calibration recipe: the second run loads it without
    generating a single calibration patch (phantoms are slow); another recipe quantizes anew."""
    from TuckerSegmentLib.runtime.calibration import CalibrationRecipe

    network = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU()).eval()
    recipe = CalibrationRecipe("random", (16, 16, 16), count=2, seed=1)
    made = []
    original = CalibrationRecipe.patches
    monkeypatch.setattr(
        CalibrationRecipe, "patches", lambda self: made.append(self) or original(self)
    )
    _, hit = openvino_network(network, 1, 4, tmp_path, calibration=recipe)
    assert not hit and made == [recipe]
    _, hit = openvino_network(network, 1, 4, tmp_path, calibration=recipe)
    assert hit and made == [recipe]  # loaded from the cache: no patches made
    other = CalibrationRecipe("random", (16, 16, 16), count=2, seed=2)
    _, hit = openvino_network(network, 1, 4, tmp_path, calibration=other)
    assert not hit and made == [recipe, other]
    assert (
        recipe.key() != other.key()
        and recipe.key() == CalibrationRecipe("random", (16, 16, 16), 2, 1).key()
    )
