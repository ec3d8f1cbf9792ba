"""`tucker-segment batch`: segment a cohort on Dask, resumable, a failure table, cohort tables.

Every case runs the same `segment` a user runs (case_run.py) inside a Dask worker process that
keeps the prepared networks between cases. The models are decomposed once, here, before any
worker starts (the cache on disk), and everything a user can get wrong is refused before that.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TuckerSegmentError
from ..pipeline.progress import Progress
from ..pipeline.segment import SegmentOptions
from .cases import Case, find_cases
from .records import SETTINGS_FILE, check_settings, drop_case, is_done, write_failures

FORMATS = {"nii.gz": "segmentation.nii.gz", "seg.nrrd": "segmentation.seg.nrrd"}


@dataclass
class BatchOptions:
    """What `tucker-segment batch` accepts; ``segment`` holds the per-case settings."""

    input: Path
    output: Path
    segment: SegmentOptions
    jobs: int | None = None  # None: sized to the machine (cluster.default_jobs)
    scheduler: str | None = None  # a Dask scheduler address; None: a LocalCluster
    retries: int = 2  # runs of a case after its worker died


def cohort_settings(template: SegmentOptions) -> dict[str, Any]:
    """The settings every case shares (what the cohort folder records), JSON-ready."""
    settings = dataclasses.asdict(template)
    settings.pop("input")
    settings.pop("threads")  # how fast, not what: a re-run may use other --jobs/--threads
    settings["output"] = Path(template.output).name
    for key, value in settings.items():
        if isinstance(value, (list, tuple)):
            settings[key] = [str(v) for v in value]
        elif isinstance(value, Path) or key == "weights_dir":
            settings[key] = str(value)
    return settings


def _check_output(options: BatchOptions) -> None:
    out, source = options.output.resolve(), options.input.resolve()
    if source.is_dir() and (out == source or source in out.parents):
        # its case folders would be read as DICOM series by the next run
        raise TuckerSegmentError(
            f"the output folder {options.output} is inside the input folder; choose one outside "
            "it (the input is never modified)"
        )
    if options.output.exists() and not options.output.is_dir():
        raise TuckerSegmentError(f"output {options.output} is a file; give a folder")
    if not options.output.parent.is_dir():
        raise TuckerSegmentError(f"output's parent folder does not exist: {options.output.parent}")
    from ..pipeline.output_files import check_writable

    # the folder itself where it exists, else its parent, which will hold it
    check_writable(options.output / SETTINGS_FILE if options.output.is_dir() else options.output)
    if options.scheduler:
        from .cluster import check_scheduler_address

        check_scheduler_address(options.scheduler)


def prepare(options: BatchOptions) -> tuple[list[Case], SegmentOptions]:
    """Cases, the checked per-case template and the decomposed models in the cache, before any
    worker starts; one-line errors for bad input."""
    from ..pipeline.segment import warm_model_cache

    cases = find_cases(options.input)
    _check_output(options)
    if options.jobs is not None and options.jobs < 1:
        raise TuckerSegmentError("--jobs must be at least 1")
    if options.retries < 0:
        raise TuckerSegmentError("--retries must be 0 or more")
    template = dataclasses.replace(options.segment, output=options.output / options.segment.output)
    settings = cohort_settings(options.segment)
    made = not options.output.exists()
    if not made:  # another cohort's folder: refused before any work
        check_settings(options.output, settings, record=False)
    options.output.mkdir(exist_ok=True)
    try:  # segment's own checks of the options (and the models decomposed)
        warm_model_cache(dataclasses.replace(template, input=cases[0].path))
    except BaseException:
        if made and not any(options.output.iterdir()):
            options.output.rmdir()  # a refused batch leaves nothing behind
        raise
    check_settings(options.output, settings)
    return cases, template


def _eta(done: int, total: int, started: float) -> tuple[float, float | None]:
    minutes = (time.perf_counter() - started) / 60
    rate = done / minutes if minutes > 0 else 0.0
    eta = (total - done) / rate * 60 if rate > 0 else None
    return rate, eta


def batch(options: BatchOptions, progress: Progress | None = None) -> Any:
    """Segment every case of ``options.input`` into ``options.output``/<case>/; returns the
    cohort's statistics table (pandas DataFrame) of all finished cases."""
    from ..storage.scratch import sweep_stale
    from .cluster import default_jobs, import_distributed, threads_per_job
    from .tables import write_cohort_tables

    progress = progress or Progress("none")
    import_distributed()
    options = dataclasses.replace(options, output=options.output.absolute())
    cases, template = prepare(options)
    todo = [case for case in cases if not is_done(case, options.output)]
    skipped = len(cases) - len(todo)
    failures: list[dict[str, str]] = []
    progress.update("batch", 0.0, f"{len(todo)} to segment, {skipped} done before")
    if todo:
        jobs = options.jobs or default_jobs(template.fast)
        # on a LocalCluster the cores are shared out; on a user's cluster each worker uses its own
        threads = template.threads or (0 if options.scheduler else threads_per_job(jobs))
        template = dataclasses.replace(template, threads=threads or None)
        failures = _run_cases(todo, options, template, jobs, threads, progress)
    write_failures(options.output, failures)
    sweep_stale()  # temporary folders (with CT copies) of workers that died on this machine
    table = write_cohort_tables(cases, options.output, template.compare)
    done = sum(is_done(case, options.output) for case in cases)
    progress.update(
        "done",
        1.0,
        f"{done} of {len(cases)} cases done, {len(failures)} failed",
        done=done,
        failed=len(failures),
        skipped=skipped,
    )
    return table


def _run_cases(
    todo: list[Case],
    options: BatchOptions,
    template: SegmentOptions,
    jobs: int,
    threads: int,
    progress: Progress,
) -> list[dict[str, str]]:
    """Submit every case to the cluster and collect the results as they finish; the failures."""
    from .case_run import run_case
    from .cluster import dask_client, import_distributed

    distributed = import_distributed()
    failures: list[dict[str, str]] = []
    started = time.perf_counter()
    finished = 0
    with dask_client(jobs, options.scheduler, options.retries) as client:
        futures = {
            client.submit(
                run_case,
                case,
                options.output,
                template,
                threads,
                key=f"tuckersegment-{case.case_id}-{time.time_ns()}",
                pure=False,
            ): case
            for case in todo
        }
        for future in distributed.as_completed(futures):
            case = futures[future]
            try:
                result = future.result()
            except distributed.KilledWorker:
                result = {
                    "case_id": case.case_id,
                    "input": str(case.path),
                    "status": "failed",
                    "reason": f"its worker died in each of its {options.retries + 1} runs "
                    "(out of memory? see the worker logs)",
                }
            except Exception as error:  # noqa: BLE001 - reported, the cohort goes on
                result = {
                    "case_id": case.case_id,
                    "input": str(case.path),
                    "status": "failed",
                    "reason": f"{type(error).__name__}: {error}",
                }
            finished += 1
            if result["status"] == "failed":
                drop_case(options.output / case.case_id)  # what a dead worker left
                failures.append({k: result[k] for k in ("case_id", "input", "reason")})
            rate, eta = _eta(finished, len(todo), started)
            progress.update(
                "batch",
                finished / len(todo),
                f"{finished - len(failures)} done, {len(failures)} failed of {len(todo)}; "
                f"{rate:.1f} cases/min" + (f", ETA {eta:.0f} s" if eta is not None else ""),
                done=finished - len(failures),
                failed=len(failures),
                total=len(todo),
                cases_per_min=round(rate, 3),
                eta_s=round(eta, 1) if eta is not None else None,
                case=case.case_id,
                status=result["status"],
            )
    return failures
