"""The agreement with the original a set of ranks should give, read off measured points.

Kept energy is training-free, but what a user wants to know is the Dice it buys, and the link
between the two differs between networks. So it is measured once per checkpoint: `plan
--calibrate CT …` segments the user's CTs with one-DF and planned models of several sizes
beside the original (the `curves` measurement) and records, per point, the mean Dice and a few
signals of the ranks. A new plan's agreement is read off a monotone fit of those points, for
the signal that predicted the points left out best (leave-one-out), and that error is reported
with the prediction: a prediction without its error would promise too much.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from ..errors import TuckerSegmentError

if TYPE_CHECKING:
    from .planner import LayerSpectrum

FORMAT = "tuckersegment-agreement-calibration"
FORMAT_VERSION = 1
# higher is better for every signal (error_sum enters negated), so one fit serves all
SIGNALS = ("neg_error_sum", "mean_explained_variance", "min_explained_variance")
SIGNAL_NAMES = {
    "neg_error_sum": "the layers' summed relative errors",
    "mean_explained_variance": "the layers' mean kept energy",
    "min_explained_variance": "the smallest kept energy of a layer",
}


def rank_signals(spectra: list[LayerSpectrum], ranks: dict[str, tuple[int, int]]) -> dict:
    """Signals of one network's ranks (layers not in ``ranks`` keep their full channels).
    ``neg_error_sum``: minus the sum of each layer's relative kernel error √(1 − kept energy),
    to first order how the layers' errors add up through the network; the other two are the
    mean and the smallest kept energy."""
    kept = [
        s.explained_variance(*ranks.get(s.name, (s.in_channels, s.out_channels))) for s in spectra
    ]
    return {
        "neg_error_sum": -sum(math.sqrt(max(0.0, 1.0 - v)) for v in kept),
        "mean_explained_variance": sum(kept) / max(1, len(kept)),
        "min_explained_variance": min(kept, default=1.0),
    }


@dataclass
class CalibrationPoint:
    method: str  # "tucker" (one DF) or "plan"
    removed: float  # share of the parameters asked to be removed
    params: int
    mean_dice: float  # mean over the calibration images
    signals: dict[str, float]


@dataclass
class Calibration:
    model: str
    source_checkpoint_sha256: str
    rank_floor: int
    images: list[str]
    points: list[CalibrationPoint]
    chosen_signal: str = ""
    leave_one_out_error: float = math.nan  # mean absolute error of the chosen signal
    errors: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict) -> Calibration:
        if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise TuckerSegmentError("not an agreement calibration of this version")
        fields = {k: v for k, v in data.items() if k not in ("format", "format_version")}
        fields["points"] = [CalibrationPoint(**p) for p in fields["points"]]
        return cls(**fields)


def _monotone_fit(xs: list[float], ys: list[float]) -> list[tuple[float, float]]:
    """The non-decreasing least-squares fit of ys over xs (pool adjacent violators), as
    (x, y) knots with distinct x, for linear interpolation."""
    pairs = sorted(zip(xs, ys, strict=True))
    blocks: list[list[float]] = []  # [sum_y, count, x_sum]
    for x, y in pairs:
        if blocks and blocks[-1][2] / blocks[-1][1] == x:  # one knot per x
            blocks[-1][0] += y
            blocks[-1][1] += 1
            blocks[-1][2] += x
        else:
            blocks.append([y, 1.0, x])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            y2, n2, x2 = blocks.pop()
            blocks[-1][0] += y2
            blocks[-1][1] += n2
            blocks[-1][2] += x2
    return [(b[2] / b[1], b[0] / b[1]) for b in blocks]


def _interpolate(knots: list[tuple[float, float]], x: float) -> float:
    """The fit at ``x`` (flat beyond the end knots)."""
    if x <= knots[0][0]:
        return knots[0][1]
    if x >= knots[-1][0]:
        return knots[-1][1]
    for (x0, y0), (x1, y1) in zip(knots, knots[1:], strict=False):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    raise AssertionError("unreachable")


def _leave_one_out(points: list[CalibrationPoint], signal: str) -> float:
    errors = []
    for i, point in enumerate(points):
        rest = points[:i] + points[i + 1 :]
        knots = _monotone_fit([p.signals[signal] for p in rest], [p.mean_dice for p in rest])
        errors.append(abs(_interpolate(knots, point.signals[signal]) - point.mean_dice))
    return sum(errors) / len(errors)


def calibrate(
    model: str,
    source_checkpoint_sha256: str,
    rank_floor: int,
    images: Iterable[str],
    points: list[CalibrationPoint],
) -> Calibration:
    """A calibration from measured points: the signal with the smallest leave-one-out error."""
    if len(points) < 3:
        raise TuckerSegmentError("a calibration needs at least three measured points")
    errors = {s: _leave_one_out(points, s) for s in SIGNALS}
    chosen = min(SIGNALS, key=lambda s: errors[s])
    return Calibration(
        model,
        source_checkpoint_sha256,
        rank_floor,
        list(images),
        points,
        chosen,
        errors[chosen],
        errors,
    )


@dataclass
class Prediction:
    mean_dice: float
    error: float  # the calibration's leave-one-out mean absolute error
    signal: str
    inside_measured_range: bool

    def to_json(self) -> dict:
        return asdict(self)


def predict(calibration: Calibration, signals: dict[str, float]) -> Prediction:
    signal = calibration.chosen_signal
    xs = [p.signals[signal] for p in calibration.points]
    knots = _monotone_fit(xs, [p.mean_dice for p in calibration.points])
    x = signals[signal]
    return Prediction(
        _interpolate(knots, x), calibration.leave_one_out_error, signal, min(xs) <= x <= max(xs)
    )
