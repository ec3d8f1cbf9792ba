"""`--runtime auto`: the faster of the fused runtime and OpenVINO for this CPU, measured once.

The best runtime differs between CPUs (AVX-512 or AVX2 only, core counts, cache sizes), so it is
never hard-coded: on first use a compressed model runs a few patches of 64³ voxels under each
candidate, interleaved, and the faster one is recorded per CPU, architecture and ranks in the
cache (``runtime-choices.json``); later runs read the record. OpenVINO's conversion is cached
beside the compressed model either way (openvino_runtime.py).
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

PATCH = 64
REPEATS = 3
CHOICES_FILE = "runtime-choices.json"


def cpu_identity() -> str:
    """The CPU as the choice depends on it: model, flags that matter, cores."""
    from .devices import detect

    cpu = detect().cpu
    return f"{cpu.model}|{','.join(cpu.flags)}|{cpu.cores}"


def _threads() -> int:
    """The torch threads the predictor will give the network: nnU-Net caps them at its default
    number of processes (8)."""
    return min(8, torch.get_num_threads())


def _key(spec: Any, layers: list) -> str:
    ranks = ",".join(f"{layer.rank_in}x{layer.rank_out}" for layer in layers)
    return f"{cpu_identity()}|threads {_threads()}|{spec.name}|{ranks}"


def _median_ms(candidates: dict[str, nn.Module], in_channels: int) -> dict[str, float]:
    x = torch.randn(1, in_channels, PATCH, PATCH, PATCH)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    previous = torch.get_num_threads()
    torch.set_num_threads(_threads())
    try:
        with torch.no_grad():
            for network in candidates.values():
                network(x)  # warm-up
            for _ in range(REPEATS):
                for name, network in candidates.items():
                    start = time.perf_counter()
                    network(x)
                    times[name].append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(previous)
    return {name: round(statistics.median(t), 2) for name, t in times.items()}


def _openvino(network: nn.Module, spec: Any, cache_entry: Path) -> tuple[nn.Module | None, str]:
    """The OpenVINO network, or None and why not (auto falls back instead of failing)."""
    from .openvino_runtime import openvino_network

    try:
        converted, _ = openvino_network(
            network, spec.input_channels, spec.num_classes, cache_entry, spec.patch_size
        )
    except Exception as error:  # noqa: BLE001 - conversion, memory, cache folder: fall back
        return None, (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    return converted, ""


def choose_runtime(
    network: nn.Module, spec: Any, layers: list, cache_entry: Path, choices_root: Path
) -> tuple[str, nn.Module, dict[str, Any]]:
    """(runtime, the network to run, what the choice was based on) for a compressed network.
    Never fails because of OpenVINO: without it, the torch runtimes run."""
    from .cpu_fusion import fuse
    from .openvino_runtime import version

    record_file = Path(choices_root) / CHOICES_FILE
    try:
        records = json.loads(record_file.read_text())
    except (OSError, ValueError):
        records = {}
    key = _key(spec, layers)
    record = records.get(key)
    available = ["fused", "eager"] + (["openvino"] if version() is not None else [])
    converted = None
    if record is None or record.get("runtime") not in available:
        candidates: dict[str, nn.Module] = {}
        fused = copy.deepcopy(network)
        candidates["fused" if fuse(fused) else "eager"] = fused
        skipped = ""
        if "openvino" in available:
            converted, skipped = _openvino(network, spec, cache_entry)
            if converted is not None:
                candidates["openvino"] = converted
        measured = _median_ms(candidates, spec.input_channels)
        record = {"runtime": min(measured, key=measured.get), "ms_per_64_patch": measured}
        if skipped:
            record["openvino_unavailable"] = skipped
        records[key] = record
        try:
            record_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = record_file.with_name(f".{record_file.name}.{os.getpid()}")
            tmp.write_text(json.dumps(records, indent=2))
            os.replace(tmp, record_file)
        except OSError:
            pass  # measured again next time
        basis = {"measured": True, **record}
    else:
        basis = {"measured": False, **record}
    chosen = record["runtime"]
    if chosen == "openvino":
        if converted is None:
            converted, why = _openvino(network, spec, cache_entry)
            if converted is None:
                basis["openvino_unavailable"] = why
        if converted is not None:
            return "openvino", converted, basis
    if chosen != "eager" and fuse(network):
        return "fused", network, basis
    return "eager", network, basis
