"""Python's garbage collector set for a process that imports a great deal, runs once and exits.

Measured on TS's example CT (`segment --fast --df 0.3`, 2-core AMD EPYC, 9.6 s from start to
exit): the cyclic collector spent 0.9 s during the imports — torch, nnU-Net and TotalSegmentator
create hundreds of thousands of objects, and each full collection walks all of them again, though
almost none is garbage — 0.3 s during the run, and about 1.5 s after the run, when interpreter
finalization collects again and again while it tears the modules down. Three changes, only in a
``tucker-segment`` / ``tucker-totalsegmentator`` process, the warm worker's included — the
process entry points only, never a caller of ``main()`` (the tests, a Python user, Slicer's
console), since the end of the run freezes the whole interpreter:

* while importing, the youngest generation is collected every 100 000 allocations instead of
  every 700 (garbage is still collected, less often; the peak memory did not change);
* once the imports are done (:func:`imports_done`: once per process, before the command runs —
  after TS's imports for the commands that check TS's version, in the worker after its first
  run's; other commands import later, at Python's thresholds) the objects alive then —
  modules, classes, functions — are moved out of the collector's sight (``gc.freeze``) and the
  thresholds go back to Python's, so the run's collections only walk what the run created;
* at the end, everything still alive is frozen, so finalization has nothing to walk.

Together (three interleaved runs each): 9.3–9.8 s became 7.3–7.5 s, same peak memory, same
labels. Frozen objects are still freed by reference counting; only cycles among them stay until
the process ends, which it then does — without running their finalizers, so nothing may rely
on a cycle's ``__del__`` (outputs are written and closed in context managers).
"""

from __future__ import annotations

import gc
from collections.abc import Callable

IMPORT_THRESHOLD = (100_000, 50, 50)
_state: dict[str, object] = {"process": False, "imports_done": False, "default": None}


def command_process(main: Callable[[], int]) -> int:
    """Run ``main`` as the whole process's one command, with the collector set as above."""
    _state.update(process=True, imports_done=False, default=gc.get_threshold())
    gc.set_threshold(*IMPORT_THRESHOLD)
    try:
        return main()
    finally:
        gc.freeze()


def imports_done() -> None:
    """The heavy imports are behind us: freeze what they left, collect as usual from here on.

    Does nothing outside :func:`command_process`, and nothing after its first call, so a process
    that runs ``main()`` many times (the warm worker, the tests) freezes at most once."""
    if not _state["process"] or _state["imports_done"]:
        return
    _state["imports_done"] = True
    gc.freeze()
    gc.set_threshold(*_state["default"])  # type: ignore[misc]
