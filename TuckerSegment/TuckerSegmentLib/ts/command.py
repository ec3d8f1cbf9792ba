"""TotalSegmentator's own command line, run in this process: its parser, its checks, its main.

`tucker-totalsegmentator` hands TS every argument that is not a compression option, so each
option TS has (and each one a later TS adds) means exactly what it means to TS. Two things are
ours: which device TS will pick (TS's own ``select_device``), and the two connections TS would
open on its own — the weights download and the online check of a ``-l`` licence number — which
happen only when the user allows them (``--download``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import TuckerSegmentError


def run_totalsegmentator_command(argv: list[str], prog: str) -> int:
    """TS's ``main()`` with ``argv``; its exit code (argparse errors: 2, as TS). TS's own
    ``sys.exit("ERROR: …")`` messages go to stderr, as Python would print them."""
    from totalsegmentator.bin.TotalSegmentator import main

    saved = sys.argv
    sys.argv = [prog, *argv]
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
            return 1
        return 0 if code is None else code
    finally:
        sys.argv = saved
    return 0


def ts_selected_device(ts_device: str) -> str:
    """The device TS will run on for its ``-d`` value (gpu, gpu:N, cpu, mps), by TS's own rule
    (no GPU → cpu), in torch's spelling: cpu, mps, cuda:N."""
    import contextlib
    import io

    from totalsegmentator.python_api import select_device, validate_device_type_api

    try:  # TS's own check of -d, which its parser makes later (select_device would fail first)
        validate_device_type_api(ts_device)
    except ValueError as error:
        raise TuckerSegmentError(str(error)) from None
    with contextlib.redirect_stdout(io.StringIO()):  # TS says "No GPU detected" itself when it runs
        chosen = select_device(ts_device)
    return str(chosen) if not isinstance(chosen, str) else chosen


@contextmanager
def weights_download_guard(allowed: bool) -> Iterator[None]:
    """TS downloads a missing model whenever an option needs it. Within the context a missing
    model is a one-line error unless downloads are ``allowed`` (installed ones load as usual)."""
    import totalsegmentator.python_api as api
    from totalsegmentator.config import get_weights_dir
    from totalsegmentator.map_tasks_config import TASK_ID_WEIGHTS_CONFIGS

    original = api.download_pretrained_weights

    def guarded(task_id):  # noqa: ANN001, ANN202 - TS's signature
        info = TASK_ID_WEIGHTS_CONFIGS.get(task_id, {})
        folder = Path(info.get("rel_path") or "") / info.get("foldername", str(task_id))
        if allowed or (Path(get_weights_dir()) / folder).exists():
            return original(task_id)
        raise TuckerSegmentError(
            f"TotalSegmentator's model for task {task_id} ({folder.name}) is not installed in "
            f"{get_weights_dir()}; add --download to let TS download it, or install it with "
            "totalseg_download_weights / totalseg_import_weights"
        )

    api.download_pretrained_weights = guarded
    try:
        yield
    finally:
        api.download_pretrained_weights = original


@contextmanager
def license_validation_guard(allowed: bool) -> Iterator[None]:
    """TS checks a ``-l`` licence number online before storing it. Within the context it is
    stored without that check unless connections are ``allowed``; TS's own offline check (its
    format) still applies when a licensed task runs."""
    import totalsegmentator.python_api as api

    original = api.set_license_number

    def offline(license_number, skip_validation=False):  # noqa: ANN001, ANN202 - TS's signature
        if not allowed and not skip_validation:
            print(
                "tucker-totalsegmentator: licence number stored without TotalSegmentator's online "
                "check (add --download to allow it)",
                file=sys.stderr,
            )
        return original(license_number, skip_validation=skip_validation or not allowed)

    api.set_license_number = offline
    try:
        yield
    finally:
        api.set_license_number = original
