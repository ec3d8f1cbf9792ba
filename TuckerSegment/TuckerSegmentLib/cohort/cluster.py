"""The Dask cluster a cohort runs on: a LocalCluster on 127.0.0.1, or the user's own.

Dask distributed does the distribution: task placement, worker restarts (its nanny) and the
rescheduling of a case whose worker died (``allowed-failures``: after that many deaths the case
is reported as failed). Nothing here is a protocol of our own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import TuckerSegmentError

# measured peak resident memory of one `segment` run (README, Performance): about 4.5 GiB in
# fast mode and up to 6.6 GiB in full mode on a 512×512×400 CT; a worker needs that much
FAST_GIB, FULL_GIB = 4.5, 7.0


def import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise TuckerSegmentError(
            "batch needs Dask distributed: pip install 'tuckersegment[cohort]'"
        ) from None
    return distributed


def check_scheduler_address(address: str) -> None:
    """A scheduler address Dask can use (scheme and port), checked before any work; whether
    the scheduler answers is known only when connecting."""
    import_distributed()
    from distributed.comm import get_address_host_port, parse_address
    from distributed.comm.registry import get_backend

    try:
        scheme, _ = parse_address(address)
        get_backend(scheme)
        if scheme != "inproc":
            get_address_host_port(address)
    except ValueError as error:
        raise TuckerSegmentError(f"--scheduler {address}: {error}") from None


def default_jobs(fast: bool) -> int:
    """Workers for this machine: one per core, no more than the memory holds at one case each.
    Measured on 2 cores (README, Cohorts): two single-threaded workers segment 1.25× as many
    cases per minute as one worker with two threads — resampling, preprocessing and export are
    single-threaded, and a second worker fills the cores meanwhile."""
    import psutil

    cores = os.cpu_count() or 1
    memory_gib = psutil.virtual_memory().total / 2**30
    by_memory = int(memory_gib // (FAST_GIB if fast else FULL_GIB))
    return max(1, min(cores, by_memory))


def threads_per_job(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


@contextmanager
def dask_client(jobs: int, scheduler: str | None, retries: int) -> Iterator[Any]:
    """A Dask client: connected to ``scheduler``, or to a new LocalCluster of ``jobs``
    single-threaded worker processes on 127.0.0.1 (no dashboard) that ends with the block.

    The LocalCluster speaks TLS with a certificate made for this run and held only by its own
    processes (Dask's ``Security.temporary``): on a shared machine another local user could
    otherwise connect to the scheduler's port and run code with our rights, on patients' CTs."""
    import dask

    distributed = import_distributed()
    config = {
        # a case whose worker died is run again elsewhere at most `retries` times
        "distributed.scheduler.allowed-failures": retries,
        # workers may start processes of their own (nnU-Net's --workers spawn)
        "distributed.worker.daemon": False,
    }
    with dask.config.set(config):
        if scheduler:
            try:
                client = distributed.Client(scheduler, timeout="15s")
            except OSError as error:
                raise TuckerSegmentError(
                    f"cannot reach the Dask scheduler at {scheduler}: {error}"
                ) from None
            with client:
                yield client
            return
        from distributed.security import Security

        cluster = distributed.LocalCluster(
            n_workers=jobs,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            protocol="tls://",
            security=Security.temporary(),
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        with cluster, distributed.Client(cluster) as client:
            yield client
