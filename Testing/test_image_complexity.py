"""Image complexity for `plan --image`: the four measures on volumes whose answers are known,
and the mapping from complexity to the loss of agreement (arXiv 2107.02927's idea) recovering a
known power law and refusing to guess from too few images."""

from __future__ import annotations

import math

import numpy as np
import pytest
from TuckerSegmentLib.engine.agreement_prediction import CalibrationPoint, calibrate, predict
from TuckerSegmentLib.pipeline.image_complexity import (
    MEASURES,
    body_mask,
    entropy_bits,
    measure_complexity,
    surface_voxels,
)


def _volume():
    """Air around a 30×30×20 box of soft tissue with a gas pocket inside; two labelled cubes
    (6³ and 4³) and a 3-voxel speck below the structure threshold."""
    hu = np.full((40, 40, 20), -1000.0, dtype=np.float32)
    hu[5:35, 5:35, :] = 40.0
    hu[5:35, 20:35, :] = 60.0  # half the body in another 16-HU bin: one bit of entropy
    hu[15:18, 15:18, :] = -1000.0  # a gas pocket: inside the body's outline
    labels = np.zeros(hu.shape, dtype=np.int16)
    labels[8:14, 8:14, 5:11] = 1
    labels[25:29, 25:29, 5:9] = 2
    labels[30, 10, 3:6] = 7
    return hu, labels


def test_the_four_measures_on_a_volume_with_known_answers():
    hu, labels = _volume()
    body = body_mask(hu)
    assert body.sum() == 30 * 30 * 20  # the gas pocket is filled in, the air outside is not
    assert surface_voxels(labels) == (6**3 - 4**3) + (4**3 - 2**3) + 3
    measured = measure_complexity(hu, labels)
    assert measured.structures_present == 2  # the speck is below MIN_VOXELS
    assert measured.foreground_fraction == pytest.approx((216 + 64 + 3) / (30 * 30 * 20))
    assert measured.boundary_density == pytest.approx((152 + 56 + 3) / (216 + 64 + 3))
    gas = 3 * 3 * 20
    shares = np.array([15 * 30 * 20 - gas, 15 * 30 * 20, gas]) / (30 * 30 * 20)
    assert measured.body_entropy_bits == pytest.approx(float(-(shares * np.log2(shares)).sum()))
    assert entropy_bits(np.array([0.0, 1.0, 17.0, 20.0])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        measure_complexity(hu, labels[:-1])


def _calibration(exponent: float, images: int):
    """Points whose pooled agreement follows the mean kept energy, each image losing
    (its boundary density / reference)^exponent times the pooled loss; the other measures
    are unrelated to the loss."""
    rng = np.random.default_rng(0)
    density = [0.2 * 2**k for k in range(images)]
    reference = math.exp(np.mean(np.log(density)))
    names = [f"ct{k}.nii.gz" for k in range(images)]
    complexity = {
        name: {
            "foreground_fraction": float(rng.uniform(0.1, 0.5)),
            "structures_present": int(rng.integers(5, 40)),
            "boundary_density": d,
            "body_entropy_bits": float(rng.uniform(4, 7)),
        }
        for name, d in zip(names, density, strict=True)
    }
    points = []
    for energy in (0.5, 0.6, 0.7, 0.8, 0.9):
        loss = 1.0 - energy  # the loss of an image of reference complexity
        per_image = {
            n: 1.0 - loss * (d / reference) ** exponent for n, d in zip(names, density, strict=True)
        }
        signals = {
            "neg_error_sum": -10 * loss,
            "mean_explained_variance": energy,
            "min_explained_variance": energy - 0.2,
        }
        mean = sum(per_image.values()) / images
        points.append(CalibrationPoint("plan", 1 - energy, 1000, mean, signals, per_image))
    return calibrate("3mm", "0" * 64, 8, names, points, complexity), reference


def test_the_loss_of_agreement_is_related_to_the_measure_that_predicts_it():
    calibration, reference = _calibration(0.5, 4)
    mapping = calibration.complexity
    assert mapping["measure"] == "boundary_density"
    assert mapping["error"] < mapping["none_error"]
    assert set(mapping["errors"]) >= {"none", "boundary_density"}
    signals = {"neg_error_sum": -3.0, "mean_explained_variance": 0.7, "min_explained_variance": 0.5}
    plain = predict(calibration, signals)
    assert plain.complexity_measure == ""
    harder = predict(calibration, signals, {"boundary_density": 4 * reference})
    easier = predict(calibration, signals, {"boundary_density": reference / 4})
    assert harder.complexity_measure == "boundary_density"
    # loss = pooled loss × (density / reference)^β: β recovered, 4× as complex loses 2× as much
    assert mapping["exponent"] == pytest.approx(0.5, abs=1e-6)
    assert mapping["reference"] == pytest.approx(reference)
    assert 1 - harder.mean_dice == pytest.approx(2 * (1 - plain.mean_dice))
    assert 1 - easier.mean_dice == pytest.approx(0.5 * (1 - plain.mean_dice))
    assert harder.error == pytest.approx(mapping["error"])
    assert mapping["measure"] in MEASURES


def test_complexity_is_not_used_from_too_few_images_or_when_it_predicts_nothing():
    few, _ = _calibration(0.5, 2)
    assert few.complexity["measure"] == ""
    assert "≥ 3" in few.complexity["reason"]
    signals = {"neg_error_sum": -3.0, "mean_explained_variance": 0.7, "min_explained_variance": 0.5}
    assert predict(few, signals, {"boundary_density": 100.0}).complexity_measure == ""
    flat, _ = _calibration(0.0, 4)  # every image loses the same: nothing to relate
    assert flat.complexity["measure"] == ""
    assert "better than the pooled fit" in flat.complexity["reason"]
