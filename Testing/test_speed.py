"""The benchmark command and the latency-aware policy: correctness, not timing."""

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli, run_segment
from TuckerSegmentLib.engine.compress import CompressionSettings, compress_network
from TuckerSegmentLib.engine.layer_policy import should_factorize
from TuckerSegmentLib.engine.tucker_block import TuckerConv3d
from TuckerSegmentLib.runtime.latency_policy import keep_faster_layers, layer_input_shapes
from TuckerSegmentLib.runtime.openvino_runtime import native_bf16
from TuckerSegmentLib.ts.architectures import old_format_plans, spec_from_plans


def _small_spec():
    plans = old_format_plans([8, 16, 32], [1, 2, 2], [32, 32, 32], [3.0] * 3, "Dataset999_small")
    return spec_from_plans(plans, 5, "small")


def test_layer_input_shapes_follow_the_patch():
    spec = _small_spec()
    shapes = layer_input_shapes(spec, ["encoder.stages.0.0.convs.0.conv", "decoder.transpconvs.0"])
    assert shapes["encoder.stages.0.0.convs.0.conv"] == (1, 1, 32, 32, 32)
    assert shapes["decoder.transpconvs.0"] == (1, 32, 8, 8, 8)


def test_latency_policy_keeps_exact_blocks_or_exact_originals():
    spec = _small_spec()
    reference = spec.build("cpu", seed=3)
    network = spec.build("cpu", seed=3)
    originals = {n: m for n, m in network.named_modules() if should_factorize(m, "latency")}
    layers = compress_network(network, CompressionSettings(df=0.5, rank_floor=2, policy="latency"))
    plain = spec.build("cpu", seed=3)
    compress_network(plain, CompressionSettings(df=0.5, rank_floor=2))
    kept, timings = keep_faster_layers(network, originals, layers, spec, repeats=1)
    assert set(timings) == {layer.name for layer in layers}
    modules, plain_modules = dict(network.named_modules()), dict(plain.named_modules())
    reference_modules = dict(reference.named_modules())
    x = torch.randn(1, 1, 16, 16, 16)
    kept_names = {layer.name for layer in kept}
    for layer in layers:
        module = modules[layer.name]
        if layer.name in kept_names:
            assert isinstance(module, TuckerConv3d)
            want = plain_modules[layer.name]
        else:
            assert module is originals[layer.name]
            want = reference_modules[layer.name]
        shape = (1, module.in_channels, 8, 8, 8)
        x = torch.randn(shape)
        with torch.no_grad():
            assert torch.allclose(module(x), want(x), rtol=1e-5, atol=1e-6)


def test_benchmark_command_reports_and_saves_rows(isolated_home):
    result = run_cli(
        "benchmark",
        "--model",
        "3mm",
        "--df",
        "0.5",
        "--patch",
        "32",
        "32",
        "32",
        "--repeats",
        "1",
        "--device",
        "cpu",
        "--json",
        env=isolated_home,
        check=True,
    )
    rows = json.loads(result.stdout)
    # bf16 rows only where OpenVINO runs bf16 natively (elsewhere they would be fp32 again)
    bf16 = ["openvino-bf16"] if native_bf16() else []
    runtimes = ["eager", "fused", "openvino", *bf16, "openvino-int8"]
    assert [(r["df"], r["runtime"]) for r in rows] == [
        (1.0, "eager"),  # the original as TS runs it: every speed-up is against this row
        (1.0, "fused"),  # the original under the fused runtime: what the runtime alone gives
        (1.0, "openvino"),  # the original under OpenVINO: the peer to beat
        *[(1.0, name) for name in bf16],  # in bf16 on CPUs that have it
        (1.0, "openvino-int8"),  # and quantized to int8 by NNCF
        *[(df, runtime) for df in (0.5,) for runtime in runtimes],
    ]
    original, compressed = rows[: len(runtimes)], rows[len(runtimes) :]
    assert rows[0]["speedup"] == 1.0 and rows[0]["variant"] == "original"
    assert {r["params"] for r in original} == {rows[0]["params"]}
    assert {r["params"] for r in compressed} == {compressed[0]["params"]}
    assert compressed[0]["params"] < rows[0]["params"]
    assert compressed[0]["gflops"] < rows[0]["gflops"]
    assert all(r["median_ms"] > 0 and r["device"] == "cpu" for r in rows)
    assert {r["allocator"] for r in rows} == {"reuse"}
    saved = Path(isolated_home["TUCKERSEGMENT_CACHE"]) / "benchmark.json"
    assert json.loads(saved.read_text())["rows"] == rows
    info = json.loads(run_cli("info", "--json", env=isolated_home, check=True).stdout)
    assert info["benchmark"] == str(saved)


@pytest.mark.parametrize(
    ("available_mib", "reading", "held"),
    [(1.0, 100.0, False), (1e9, 100.0, True), (1e9, None, False)],
)
def test_benchmark_holds_compiled_models_only_where_they_fit(
    monkeypatch, available_mib, reading, held
):
    """Each OpenVINO row is released after its memory reading; through the timing all stay
    compiled where their measured memory fits in 3/4 of what is available, else (or when a
    reading is missing) each is compiled, warmed and released around its own timed pass
    (`--runtime all` over the DF grid held ~1.1 GB per 3 mm row, more than the 24 GB the CI
    machine has)."""
    from TuckerSegmentLib.runtime import benchmark
    from TuckerSegmentLib.runtime.openvino_runtime import OpenVINONetwork

    events = []
    release, forward = OpenVINONetwork.release, OpenVINONetwork.forward
    monkeypatch.setattr(
        OpenVINONetwork,
        "release",
        lambda self: (events.append((id(self), "release")), release(self))[1],
    )
    monkeypatch.setattr(
        OpenVINONetwork,
        "forward",
        lambda self, x: (events.append((id(self), "pass")), forward(self, x))[1],
    )
    monkeypatch.setattr(benchmark, "_available_mib", lambda: available_mib)
    monkeypatch.setattr(benchmark, "_peak_memory", lambda *args: reading)
    rows = benchmark.run_benchmark(_small_spec(), [0.5], repeats=2, runtime="openvino")
    assert [(r.df, r.runtime) for r in rows] == [
        (1.0, "eager"),
        (1.0, "openvino"),
        (0.5, "openvino"),
    ]
    assert all(r.median_ms > 0 for r in rows)
    networks = list(dict.fromkeys(n for n, _ in events))
    assert len(networks) == 2
    for network in networks:
        seen = [event for n, event in events if n == network]
        # after the memory reading (patched here: no pass), released; then
        timed = ["pass", "pass"] if held else ["pass", "pass", "release"] * 2
        warmup = ["pass"] if held else []  # one warm-up pass, or one before each timed pass
        assert seen == ["release", *warmup, *timed], seen


def test_benchmark_eager_runtime_and_default_allocator(isolated_home):
    result = run_cli(
        "benchmark",
        "--df",
        "0.5",
        "--patch",
        "32",
        "32",
        "32",
        "--repeats",
        "1",
        "--device",
        "cpu",
        "--runtime",
        "eager",
        "--allocator",
        "default",
        "--json",
        env=isolated_home,
        check=True,
    )
    rows = json.loads(result.stdout)
    assert [(r["df"], r["runtime"], r["allocator"]) for r in rows] == [
        (1.0, "eager", "default"),
        (0.5, "eager", "default"),
    ]


def test_benchmark_bf16_rows_where_the_cpu_has_bf16_and_a_refusal_elsewhere(isolated_home):
    """`--runtime openvino-bf16` asked for by name: its rows where OpenVINO reports native bf16;
    on another CPU one line saying why, not rows that would be f32 again."""
    args = ["benchmark", "--df", "0.5", "--patch", "32", "32", "32", "--repeats", "1"]
    result = run_cli(*args, "--runtime", "openvino-bf16", "--json", env=isolated_home)
    if native_bf16():
        assert result.returncode == 0, result.stderr
        rows = json.loads(result.stdout)
        assert [(r["df"], r["runtime"]) for r in rows] == [
            (1.0, "eager"),
            (1.0, "openvino-bf16"),
            (0.5, "openvino-bf16"),
        ]
    else:
        assert result.returncode == 1
        assert result.stderr.strip().count("\n") == 0, result.stderr
        assert "no native bf16" in result.stderr


def test_auto_layer_policy_measures_on_gpus_and_keeps_the_default_on_cpus():
    """The measured policy on GPUs (the plain blocks lost to the original on an H200 at every
    DF); on the CPU the default rule; an explicit policy is kept, an unknown one refused."""
    from TuckerSegmentLib.engine.layer_policy import resolve_policy
    from TuckerSegmentLib.errors import TuckerSegmentError

    assert resolve_policy("auto", "cuda") == "latency"
    assert resolve_policy("auto", "mps") == "latency"
    assert resolve_policy("auto", "cpu") == "default"
    assert resolve_policy("paper", "cuda") == "paper"
    assert resolve_policy("default", "cuda") == "default"
    with pytest.raises(TuckerSegmentError, match="unknown layer policy"):
        resolve_policy("fastest", "cpu")


def test_segment_with_the_latency_policy_records_its_tuning(phantom_files, isolated_home, tmp_path):

    out = tmp_path / "latency.nii.gz"
    result = run_segment(
        phantom_files[0],
        out,
        "--fast",
        "--df",
        "0.5",
        "--layer-policy",
        "latency",
        "--progress",
        "none",
        env=isolated_home,
    )
    assert result.returncode == 0, result.stderr
    sidecar = json.loads(out.with_name("latency.json").read_text())
    assert sidecar["settings"]["layer_policy"] == "latency"
    model = sidecar["models"]["3mm"]
    entry = Path(model["cache_entry"])
    assert entry.name.endswith("-latency-cpu-fp32")
    manifest = json.loads((entry / "manifest.json").read_text())
    tuned = manifest["tuned_for"]
    assert tuned["device"] == "cpu" and tuned["precision"] == "fp32"
    from TuckerSegmentLib.engine.layer_policy import should_factorize
    from TuckerSegmentLib.ts.model_folder import open_model_folder

    network = open_model_folder(model["folder"]).spec.build("meta")
    candidates = sum(should_factorize(m) for m in network.modules())
    assert len(tuned["layer_seconds"]) == candidates  # every candidate layer was timed both ways
    assert len(manifest["layers"]) == len(model["ranks"]) <= candidates


def test_in_process_export_swaps_and_restores_nnunets_pool():
    from multiprocessing.pool import ThreadPool

    import nnunetv2.inference.predict_from_raw_data as predictor_module
    from TuckerSegmentLib.ts.in_process import export_in_process

    real = predictor_module.multiprocessing
    with export_in_process():
        pool = predictor_module.multiprocessing.get_context("spawn").Pool(6)
        assert isinstance(pool, ThreadPool)
        assert pool.apply_async(sum, ([1, 2],)).get(timeout=5) == 3
        pool.close()
        assert predictor_module.multiprocessing.TimeoutError is real.TimeoutError
    assert predictor_module.multiprocessing is real
