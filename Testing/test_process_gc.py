"""The garbage collector's settings for a one-run command process (cli/process_gc.py): set in the
``tucker-segment`` process, never in a process that calls ``main()`` (these tests, the worker)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

from TuckerSegmentLib.cli import process_gc

LIB = Path(__file__).resolve().parents[1] / "TuckerSegment"


def _python(code: str, env: dict) -> dict:
    """Run ``code`` in a fresh interpreter (its collector state is its own); its last stdout line
    is JSON."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env, "PYTHONPATH": str(LIB)},
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_command_process_collects_rarely_while_importing_then_as_usual(isolated_home):
    seen = _python(
        """
import gc, json
from TuckerSegmentLib.cli import process_gc
default = gc.get_threshold()
seen = {}
def command():
    seen["importing"] = gc.get_threshold()
    import torch  # a heavy import, as the real commands do
    process_gc.imports_done()
    seen["frozen_after_imports"] = gc.get_freeze_count()
    seen["running"] = gc.get_threshold()
    garbage = []
    garbage.append(garbage)  # a cycle made during the run
    del garbage
    seen["collected_in_run"] = gc.collect()
    process_gc.imports_done()  # a second call (the worker's next run) freezes nothing more
    seen["frozen_second_call"] = gc.get_freeze_count()
    return 0
code = process_gc.command_process(command)
print(json.dumps({**seen, "default": default, "code": code, "frozen_at_end": gc.get_freeze_count()}))
""",
        isolated_home,
    )
    assert seen["code"] == 0
    assert tuple(seen["importing"]) == process_gc.IMPORT_THRESHOLD
    assert seen["running"] == seen["default"]
    assert seen["frozen_after_imports"] > 10_000  # torch's objects, out of the collector's sight
    assert seen["collected_in_run"] >= 1  # the run's own cycles are still collected
    assert seen["frozen_second_call"] == seen["frozen_after_imports"]
    assert seen["frozen_at_end"] >= seen["frozen_after_imports"]


def test_the_real_command_ends_frozen_with_pythons_thresholds(isolated_home):
    """`tucker-segment info` through the entry point the installed command and
    ``python -m TuckerSegmentLib`` use: imports_done ran (thresholds back), all frozen at exit."""
    seen = _python(
        """
import gc, json, sys
from TuckerSegmentLib.cli.main import tucker_segment
default = gc.get_threshold()
sys.argv = ["tucker-segment", "info"]
code = tucker_segment()
print(json.dumps({"code": code, "default": default, "threshold": gc.get_threshold()}))
""",
        isolated_home,
    )
    assert seen["code"] == 0
    assert seen["threshold"] == seen["default"]  # imports_done ran before the command


WHEN_MAIN_RETURNS = """
import gc, json, sys
from TuckerSegmentLib.cli import process_gc
from {module} import main
seen = {{}}
def run():
    code = main({argv!r})
    seen.update(code=code, threshold=gc.get_threshold())
    return code
process_gc.command_process(run)
print(json.dumps(seen))
"""


def test_the_worker_leaves_the_freeze_to_its_first_run(isolated_home):
    """`worker` serves runs whose first one does the heavy imports: main() must not call
    imports_done before it (here the worker refuses at once: no owner in the environment)."""
    code = WHEN_MAIN_RETURNS.format(module="TuckerSegmentLib.cli.main", argv=["worker"])
    seen = _python(code, isolated_home)
    assert seen["code"] == 1
    assert tuple(seen["threshold"]) == process_gc.IMPORT_THRESHOLD


def test_the_dropin_calls_imports_done_after_tss_imports(isolated_home, tmp_path):
    """`tucker-totalsegmentator` checks TS's version (importing TS), then imports_done; an
    unknown --expert-df is refused after that, before any work."""
    argv = ["-i", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "out"), "--expert-df", "x=0.5"]
    code = WHEN_MAIN_RETURNS.format(
        module="TuckerSegmentLib.cli.totalsegmentator_dropin", argv=argv
    )
    seen = _python(code, isolated_home)
    assert seen["code"] == 1
    assert tuple(seen["threshold"]) != process_gc.IMPORT_THRESHOLD


def test_main_in_a_caller_leaves_the_collector_alone(cli):
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    assert cli("info").returncode == 0
    process_gc.imports_done()  # outside a command process: nothing
    assert gc.get_threshold() == threshold
    assert gc.get_freeze_count() == frozen


def test_the_entry_points_are_the_command_processes():
    text = (LIB.parent / "pyproject.toml").read_text()
    assert 'tucker-segment = "TuckerSegmentLib.cli.main:tucker_segment"' in text
    assert (
        'tucker-totalsegmentator = "TuckerSegmentLib.cli.totalsegmentator_dropin:tucker_totalsegmentator"'
        in text
    )
    main_module = (LIB / "TuckerSegmentLib" / "__main__.py").read_text()
    assert "sys.exit(tucker_segment())" in main_module
