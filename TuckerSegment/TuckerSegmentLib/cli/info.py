"""`info`: versions, devices, where TS weights are looked up and which are installed, and the
recommended device, precision and DF (with the reason)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..storage.cache import cache_root

BENCHMARK_FILE = "benchmark.json"


def saved_benchmark() -> dict[str, Any] | None:
    """The user's last `tucker-segment benchmark` results on this machine, if any."""
    path = cache_root() / BENCHMARK_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def gather(weights: Path | None = None) -> dict[str, Any]:
    from ..runtime.devices import detect, recommend
    from ..storage.compressed_format import library_versions
    from ..ts.weights import installed_models, weights_dir

    report = detect()
    benchmark = saved_benchmark()
    rec = recommend(report, benchmark)
    folder = Path(weights) if weights else weights_dir()
    from ..ts.versions import untested_versions

    return {
        "versions": library_versions(),
        "untested_versions": untested_versions(),
        "devices": report.to_json(),
        "weights_dir": str(folder),
        "weights_installed": installed_models(folder),
        "cache_dir": str(cache_root()),
        "benchmark": str(cache_root() / BENCHMARK_FILE) if benchmark else None,
        "recommendation": {
            "device": rec.device,
            "precision": rec.precision,
            "df": rec.df,
            "reason": rec.reason,
        },
    }


def format_info(info: dict[str, Any]) -> str:
    lines = ["versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items())]
    lines += [f"  warning: {w}" for w in info.get("untested_versions", [])]
    cpu = info["devices"]["cpu"]
    flags = ", ".join(cpu["flags"]) or "none detected"
    lines.append(f"CPU: {cpu['model']}, {cpu['cores']} cores (flags: {flags})")
    for gpu in info["devices"]["gpus"]:
        lines.append(
            f"GPU {gpu['index']}: {gpu['name']}, {gpu['memory_gib']} GiB, compute capability "
            f"{gpu['compute_capability']}, tensor cores: {'yes' if gpu['tensor_cores'] else 'no'}"
        )
    if not info["devices"]["gpus"]:
        lines.append("GPU: none (CUDA not available to this PyTorch)")
    lines.append(f"Apple MPS: {'yes' if info['devices']['mps'] else 'no'}")
    lines.append(f"TS weights: {info['weights_dir']}")
    for name, present in info["weights_installed"].items():
        lines.append(f"  {'installed' if present else 'missing  '}  {name}")
    lines.append(f"compressed-model cache: {info['cache_dir']}")
    rec = info["recommendation"]
    from ..engine.fidelity import DEFAULT_DF, defaults_text

    df = (
        f" --df {rec['df']:g}"
        if rec["df"] != DEFAULT_DF
        else f" (and the default DFs: {defaults_text()})"
    )
    lines.append(f"recommended: --device {rec['device']} --precision {rec['precision']}{df}")
    lines.append(f"  because: {rec['reason']}")
    return "\n".join(lines)
