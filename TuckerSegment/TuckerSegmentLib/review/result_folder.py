"""A `segment --compare` result, read and checked before anything is served.

The result is the files `segment --compare -o NAME.seg.nrrd` (or `.nii.gz`) writes side by side:
the compressed labels, ``NAME.original.*``, ``NAME.agreement.csv`` and the sidecar ``NAME.json``
(DF per expert, parameters, timings, device). Files are looked up beside the one the user names,
not at the absolute paths the sidecar recorded, so a result folder that was moved or copied to
another machine still opens; only the CT comes from outside it (the sidecar's input, or --ct).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TuckerSegmentError
from ..pipeline.agreement import StructureAgreement, read_agreement_csv
from ..pipeline.output_files import SUFFIXES, sibling, stem


@dataclass(frozen=True)
class ReviewResult:
    """Everything the review page shows, read from one result."""

    folder: Path
    compressed: Path  # the compressed networks' labels (.seg.nrrd or NIfTI)
    original: Path  # the original networks' labels, same format
    agreement: list[StructureAgreement]
    sidecar: dict[str, Any]
    ct: Path  # NIfTI file or DICOM series folder
    task: str

    @property
    def name(self) -> str:
        return stem(self.compressed)

    def facts(self) -> list[tuple[str, str]]:
        """The run's facts as (label, value) lines: mode, device, DF and parameters per
        expert, timings — what a reader needs to judge the comparison."""
        s = self.sidecar
        lines = [
            ("mode", str(s.get("mode", "?"))),
            ("device", f"{s.get('device', '?')} ({s.get('precision', '?')})"),
        ]
        for name, model in (s.get("models") or {}).items():
            df = model.get("df")
            params, original = model.get("params"), model.get("params_original")
            size = (
                f"{params / 1e6:.2f} M of {original / 1e6:.2f} M parameters "
                f"({100 * params / original:.0f}%)"
                if params and original
                else ""
            )
            kind = f"DF {df:g}" if model.get("compressed") and df is not None else "original"
            lines.append((f"expert {name}", ", ".join(filter(None, [kind, size]))))
        timings = s.get("timings") or {}
        for key, label in (
            ("segment_s", "compressed run"),
            ("segment_network_s", "compressed networks"),
            ("original_s", "original run"),
            ("original_network_s", "original networks"),
        ):
            if key in timings:
                lines.append((label, f"{timings[key]:.1f} s"))
        speedup = (s.get("comparison") or {}).get("speedup_network")
        if speedup:
            lines.append(("network speed-up", f"{speedup:.2f}×"))
        return lines


def _result_files(path: Path) -> Path:
    """The compressed labels file for what the user named: the file itself, its sidecar, or a
    folder holding one compare result."""
    if path.is_dir():
        sidecars = [
            p for p in sorted(path.glob("*.json")) if any(path.glob(f"{p.name[:-5]}.original.*"))
        ]
        if len(sidecars) != 1:
            found = "none" if not sidecars else ", ".join(p.name for p in sidecars)
            raise TuckerSegmentError(
                f"{path} should hold one `segment --compare` result (NAME.json beside "
                f"NAME.original.*), found {found}: name the result file instead"
            )
        path = sidecars[0]
    if path.name.endswith(".json"):
        base = path.name[:-5]
        candidates = [path.with_name(base + suffix) for suffix in SUFFIXES]
        labels = [c for c in candidates if c.is_file()]
        if not labels:
            raise TuckerSegmentError(f"no segmentation beside {path} ({base}.seg.nrrd or .nii.gz)")
        return labels[0]
    return path


def open_result(path: str | Path, ct: str | Path | None = None) -> ReviewResult:
    """Read and check a compare result; one line naming what is missing or wrong."""
    given = Path(path).expanduser()
    if not given.exists():
        raise TuckerSegmentError(f"result not found: {given}")
    compressed = _result_files(given)
    if not compressed.is_file() or not compressed.name.endswith(SUFFIXES):
        raise TuckerSegmentError(
            f"{compressed} is not a segmentation (.seg.nrrd, .nii.gz or .nii) of `segment --compare`"
        )
    sidecar_path = sibling(compressed, ".json")
    try:
        sidecar = json.loads(sidecar_path.read_text())
    except FileNotFoundError:
        raise TuckerSegmentError(
            f"{sidecar_path.name} (the run's sidecar) is missing beside {compressed.name}"
        ) from None
    except (OSError, ValueError) as error:
        raise TuckerSegmentError(f"{sidecar_path} is not readable JSON: {error}") from None
    if not isinstance(sidecar, dict) or not isinstance(sidecar.get("comparison"), dict):
        raise TuckerSegmentError(
            f"{compressed.name} was not made with --compare: run `tucker-segment segment "
            "--compare` to get the original networks' labels and the agreement report"
        )
    original = next(
        (p for p in (sibling(compressed, ".original" + s) for s in SUFFIXES) if p.is_file()), None
    )
    if original is None:
        raise TuckerSegmentError(
            f"{stem(compressed)}.original.* (the original networks' labels) is missing "
            f"beside {compressed.name}"
        )
    from ..pipeline.compare_files import read_labels

    for labels in (compressed, original):
        read_labels(labels)  # readable and a label map, or one line now (not VTK's noise later)
    report = sibling(compressed, ".agreement.csv")
    try:
        agreement = read_agreement_csv(report.read_text()).structures
    except FileNotFoundError:
        raise TuckerSegmentError(f"{report.name} (the agreement report) is missing") from None
    except (KeyError, ValueError, OSError) as error:
        raise TuckerSegmentError(f"{report} is not an agreement report: {error}") from None
    image = Path(ct).expanduser() if ct is not None else Path(str(sidecar.get("input", "")))
    if not str(image) or not image.exists():
        raise TuckerSegmentError(
            f"the CT {image} {'given' if ct is not None else 'the run read'} is not there: "
            "give it with --ct"
        )
    return ReviewResult(
        folder=compressed.parent.resolve(),
        compressed=compressed.resolve(),
        original=original.resolve(),
        agreement=agreement,
        sidecar=sidecar,
        ct=image.resolve(),
        task=str(sidecar.get("task", "total")),
    )
