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

from ..errors import TuckerSegmentError

DEVICES = ("auto", "cpu", "cuda", "mps")
REDUCED_PRECISION_RUNTIMES = ("openvino-bf16", "openvino-int8")  # labels close to fp32, not equal


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
    """Device, precision and DF for this machine; ``benchmark`` is the user's saved results.

    The DF is a fidelity decision (fidelity.py): never below the zero-shot floors on speed alone.
    The benchmark may choose the precision; its speed at lower DFs is reported as information."""
    from ..engine.fidelity import DEFAULT_DF, defaults_text

    df, why_df = (
        DEFAULT_DF,
        f"{defaults_text()}, the zero-shot fidelity floors (README: Choosing a DF)",
    )
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
            df, why_df = 0.5, "DF 0.5: a data-center GPU gains little from stronger compression"
        reason = f"{why}; {why_df}"
    elif report.mps:
        device, precision = "mps", "fp32"
        reason = f"Apple GPU (MPS); fp32 is the reliable precision there; {why_df}"
    else:
        device = "cpu"
        if report.cpu.fast_bf16:
            precision = "bf16"
            reason = f"CPU with AMX: bf16 is faster; {why_df}"
        else:
            precision = "fp32"
            reason = f"CPU without AMX: fp32; {why_df}"
    if benchmark:
        note = _benchmark_note(benchmark, device, df)
        if note:
            reason += f"; {note}"
    return Recommendation(device, precision, df, reason)


def _benchmark_note(results: dict[str, Any], device: str, df: float) -> str | None:
    """What the user's benchmark says about speed, as information: the speed-up at the
    recommended DF and, separately, what lower DFs would gain and cost."""
    rows = [r for r in results.get("rows", []) if r.get("device", "").startswith(device)]
    rows = [r for r in rows if r.get("df", 1.0) < 1.0 and "speedup" in r]
    # full precision only: bf16 and int8 rows are options with other labels, not the DF's speed
    rows = [r for r in rows if r.get("runtime") not in REDUCED_PRECISION_RUNTIMES]
    if not rows:
        return None
    at = [r for r in rows if abs(r["df"] - df) < 1e-9]
    parts = []
    if at:
        parts.append(f"your benchmark: DF {df:g} ran {max(r['speedup'] for r in at):.1f}× faster")
    lower = [r for r in rows if r["df"] < df - 1e-9]
    if lower:
        fastest = max(lower, key=lambda r: r["speedup"])
        parts.append(
            f"DF {fastest['df']:g} ran {fastest['speedup']:.1f}× faster but is below the "
            "zero-shot fidelity floor: only for fine-tuned models or when your own agreement "
            "report (--compare) supports it"
        )
    return "; ".join(parts) or None


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
