"""Run nnU-Net's preprocessing and export inside the TS process instead of worker processes.

For each model TS calls nnU-Net's ``predict_from_files``, which spawns a preprocessing worker
(plus a multiprocessing manager) and a pool of export workers. On a CPU machine each spawned
worker re-imports torch and nnU-Net (seconds each, competing with the prediction for the same
cores), and the logits (118 channels × the whole 3 mm volume, hundreds of MB) are pickled to the
export worker. For one image nothing runs in parallel anyway, so TuckerSegment runs the very same
nnU-Net functions in process: ``preprocess_fromfiles_save_to_queue`` fills a local queue, and
the export pool is a thread pool. Same functions, same inputs, same results.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.pool import ThreadPool
from typing import Any


class _ThreadContext:
    """A multiprocessing context whose Pool is a thread pool (everything else: the real one)."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def Pool(self, processes: int | None = None, *args: Any, **kwargs: Any) -> ThreadPool:  # noqa: N802
        return _thread_pool(processes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _ThreadMultiprocessing:
    """Stands in for the ``multiprocessing`` module inside nnU-Net's predictor module."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def get_context(self, method: str | None = None) -> _ThreadContext:
        return _ThreadContext(self._real.get_context(method))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def preprocess_in_process(
    list_of_lists: Any,
    list_of_segs_from_prev_stage_files: Any,
    output_filenames_truncated: Any,
    plans_manager: Any,
    dataset_json: Any,
    configuration_manager: Any,
    verbose: bool = False,
) -> Iterator[dict]:
    """nnU-Net's ``preprocessing_iterator_fromfiles`` without workers: one case at a time,
    with nnU-Net's own ``preprocess_fromfiles_save_to_queue`` filling a local queue."""
    from nnunetv2.inference.data_iterators import preprocess_fromfiles_save_to_queue

    for i, files in enumerate(list_of_lists):
        items: queue.Queue = queue.Queue()
        done, abort = threading.Event(), threading.Event()
        preprocess_fromfiles_save_to_queue(
            [files],
            None
            if list_of_segs_from_prev_stage_files is None
            else [list_of_segs_from_prev_stage_files[i]],
            None if output_filenames_truncated is None else [output_filenames_truncated[i]],
            plans_manager,
            dataset_json,
            configuration_manager,
            items,
            done,
            abort,
            verbose,
        )
        yield items.get_nowait()


@contextmanager
def spawned_workers() -> Iterator[None]:
    """Make TS's and nnU-Net's worker pools start by spawning, not forking.

    Forking a process whose PyTorch/OpenMP threads already ran (the decomposition did) can
    deadlock the child on a lock held at fork time; spawn is what nnU-Net uses on macOS and
    Windows anyway. The previous start method is restored afterwards.
    """
    import multiprocessing

    previous = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method("spawn", force=True)
    try:
        yield
    finally:
        multiprocessing.set_start_method(previous, force=True)


def _thread_pool(processes: int | None = None, *args: Any, **kwargs: Any) -> ThreadPool:
    return ThreadPool(max(1, min(processes or 1, 2)))


@contextmanager
def export_in_process() -> Iterator[None]:
    """Within the context, nnU-Net's predictor exports in a thread pool of this process (its
    ``predict_from_data_iterator`` takes the pool from its module's ``multiprocessing``, the one
    place with no hook; preprocessing is the predictor subclass's own override). Its input
    listing (``create_lists_from_splitted_dataset_folder``, a regex per file name) runs in a
    thread pool too: as a spawned process pool it cost 0.5 s per model for one file name."""
    import nnunetv2.inference.predict_from_raw_data as predictor_module

    real_multiprocessing = predictor_module.multiprocessing
    predictor_module.multiprocessing = _ThreadMultiprocessing(real_multiprocessing)
    try:
        with file_listing_in_threads():
            yield
    finally:
        predictor_module.multiprocessing = real_multiprocessing


@contextmanager
def file_listing_in_threads() -> Iterator[None]:
    """nnU-Net lists a dataset's files (``create_lists_from_splitted_dataset_folder``, a regex
    per file name) with a process pool from the default start method: a fork, which can hang
    in a process whose torch threads already ran (it did, in fine-tuning's dataset check), and
    as a spawned pool it costs 0.5 s per model. Threads give the same lists."""
    import nnunetv2.utilities.utils as nnunet_utils

    real_pool = nnunet_utils.Pool
    nnunet_utils.Pool = _thread_pool
    try:
        yield
    finally:
        nnunet_utils.Pool = real_pool


@contextmanager
def validation_exports_in_process() -> Iterator[None]:
    """Within the context, nnU-Net's trainer exports its final validation in a thread pool of
    this process (its ``perform_actual_validation`` takes the pool from its module's
    ``multiprocessing``). Spawned export workers would pickle nnU-Net's export function by
    name, and importing TotalSegmentator replaces that name with TS's patched version
    (``totalsegmentator.nnunet`` patches nnU-Net's export at import), so the pickling fails;
    threads need no pickling, and on a CPU they save each worker's torch import."""
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module

    real_multiprocessing = trainer_module.multiprocessing
    trainer_module.multiprocessing = _ThreadMultiprocessing(real_multiprocessing)
    try:
        yield
    finally:
        trainer_module.multiprocessing = real_multiprocessing
