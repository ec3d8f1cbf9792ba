"""R = min(C, max(rank_floor, ceil(DF·C))) and its edge cases."""

import math
from fractions import Fraction

import pytest
from TuckerSegmentLib.engine.ranks import rank_for, tucker_ranks
from TuckerSegmentLib.errors import TuckerSegmentError


@pytest.mark.parametrize(
    ("channels", "df", "floor", "expected"),
    [
        (320, 0.3, 8, 96),  # ceil(96.0)
        (320, 0.7, 8, 224),  # 0.7·320 is 223.99999999999997 in floats: still 224
        (256, 0.3, 8, 77),  # ceil(76.8)
        (32, 0.1, 8, 8),  # floor wins over ceil(3.2)
        (32, 1.0, 8, 32),  # DF 1 keeps every channel
        (1, 0.3, 8, 1),  # never above the channel count
        (4, 0.05, 8, 4),  # floor above C: C
        (118, 0.05, 8, 8),
        (118, 0.05, 1, 6),
        (25, 0.9, 8, 23),
    ],
)
def test_rank_formula(channels, df, floor, expected):
    assert rank_for(channels, df, floor) == expected


def test_rank_formula_matches_definition_over_a_grid():
    """Against exact rational arithmetic: the DF as the decimal the user typed."""
    for channels in (1, 3, 8, 25, 32, 64, 118, 128, 256, 320, 512):
        for df in ("0.05", "0.1", "0.2", "0.3", "0.4", "0.5", "0.7", "0.9", "1.0"):
            for floor in (1, 8, 16):
                want = min(channels, max(floor, math.ceil(Fraction(df) * channels)))
                assert rank_for(channels, float(df), floor) == want


def test_tucker_ranks_are_in_out_order():
    assert tucker_ranks(512, 256, 0.3) == (154, 77)


@pytest.mark.parametrize("df", [0, -0.1, 1.0001, 2, float("nan"), "abc", None])
def test_df_outside_unit_interval_is_refused(df):
    with pytest.raises(TuckerSegmentError, match="DF"):
        rank_for(32, df)


@pytest.mark.parametrize("floor", [0, -1, 2.5, True])
def test_bad_rank_floor_is_refused(floor):
    with pytest.raises(TuckerSegmentError, match="rank floor"):
        rank_for(32, 0.3, floor)
