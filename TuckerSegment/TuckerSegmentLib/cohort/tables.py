"""The cohort's tables, gathered from the finished cases' own files.

``statistics.csv/.parquet``: one row per case and structure with TotalSegmentator's own
statistics (volume and mean intensity, i.e. mean HU on a CT); ``agreement.csv/.parquet`` (with
--compare): each case's agreement report with its case id. Built from every done case in the
folder, so a resumed cohort's tables include the cases of earlier runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .cases import Case
from .records import is_done

STATISTICS = "statistics"
AGREEMENT = "agreement"


def _files(folder: Path, suffix: str) -> list[Path]:
    return sorted(p for p in folder.glob(f"*{suffix}") if not p.name.startswith("."))


def statistics_rows(case: Case, folder: Path) -> list[dict[str, Any]]:
    from ..ts.structures import structure_names

    label_of = {name: label for label, name in structure_names().items()}
    rows = []
    for path in _files(folder, ".statistics.json"):
        for name, values in json.loads(path.read_text()).items():
            volume = float(values.get("volume", 0.0))
            rows.append(
                {
                    "case_id": case.case_id,
                    "structure": name,
                    "label": label_of.get(name),
                    "volume_ml": volume / 1000.0,
                    "mean_hu": float(values.get("intensity", 0.0)),
                }
            )
    return rows


def agreement_rows(case: Case, folder: Path) -> list[dict[str, Any]]:
    import pandas as pd

    rows = []
    for path in _files(folder, ".agreement.csv"):
        table = pd.read_csv(path)
        table.insert(0, "case_id", case.case_id)
        rows.extend(table.to_dict("records"))
    return rows


def _write(frame: Any, outdir: Path, name: str) -> None:
    """CSV and Parquet, each through a temporary file and a rename."""
    for suffix, write in ((".csv", frame.to_csv), (".parquet", frame.to_parquet)):
        target = outdir / f"{name}{suffix}"
        tmp = target.with_name(f".tmp-{os.getpid()}.{target.name}")
        write(tmp, index=False)
        os.replace(tmp, target)


def write_cohort_tables(cases: list[Case], outdir: Path, compare: bool) -> Any:
    """Write the cohort tables of every done case; returns the statistics table (DataFrame)."""
    import pandas as pd

    done = [case for case in cases if is_done(case, outdir)]
    statistics = pd.DataFrame(
        [row for case in done for row in statistics_rows(case, outdir / case.case_id)],
        columns=["case_id", "structure", "label", "volume_ml", "mean_hu"],
    )
    _write(statistics, outdir, STATISTICS)
    if compare:
        agreement = pd.DataFrame(
            [row for case in done for row in agreement_rows(case, outdir / case.case_id)]
        )
        _write(agreement, outdir, AGREEMENT)
    return statistics
