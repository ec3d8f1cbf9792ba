"""Device detection and the recommended device, precision and DF for this machine.

The recommendation follows the paper's Table 2: fp16 only pays on GPUs with tensor cores
(compute capability ≥ 7.0; GTX 10/16 series have none and run fp16 slower than fp32); CPUs run
fp32, or bf16 where the CPU has AMX; data-center GPUs gain little from Tucker,
so they get a mild DF. The user's own benchmark results, when present, override the rule.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .errors import TuckerSegmentError

DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class GPUInfo:
    index: int
    name: str
    memory_gib: float
    compute_capability: str
    tensor_cores: bool
    bf16: bool


@dataclass
class CPUInfo:
    model: str
    cores: int
    flags: list[str] = field(default_factory=list)

    @property
    def fast_bf16(self) -> bool:
        """AMX tiles make bf16 convolutions much faster; AVX-512-BF16 alone may not (measure
        with `tucker-segment benchmark --precision bf16`)."""
        return "amx_bf16" in self.flags


@dataclass
class Recommendation:
    device: str
    precision: str
    df: float
    reason: str


def _cpu_info() -> CPUInfo:
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name") and model in ("", platform.machine()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    flags = sorted(
                        present & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
                    )
                    break
    except OSError:
        pass
    return CPUInfo(model=model, cores=os.cpu_count() or 1, flags=flags)


def _gpus() -> list[GPUInfo]:
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append(
                GPUInfo(
                    index=i,
                    name=p.name,
                    memory_gib=round(p.total_memory / 2**30, 1),
                    compute_capability=f"{p.major}.{p.minor}",
                    tensor_cores=p.major >= 7,
                    bf16=p.major >= 8,
                )
            )
    return gpus


@dataclass
class DeviceReport:
    cpu: CPUInfo
    gpus: list[GPUInfo]
    mps: bool

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["cpu"]["fast_bf16"] = self.cpu.fast_bf16
        return data


def detect() -> DeviceReport:
    """What this machine has: CPU model, cores and flags; CUDA GPUs; Apple MPS."""
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return DeviceReport(cpu=_cpu_info(), gpus=_gpus(), mps=mps)


_DATA_CENTER = ("A100", "H100", "H200", "B200", "A40", "L40", "V100", "A6000", "A30")


def recommend(report: DeviceReport, benchmark: dict[str, Any] | None = None) -> Recommendation:
    """Device, precision and DF for this machine; ``benchmark`` is the user's saved results."""
    if report.gpus:
        gpu = report.gpus[0]
        device = "cuda"
        if gpu.tensor_cores:
            precision, why = "fp16", f"{gpu.name} has tensor cores, so fp16 is faster"
        else:
            precision = "fp32"
            why = (
                f"{gpu.name} has no tensor cores: fp16 runs slower than fp32 there (paper, Table 2)"
            )
        if any(tag in gpu.name for tag in _DATA_CENTER):
            df, why_df = 0.5, "a data-center GPU gains little from strong compression"
        else:
            df, why_df = 0.3, "DF 0.3 removes ~88% of parameters with little loss"
        reason = f"{why}; {why_df}"
    elif report.mps:
        device, precision, df = "mps", "fp32", 0.3
        reason = "Apple GPU (MPS); fp32 is the reliable precision there; DF 0.3"
    else:
        device, df = "cpu", 0.3
        if report.cpu.fast_bf16:
            precision = "bf16"
            reason = "CPU with AMX: bf16 is faster; DF 0.3 for the largest CPU speed-up"
        else:
            precision = "fp32"
            reason = "CPU without AMX: fp32; DF 0.3 for the largest CPU speed-up"
    if benchmark:
        best = _best_from_benchmark(benchmark, device)
        if best is not None:
            df, precision_b, speedup = best
            precision = precision_b or precision
            reason += f"; your benchmark on this machine: DF {df:g} ran {speedup:.1f}× faster"
    return Recommendation(device, precision, df, reason)


def _best_from_benchmark(results: dict[str, Any], device: str):
    rows = [r for r in results.get("rows", []) if r.get("device", "").startswith(device)]
    usable = [r for r in rows if r.get("df", 1.0) < 1.0 and r.get("speedup", 0) >= 1.0]
    if not usable:
        return None
    # the strongest speed-up; ties go to the milder compression
    best = max(usable, key=lambda r: (round(r["speedup"], 1), r["df"]))
    return best["df"], best.get("precision"), best["speedup"]


def device_kind(device: str) -> str:
    """``cuda:1`` → ``cuda``: the kind that precision, runtime and autocast decisions use."""
    return device.split(":", 1)[0]


def ts_device(device: str) -> str:
    """TotalSegmentator's spelling: ``cuda`` → ``gpu``, ``cuda:N`` → ``gpu:N``."""
    return "gpu" + device[4:] if device.startswith("cuda") else device


def resolve_device(device: str) -> str:
    """``auto`` → the recommended device; otherwise check that the device exists.

    ``cuda:N`` chooses one GPU of several (the Slicer panel lists each GPU)."""
    index = None
    if device.startswith("cuda:"):
        if not device[5:].isdigit():
            raise TuckerSegmentError(f"unknown device {device!r}; GPUs are cuda:0, cuda:1, ...")
        device, index = "cuda", int(device[5:])
    if device not in DEVICES:
        raise TuckerSegmentError(
            f"unknown device {device!r}; choose one of {', '.join(DEVICES)} or cuda:N"
        )
    if device == "auto":
        return recommend(detect()).device
    if device == "cuda" and not torch.cuda.is_available():
        raise TuckerSegmentError("--device cuda: no CUDA GPU is available to this PyTorch")
    if index is not None:
        count = torch.cuda.device_count()
        if index >= count:
            raise TuckerSegmentError(
                f"--device cuda:{index}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
            )
        return f"cuda:{index}"
    if device == "mps" and not detect().mps:
        raise TuckerSegmentError("--device mps: Apple MPS is not available on this machine")
    return device
