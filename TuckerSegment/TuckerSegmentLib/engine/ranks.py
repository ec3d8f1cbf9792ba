"""Tucker ranks from the downsampling factor (DF) and the rank floor.

R = min(C, max(rank_floor, ceil(DF * C))) for each of the two channel modes.
"""

from __future__ import annotations

import math

from ..errors import TuckerSegmentError

DEFAULT_RANK_FLOOR = 8


def check_df(df: float) -> float:
    """Return ``df`` as float, or raise if it is not in (0, 1]."""
    try:
        value = float(df)
    except (TypeError, ValueError):
        raise TuckerSegmentError(f"DF must be a number in (0, 1], got {df!r}") from None
    if not (0.0 < value <= 1.0) or math.isnan(value):
        raise TuckerSegmentError(f"DF must be in (0, 1], got {df}")
    return value


def check_rank_floor(rank_floor: int) -> int:
    """Return ``rank_floor`` as int, or raise if it is not a positive integer."""
    if isinstance(rank_floor, bool) or int(rank_floor) != rank_floor or rank_floor < 1:
        raise TuckerSegmentError(f"rank floor must be a positive integer, got {rank_floor!r}")
    return int(rank_floor)


def rank_for(channels: int, df: float, rank_floor: int = DEFAULT_RANK_FLOOR) -> int:
    """Tucker rank of one channel mode with ``channels`` channels."""
    df = check_df(df)
    rank_floor = check_rank_floor(rank_floor)
    # round() guards against float noise such as 0.7 * 320 = 223.99999999999997 -> 224
    scaled = math.ceil(round(df * channels, 9))
    return min(channels, max(rank_floor, scaled))


def tucker_ranks(
    in_channels: int, out_channels: int, df: float, rank_floor: int = DEFAULT_RANK_FLOOR
) -> tuple[int, int]:
    """``(R_in, R_out)`` for a conv with the given channel counts."""
    return rank_for(in_channels, df, rank_floor), rank_for(out_channels, df, rank_floor)
