"""The agreement with the original a set of ranks should give, read off measured points.

Kept energy is training-free, but what a user wants to know is the Dice it buys, and the link
between the two differs between networks. So it is measured once per checkpoint: `plan
--calibrate CT …` segments the user's CTs with one-DF and planned models of several sizes
beside the original (the `curves` measurement) and records, per point, the mean Dice and a few
signals of the ranks. A new plan's agreement is read off a monotone fit of those points, for
the signal that predicted the points left out best (leave-one-out), and that error is reported
with the prediction: a prediction without its error would promise too much.

Images differ in how much compression costs them (arXiv 2107.02927 maps a dataset's complexity
to that cost). With three or more calibration images, each image's loss of Dice relative to the
pooled fit is related to one complexity measure (the calibration's own records, made by
pipeline/image_complexity.py) by a power law, loss_image = loss_pooled × (complexity /
reference)^β; the measure is chosen by leaving one image out, and only
kept when it predicts the left-out images better than the pooled fit alone.
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
    image_dice: dict[str, float] = field(default_factory=dict)  # per calibration image


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
    image_complexity: dict[str, dict] = field(default_factory=dict)  # image → measures
    complexity: dict = field(default_factory=dict)  # the fitted mapping (fit_complexity)

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
    image_complexity: dict[str, dict] | None = None,
) -> Calibration:
    """A calibration from measured points: the signal with the smallest leave-one-out error,
    and, with the images' complexity, the complexity mapping (``fit_complexity``)."""
    if len(points) < 3:
        raise TuckerSegmentError("a calibration needs at least three measured points")
    errors = {s: _leave_one_out(points, s) for s in SIGNALS}
    chosen = min(SIGNALS, key=lambda s: errors[s])
    calibration = Calibration(
        model,
        source_checkpoint_sha256,
        rank_floor,
        list(images),
        points,
        chosen,
        errors[chosen],
        errors,
        dict(image_complexity or {}),
    )
    calibration.complexity = fit_complexity(calibration)
    return calibration


MIN_COMPLEXITY_IMAGES = 3
_MIN_LOSS = 0.01  # points where the pooled fit loses less carry no information on the ratio


def _pooled_knots(points: list[CalibrationPoint], signal: str, images: list[str]):  # noqa: ANN202
    """The monotone fit of the mean Dice over ``images`` only."""
    xs, ys = [], []
    for p in points:
        dice = [p.image_dice[i] for i in images if i in p.image_dice]
        if dice:
            xs.append(p.signals[signal])
            ys.append(sum(dice) / len(dice))
    return _monotone_fit(xs, ys)


def _image_factor(
    points: list[CalibrationPoint], signal: str, knots: list[tuple[float, float]], image: str
) -> float | None:
    """How much more (> 1) or less Dice ``image`` loses than the pooled fit: ratio of sums."""
    lost, pooled = 0.0, 0.0
    for p in points:
        base = 1.0 - _interpolate(knots, p.signals[signal])
        if image in p.image_dice and base >= _MIN_LOSS:
            lost += 1.0 - p.image_dice[image]
            pooled += base
    return max(lost, 1e-3) / pooled if pooled > 0 else None


def _exponent(logs: list[tuple[float, float]]) -> float | None:
    """β of log factor = β · log(complexity / reference), least squares through the origin."""
    zz = sum(z * z for z, _ in logs)
    return sum(z * y for z, y in logs) / zz if zz > 1e-12 else None


def _fit_measure(points, signal, images, complexity, measure):  # noqa: ANN001, ANN202
    """(reference, β) of one measure on ``images``, or None when it cannot be fitted."""
    values = {i: float(complexity[i][measure]) for i in images}
    if min(values.values()) <= 0:
        return None
    reference = math.exp(sum(math.log(v) for v in values.values()) / len(values))
    knots = _pooled_knots(points, signal, images)
    logs = []
    for image in images:
        factor = _image_factor(points, signal, knots, image)
        if factor is not None:
            logs.append((math.log(values[image] / reference), math.log(factor)))
    beta = _exponent(logs) if len(logs) >= 2 else None
    return None if beta is None else (reference, beta)


def _adjusted(base: float, value: float, reference: float, beta: float) -> float:
    return min(1.0, max(0.0, 1.0 - (1.0 - base) * (value / reference) ** beta))


def fit_complexity(calibration: Calibration) -> dict:
    """The complexity mapping: ``measure`` ("" when none helps), ``exponent``, ``reference``,
    the leave-one-image-out error of each measure and of the pooled fit alone (``none``), and
    why no measure was chosen."""
    images = [i for i in calibration.images if i in calibration.image_complexity]
    measures = [  # the measures every image has, in the order they were recorded
        m
        for m in (calibration.image_complexity[images[0]] if images else {})
        if all(m in calibration.image_complexity[i] for i in images)
    ]
    points = [p for p in calibration.points if all(i in p.image_dice for i in images)]
    if len(images) < MIN_COMPLEXITY_IMAGES or len(points) < 3:
        return {
            "measure": "",
            "reason": f"calibrated on {len(images)} image(s) with complexity; "
            f"≥ {MIN_COMPLEXITY_IMAGES} are needed to relate complexity to the loss",
        }
    signal = calibration.chosen_signal
    errors: dict[str, float] = {}
    for measure in ("none", *measures):
        per_image = []
        for left_out in images:
            rest = [i for i in images if i != left_out]
            knots = _pooled_knots(points, signal, rest)
            fitted = (
                None
                if measure == "none"
                else _fit_measure(points, signal, rest, calibration.image_complexity, measure)
            )
            if measure != "none" and fitted is None:
                break
            value = float(calibration.image_complexity[left_out].get(measure, 0) or 0)
            for p in points:
                base = _interpolate(knots, p.signals[signal])
                usable = fitted is not None and value > 0  # a zero measure has no power
                guess = _adjusted(base, value, *fitted) if usable else base
                per_image.append(abs(guess - p.image_dice[left_out]))
        else:
            errors[measure] = sum(per_image) / len(per_image)
    best = min(errors, key=lambda m: errors[m])
    result: dict = {"errors": errors, "none_error": errors["none"]}
    if best == "none":
        return {
            **result,
            "measure": "",
            "reason": "no complexity measure predicted the "
            "left-out images better than the pooled fit",
        }
    reference, beta = _fit_measure(points, signal, images, calibration.image_complexity, best)
    return {
        **result,
        "measure": best,
        "reference": reference,
        "exponent": beta,
        "error": errors[best],
    }


@dataclass
class Prediction:
    mean_dice: float
    error: float  # the calibration's leave-one-out mean absolute error
    signal: str
    inside_measured_range: bool
    complexity_measure: str = ""  # set when the image's complexity adjusted the prediction

    def to_json(self) -> dict:
        return asdict(self)


def predict(
    calibration: Calibration, signals: dict[str, float], complexity: dict | None = None
) -> Prediction:
    """The agreement for ``signals``; for one image's ``complexity`` (its measures), adjusted
    by the calibration's complexity mapping when it has one."""
    signal = calibration.chosen_signal
    xs = [p.signals[signal] for p in calibration.points]
    knots = _monotone_fit(xs, [p.mean_dice for p in calibration.points])
    x = signals[signal]
    base = _interpolate(knots, x)
    inside = min(xs) <= x <= max(xs)
    mapping = calibration.complexity or {}
    measure = mapping.get("measure", "")
    if complexity is None or not measure or not complexity.get(measure):
        return Prediction(base, calibration.leave_one_out_error, signal, inside)
    value = float(complexity[measure])
    adjusted = _adjusted(base, value, mapping["reference"], mapping["exponent"])
    return Prediction(adjusted, mapping["error"], signal, inside, measure)
