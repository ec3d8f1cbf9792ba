"""`--runtime auto`: the fused runtime or OpenVINO, from measurements on this CPU.

The best runtime differs between CPUs (AVX-512 or AVX2 only, core counts, cache sizes) and
between runs: OpenVINO's first pass of a process costs seconds more than its later ones (its
memory is set up then; measured here 3.5 s against 1.2 s for a 3 mm patch, the fused runtime
2.4 s against 1.7 s), so one patch (TS's fast mode on a typical CT) and thirty (a 1.5 mm expert)
can choose differently. So nothing is hard-coded: on first use a compressed model runs one patch
of nnU-Net's patch size under each candidate, then two more, interleaved; the first and the
later passes' times are recorded per CPU, thread count, architecture and ranks in the cache
(``runtime-choices.json``; the experts of one architecture share a record), and each run picks,
once it knows its number of patches, the runtime with the least ``first + (patches − 1) ×
later``. OpenVINO's conversion is cached beside the compressed model either way
(openvino_runtime.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPEATS = 2  # later passes per candidate, after the first
CHOICES_FILE = "runtime-choices.json"
RECORD = "patch-first-and-later-v2"  # what a record measures; older records are measured again


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
    architecture = json.dumps(
        [spec.network_class_name, spec.arch_kwargs, spec.input_channels, list(spec.patch_size)],
        sort_keys=True,
        default=str,
    )
    ranks = ",".join(f"{layer.rank_in}x{layer.rank_out}" for layer in layers)
    digest = hashlib.sha256(f"{architecture}|{ranks}".encode()).hexdigest()[:16]
    return f"{RECORD}|{cpu_identity()}|threads {_threads()}|{digest}"


def _measure(candidates: dict[str, nn.Module], in_channels: int, patch: list[int]) -> dict:
    """Milliseconds of each candidate's first pass and the median of its later ones, at
    nnU-Net's patch size, interleaved so that background load hits them alike."""
    x = torch.randn(1, in_channels, *patch)
    first: dict[str, float] = {}
    later: dict[str, list[float]] = {name: [] for name in candidates}
    previous = torch.get_num_threads()
    torch.set_num_threads(_threads())
    try:
        with torch.no_grad():
            for name, network in candidates.items():
                start = time.perf_counter()
                network(x)
                first[name] = round((time.perf_counter() - start) * 1000, 1)
            for _ in range(REPEATS):
                for name, network in candidates.items():
                    start = time.perf_counter()
                    network(x)
                    later[name].append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(previous)
    return {
        "patch": list(patch),
        "first_ms": first,
        "ms_per_patch": {name: round(statistics.median(t), 1) for name, t in later.items()},
    }


def best_for(record: dict, patches: int) -> str:
    """The runtime with the least expected time for a run of ``patches`` patches."""
    first, later = record["first_ms"], record["ms_per_patch"]
    return min(later, key=lambda name: first[name] + (max(1, patches) - 1) * later[name])


class PerRunChoice(nn.Module):
    """The measured candidates; each image's patch count picks one at its first patch
    (:func:`best_for`). The others release what they hold (OpenVINO's compiled memory)."""

    def __init__(self, candidates: dict[str, nn.Module], record: dict) -> None:
        super().__init__()
        self.candidates = nn.ModuleDict(candidates)
        self.record = record
        self.patches: Callable[[], int] = lambda: 1  # the predictor's windows (segment.py)
        self.chosen: str | None = None
        self._chosen_for: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.patches()
        if self.chosen is None or patches != self._chosen_for:
            self.chosen, self._chosen_for = best_for(self.record, patches), patches
            for name, candidate in self.candidates.items():
                if name != self.chosen:
                    getattr(candidate, "release", lambda: None)()
        return self.candidates[self.chosen](x)

    def release(self) -> None:
        for candidate in self.candidates.values():
            getattr(candidate, "release", lambda: None)()


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
    """(runtime, the network to run, what the choice is based on) for a compressed network:
    the one candidate's name, or "per run" and a :class:`PerRunChoice`. ``network`` is fused in
    place. Never fails because of OpenVINO: without it, the torch runtimes run."""
    from .cpu_fusion import fuse
    from .openvino_runtime import version

    record_file = Path(choices_root) / CHOICES_FILE
    try:
        records = json.loads(record_file.read_text())
    except (OSError, ValueError):
        records = {}
    key = _key(spec, layers)
    record = records.get(key)
    candidates: dict[str, nn.Module] = {}
    skipped = ""
    # converted before fusing: OpenVINO runs the plain Tucker blocks
    if version() is not None and (record is None or "openvino" in record["ms_per_patch"]):
        converted, skipped = _openvino(network, spec, cache_entry)
        if converted is not None:
            candidates["openvino"] = converted
    candidates = {("fused" if fuse(network) else "eager"): network, **candidates}
    if record is None or set(record["ms_per_patch"]) != set(candidates):
        record = _measure(candidates, spec.input_channels, list(spec.patch_size))
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
    if len(candidates) == 1:
        return next(iter(candidates)), network, basis
    return "per run", PerRunChoice(candidates, record), basis
