"""`--runtime auto` (the default): the fused runtime or OpenVINO, chosen from this CPU's runs.

The best runtime differs between CPUs (AVX-512 or AVX2 only, core counts, cache sizes) and
between runs: OpenVINO's first pass in a process costs seconds more than its later ones (its
memory is set up then; measured here 3.5 s against 1.2 s for a 3 mm patch, the fused runtime
2.4 s against 1.7 s), so one patch (TS's fast mode on a typical CT) and thirty (TS's five 1.5 mm
experts) choose differently. Nothing is hard-coded and nothing is timed apart from real work:
the runs themselves are the measurement. A compressed model's first run uses the fused
runtime, its next OpenVINO, each recording its first pass and the median of its later passes
in the cache (``runtime-choices.json``, per CPU, thread count, architecture and ranks; the
experts of one architecture share a record, so a first full-mode run tries both). From then on
each image takes the runtime with the least ``first + (patches − 1) × later`` for its number
of patches. OpenVINO's conversion is made on first use only and cached beside the compressed
model (openvino_runtime.py).

OpenVINO is tried only on an image the measured runtime would take at least
``TUCKERSEGMENT_EXPLORE_S`` seconds (default 10) to run: below that its conversion and its
costlier first pass cannot pay off in the run that measures it, and a one-patch fast-mode CT
(about 2 s of network) would pay OpenVINO's memory for nothing. So typical fast-mode runs stay
on the fused runtime, with the same labels run after run, and full mode (five experts, about
six patches each) measures both in its first run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHOICES_FILE = "runtime-choices.json"
_RAN_IN_PROCESS: set[str] = set()  # runtimes whose cold first pass this process has paid
RECORD = "in-run-first-and-later-v4"  # what a record holds; older records are not read
# (v4: both runtimes hand fp16 logits, OpenVINO without skip concatenations: timed anew)


def cpu_identity() -> str:
    """The CPU as the choice depends on it: model, flags that matter, cores."""
    from .devices import detect

    cpu = detect().cpu
    return f"{cpu.model}|{','.join(cpu.flags)}|{cpu.cores}"


def _threads() -> int:
    """The torch threads the predictor will give the network: nnU-Net caps them at its default
    number of processes (8)."""
    return min(8, torch.get_num_threads())


def record_key(spec: Any, layers: list) -> str:
    """Runs with this key share their measurements."""
    architecture = json.dumps(
        [spec.network_class_name, spec.arch_kwargs, spec.input_channels, list(spec.patch_size)],
        sort_keys=True,
        default=str,
    )
    ranks = ",".join(f"{layer.rank_in}x{layer.rank_out}" for layer in layers)
    digest = hashlib.sha256(f"{architecture}|{ranks}".encode()).hexdigest()[:16]
    return f"{RECORD}|{cpu_identity()}|threads {_threads()}|{digest}"


class Records:
    """``runtime-choices.json``: per key, each runtime's first-pass and later-pass milliseconds
    (and why OpenVINO could not be used). Written atomically; unreadable means empty."""

    def __init__(self, root: Path, key: str) -> None:
        self.file = Path(root) / CHOICES_FILE
        self.key = key

    def _all(self) -> dict:
        try:
            return json.loads(self.file.read_text())
        except (OSError, ValueError):
            return {}

    def get(self) -> dict:
        record = self._all().get(self.key) or {}
        return {"first_ms": {}, "ms_per_patch": {}, **record}

    def update(self, change: Callable[[dict], object]) -> None:
        records = self._all()
        record = {"first_ms": {}, "ms_per_patch": {}, **(records.get(self.key) or {})}
        change(record)
        records[self.key] = record
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.file.with_name(f".{self.file.name}.{os.getpid()}")
            tmp.write_text(json.dumps(records, indent=2))
            os.replace(tmp, self.file)
        except OSError:
            pass  # measured again next time


EXPLORE_S = 10.0  # default of TUCKERSEGMENT_EXPLORE_S (see the module's docstring)


def explore_ms() -> float:
    """The expected network time of an image from which an untried runtime is tried."""
    try:
        return max(0.0, float(os.environ.get("TUCKERSEGMENT_EXPLORE_S", EXPLORE_S))) * 1000
    except ValueError:
        return EXPLORE_S * 1000


def best_for(
    record: dict, candidates: list[str], patches: int, explore_from_ms: float | None = None
) -> tuple[str, bool]:
    """(runtime, whether it is being tried). The first candidate (the torch runtime, which
    needs no conversion) is tried while nothing is measured; another is tried when the best
    measured one would take at least ``explore_from_ms`` on this image; otherwise the least
    expected time for ``patches`` patches, ``first + (patches − 1) × later`` (where a run
    measured only one of the two, it stands in for the other)."""
    first, later = record["first_ms"], record["ms_per_patch"]
    measured = [name for name in candidates if name in first or name in later]
    if not measured:
        return candidates[0], True

    def expected_ms(name: str) -> float:
        cold, warm = first.get(name, later.get(name)), later.get(name, first.get(name))
        return cold + (max(1, patches) - 1) * warm

    best = min(measured, key=expected_ms)
    untried = [name for name in candidates if name not in measured]
    threshold = explore_ms() if explore_from_ms is None else explore_from_ms
    if untried and expected_ms(best) >= threshold:
        return untried[0], True
    return best, False


class LazyOpenVINO(nn.Module):
    """OpenVINO's network for a compressed model, converted (or read from the cache) only when
    a run first uses it, so a run that keeps the fused runtime pays nothing for it."""

    def __init__(self, plain: nn.Module, spec: Any, cache_entry: Path) -> None:
        super().__init__()
        self._plain = [plain]  # a list: not a submodule (its weights are not this state's)
        self._spec = spec
        self._cache_entry = Path(cache_entry)
        self._network: nn.Module | None = None

    def load(self) -> nn.Module:
        """The converted network; raises what the conversion raised."""
        if self._network is None:
            from .openvino_runtime import openvino_network

            spec = self._spec
            self._network, _ = openvino_network(
                self._plain[0],
                spec.input_channels,
                spec.num_classes,
                self._cache_entry,
                spec.patch_size,
            )
        return self._network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.load()(x)

    def release(self) -> None:
        if self._network is not None:
            self._network.release()


class MeasuredChoice(nn.Module):
    """The candidate runtimes of one compressed model; each image takes one at its first patch
    (:func:`best_for` with the predictor's patch count) and times every pass into the record.
    The runtime not chosen releases what it holds (OpenVINO's compiled memory)."""

    def __init__(self, candidates: dict[str, nn.Module], records: Records) -> None:
        super().__init__()
        self.candidates = nn.ModuleDict(candidates)
        self.records = records
        self.patches: Callable[[], int] = lambda: 1
        self.chosen: str | None = None
        self.tried = False  # the chosen runtime had not been measured before
        self.unavailable = ""  # why OpenVINO could not be used
        self._passes: dict[str, list[float]] = {}  # this process's passes per runtime
        self._record: dict = {}  # the record as this image's choice read it

    def start_image(self, patches: Callable[[], int]) -> None:
        """A new image (TS builds a predictor per model and image): choose again."""
        self.patches, self.chosen = patches, None

    def _choose(self) -> str:
        from ..errors import first_line

        names = list(self.candidates)
        while True:
            self._record = self.records.get()
            name, self.tried = best_for(self._record, names, self.patches())
            if name != "openvino":
                break
            try:
                self.candidates["openvino"].load()
                break
            except Exception as error:  # noqa: BLE001 - never fail a run because of OpenVINO
                self.unavailable = first_line(error)
                self.records.update(lambda r: r.update(openvino_unavailable=self.unavailable))
                del self.candidates["openvino"]
                names.remove("openvino")
        for other, candidate in self.candidates.items():
            if other != name:
                getattr(candidate, "release", lambda: None)()
        return name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.chosen is None:
            self.chosen = self._choose()
        name = self.chosen
        start = time.perf_counter()
        out = self.candidates[name](x)
        ms = (time.perf_counter() - start) * 1000
        cold = name not in _RAN_IN_PROCESS  # what a run in a new process pays at its first patch
        _RAN_IN_PROCESS.add(name)
        passes = self._passes.setdefault(name, [])
        if not cold:
            passes.append(ms)

        def note(record: dict) -> bool:  # kept once measured: the same image, the same choice
            if cold and name not in record["first_ms"]:
                record["first_ms"][name] = round(ms, 1)
            elif passes and (self.tried or name not in record["ms_per_patch"]):
                record["ms_per_patch"][name] = round(statistics.median(passes), 1)
            else:
                return False
            return True

        if note(self._record):  # the file is written only while something is being measured
            self.records.update(note)
        return out

    def release(self) -> None:
        for candidate in self.candidates.values():
            getattr(candidate, "release", lambda: None)()


def start_model(network: nn.Module, earlier: list, windows: Callable[[], int]) -> None:
    """TS runs one model at a time: the networks loaded before release what they hold
    (OpenVINO's compiled memory), and a measured choice learns the new image's patch count."""
    for other in earlier:
        if other is not network:
            getattr(other, "release", lambda: None)()
    if isinstance(network, MeasuredChoice):
        network.start_image(windows)


def choose_runtime(
    network: nn.Module, spec: Any, layers: list, cache_entry: Path, choices_root: Path
) -> tuple[str, nn.Module, dict[str, Any]]:
    """(runtime, the network to run, what the choice is based on) for a compressed network:
    the one candidate's name, or "per image" and a :class:`MeasuredChoice`. ``network`` is fused
    in place. Never fails because of OpenVINO: without it, the torch runtimes run."""
    from .cpu_fusion import fuse
    from .openvino_runtime import installed

    records = Records(choices_root, record_key(spec, layers))
    record = records.get()
    plain = copy.deepcopy(network) if installed() else None  # OpenVINO traces these
    torch_name = "fused" if fuse(network) else "eager"
    basis: dict[str, Any] = {"first_ms": record["first_ms"], "ms_per_patch": record["ms_per_patch"]}
    if plain is None:
        return torch_name, network, {**basis, "openvino_unavailable": "OpenVINO is not installed"}
    if record.get("openvino_unavailable"):
        return (
            torch_name,
            network,
            {**basis, "openvino_unavailable": record["openvino_unavailable"]},
        )
    candidates = {torch_name: network, "openvino": LazyOpenVINO(plain, spec, cache_entry)}
    return "per image", MeasuredChoice(candidates, records), basis
