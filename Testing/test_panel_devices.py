"""The panel's device list (detected in a child process, one entry per GPU) and the model size
under the DF slider (precomputed, exact, against the original networks)."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
from TuckerSegmentLib.engine.compress import CompressionSettings
from TuckerSegmentLib.engine.counting import count_network
from TuckerSegmentLib.engine.size_table import size_table
from TuckerSegmentLib.engine.stats import compressed_count
from TuckerSegmentLib.errors import TuckerSegmentError
from TuckerSegmentLib.panel.device_choices import DeviceProbe, apply_recommendation, device_choices
from TuckerSegmentLib.panel.model_size import ModelSizes
from TuckerSegmentLib.runtime.devices import resolve_device, ts_device
from TuckerSegmentLib.ts.architectures import builtin_spec


def _info(gpus: int, device: str = "cuda") -> dict:
    return {
        "devices": {
            "cpu": {"model": "EPYC", "cores": 2, "flags": []},
            "gpus": [
                {
                    "index": i,
                    "name": f"RTX {i}",
                    "memory_gib": 8.0,
                    "compute_capability": "8.6",
                    "tensor_cores": True,
                    "bf16": True,
                }
                for i in range(gpus)
            ],
            "mps": False,
        },
        "recommendation": {"device": device, "precision": "fp16", "df": 0.3, "reason": "r"},
    }


def test_each_gpu_is_its_own_choice_and_reaches_the_cli():
    choices = device_choices(_info(2))
    assert [c.value for c in choices.choices] == ["cuda:0", "cuda:1", "cpu"]
    assert choices.recommended == 0 and choices.choices[0].label.endswith("(recommended)")
    assert [ts_device(c.value) for c in choices.choices] == ["gpu:0", "gpu:1", "cpu"]
    assert ts_device("cuda") == "gpu"


def test_cpu_only_machine():
    choices = device_choices(_info(0, device="cpu"))
    assert [c.value for c in choices.choices] == ["cpu"] and choices.recommended == 0


def test_recommendation_is_applied_to_the_parameter_node_once():
    params = SimpleNamespace(precision="fp32", df=0.5, recommendationApplied=False)
    devices = device_choices(_info(1))
    assert apply_recommendation(params, devices, ["fp32", "fp16", "bf16"])
    assert (params.precision, params.df) == ("fp16", 0.3)
    params.df = 0.7  # the user's own choice afterwards
    assert not apply_recommendation(params, devices, ["fp32", "fp16", "bf16"])
    assert params.df == 0.7


def test_probe_detects_in_a_child_process():
    probe = DeviceProbe(sys.executable)
    choices = probe.result()
    assert probe.error is None
    assert choices.choices[-1].value == "cpu"


def test_probe_failure_leaves_cpu_and_says_why(tmp_path):
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'ImportError: libcuda.so: cannot open' >&2\nexit 1\n")
    broken.chmod(0o755)
    probe = DeviceProbe(str(broken))
    choices = probe.result()
    assert [c.value for c in choices.choices] == ["cpu"]
    assert "libcuda" in probe.error


def test_a_gpu_index_is_checked():
    with pytest.raises(TuckerSegmentError, match="cuda:0, cuda:1"):
        resolve_device("cuda:x")
    with pytest.raises(TuckerSegmentError):
        resolve_device("cuda:3")  # no CUDA here, or fewer GPUs


@pytest.mark.parametrize("model", ["3mm", "cardiac"])
def test_size_table_equals_counting_the_built_network(model):
    spec = builtin_spec("3mm") if model == "3mm" else builtin_spec("1.5mm", model)
    table = size_table(spec)
    original = count_network(spec.build("meta"), spec.patch_size, spec.input_channels)
    assert (table.params, table.flops) == (original.params, original.flops)
    for df in (0.05, 0.3, 0.5, 0.9):
        for floor in (1, 8, 16):
            count, _ = compressed_count(spec, CompressionSettings(df=df, rank_floor=floor))
            assert table.compressed(df, floor) == (count.params, count.flops)
    assert table.compressed(1.0, 8) == (table.params, table.flops)


def test_model_size_text_reports_ratios_against_the_original():
    sizes = ModelSizes()
    params, flops, params0, flops0 = sizes.totals(True, 0.3, 8)
    assert params0 == 16_550_518  # TS's 3 mm network as built (Table 1: 16.55 M)
    text = sizes.text(True, 0.3, 8)
    assert f"{params0 / params:.1f}× fewer" in text
    assert "original networks" in sizes.text(True, 1.0, 8)
    full = sizes.totals(False, 0.3, 8)
    assert full[2] == sum(
        size_table(builtin_spec("1.5mm", e)).params
        for e in ("organs", "vertebrae", "cardiac", "muscles", "ribs")
    )
