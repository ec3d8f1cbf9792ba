"""One case on a Dask worker: `segment` into the case's folder, then its done record.

The worker process keeps each model's prepared network between cases (pipeline/warm_cache.py),
so the model is loaded once per worker. Bad input (a corrupt file, an MR, a 2D image) is
returned as a failure with its one-line reason, not raised: Dask retries only cases whose worker
died, never ones that would fail again.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from ..errors import TuckerSegmentError
from .cases import Case
from .records import drop_case, finish_case, start_case

_threads_set = False


def _worker_setup(threads: int) -> None:
    """Once per worker process: its torch threads, and prepared networks kept between cases."""
    global _threads_set
    if _threads_set:
        return
    import torch

    from ..pipeline.warm_cache import keep_models
    from ..ts.environment import silence_known_warnings

    silence_known_warnings()

    if threads > 0:  # 0: the worker's own default (all its cores)
        torch.set_num_threads(threads)
    keep_models()
    _threads_set = True


def output_name(options: Any) -> str:
    """The segmentation's file name in a case folder (the template's output suffix)."""
    return Path(options.output).name


def run_case(case: Case, outdir: Path, template: Any, threads: int) -> dict[str, Any]:
    """Segment ``case`` with ``template``'s settings (a SegmentOptions); a result record."""
    from ..pipeline.progress import Progress
    from ..pipeline.segment import segment

    _worker_setup(threads)
    start = time.perf_counter()
    folder = start_case(case, outdir)
    options = dataclasses.replace(template, input=case.path, output=folder / output_name(template))
    record: dict[str, Any] = {"case_id": case.case_id, "input": str(case.path)}
    try:
        result = segment(options, Progress("none"))
    except TuckerSegmentError as error:
        drop_case(folder)
        return {**record, "status": "failed", "reason": str(error)}
    except Exception as error:  # noqa: BLE001 - one case must not stop the cohort
        drop_case(folder)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return {**record, "status": "failed", "reason": f"{type(error).__name__}: {first}"}
    except BaseException:
        drop_case(folder)
        raise
    seconds = time.perf_counter() - start
    finish_case(case, folder, seconds)
    return {
        **record,
        "status": "done",
        "seconds": seconds,
        "kept_models": all(m.get("kept_in_worker", False) for m in result["models"].values()),
    }
