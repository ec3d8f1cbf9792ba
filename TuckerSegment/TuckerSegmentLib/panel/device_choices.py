"""The panel's device list, detected in a child process.

Detection runs ``tucker-segment info --json`` in a background process, not in Slicer's: importing
torch and querying CUDA there would allocate GPU context memory for the whole Slicer session and a
broken CUDA/driver DLL could crash the panel's setup. A probe that fails or times out leaves a CPU
entry and says why. Each GPU is its own choice (``cuda:N``), passed through to the CLI.
"""

from __future__ import annotations

import json
import subprocess
import threading
from dataclasses import dataclass
from typing import Any

from .process_controller import cli_command


@dataclass(frozen=True)
class DeviceChoice:
    label: str
    value: str  # what `segment --device` gets: cpu, cuda:N, mps


@dataclass(frozen=True)
class DeviceChoices:
    choices: list[DeviceChoice]
    recommended: int  # index into choices
    precision: str
    df: float
    reason: str


CPU_ONLY = DeviceChoices([DeviceChoice("CPU", "cpu")], 0, "fp32", 0.3, "")


def device_choices(info: dict[str, Any]) -> DeviceChoices:
    """Choices from ``tucker-segment info --json``; the recommended one marked."""
    devices = info["devices"]
    rec = info["recommendation"]
    choices = []
    for gpu in devices["gpus"]:
        extra = ", tensor cores" if gpu["tensor_cores"] else ""
        choices.append(
            DeviceChoice(
                f"GPU {gpu['index']}: {gpu['name']}, {gpu['memory_gib']} GiB{extra}",
                f"cuda:{gpu['index']}",
            )
        )
    if devices["mps"]:
        choices.append(DeviceChoice("Apple GPU (MPS)", "mps"))
    cpu = devices["cpu"]
    choices.append(DeviceChoice(f"CPU: {cpu['model']}, {cpu['cores']} cores", "cpu"))
    wanted = "cuda:0" if rec["device"] == "cuda" else rec["device"]
    index = next((i for i, c in enumerate(choices) if c.value == wanted), len(choices) - 1)
    choices[index] = DeviceChoice(choices[index].label + " (recommended)", choices[index].value)
    return DeviceChoices(choices, index, rec["precision"], float(rec["df"]), rec["reason"])


def apply_recommendation(parameters: Any, devices: DeviceChoices, precisions: list[str]) -> bool:
    """Set the recommended precision and DF on the panel's parameter node, once per node.

    The parameter node is the panel's source of truth: values written to the widgets directly
    would be overwritten by the node's defaults when the GUI is (re)connected. A user's own
    choice, made after the first recommendation, is never overwritten."""
    if parameters.recommendationApplied:
        return False
    if devices.precision in precisions:
        parameters.precision = devices.precision
    parameters.df = devices.df
    parameters.recommendationApplied = True
    return True


class DeviceProbe:
    """``info --json`` in a child process; :meth:`result` once :meth:`done`."""

    def __init__(
        self, python: str | None = None, env: dict[str, str] | None = None, timeout: float = 120.0
    ) -> None:
        import os

        self._result: DeviceChoices | None = None
        self.error: str | None = None
        self._process = subprocess.Popen(
            cli_command(["info", "--json"], python),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env={**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})},
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
        )
        self._thread = threading.Thread(target=self._wait, args=(timeout,), daemon=True)
        self._thread.start()

    def _wait(self, timeout: float) -> None:
        try:
            out, err = self._process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.communicate()
            self.error = f"device detection took longer than {timeout:.0f} s"
            return
        if self._process.returncode != 0:
            last = (err.strip().splitlines() or ["no output"])[-1]
            self.error = f"device detection failed ({last})"
            return
        try:
            self._result = device_choices(json.loads(out))
        except (ValueError, KeyError, TypeError) as error:
            self.error = f"device detection gave unreadable output ({error})"

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self) -> DeviceChoices:
        """The detected choices, or CPU only when detection failed (see :attr:`error`)."""
        self._thread.join()
        return self._result or CPU_ONLY

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._thread.join(timeout=5)
