"""The paper's Table 1, reproduced from the built-in TS architectures (`--paper` counting)."""

import math

import pytest
from TuckerSegmentLib.engine.stats import stats_table
from TuckerSegmentLib.ts.architectures import builtin_spec

DFS = (0.9, 0.7, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05)
# (M-params as printed in the paper, i.e. truncated to 2 decimals; GFLOPs) for orig, then DFS
TABLE_1 = {
    "3mm": (
        [16.55, 14.87, 9.25, 4.92, 3.30, 1.98, 1.00, 0.34, 0.15],
        [369.14, 359.96, 230.90, 124.95, 87.69, 56.29, 33.16, 21.62, 19.54],
    ),
    "1.5mm": (
        [31.19, 27.92, 17.35, 9.24, 6.18, 3.69, 1.85, 0.62, 0.25],
        [480.56, 444.00, 281.48, 149.16, 103.09, 65.02, 37.82, 25.72, 24.01],
    ),
}


@pytest.mark.parametrize("model", ["3mm", "1.5mm"])
def test_table_1(model):
    rows = stats_table(builtin_spec(model, "organs"), DFS, rank_floor=8, policy="paper")
    params, gflops = TABLE_1[model]
    assert [row.df for row in rows] == [1.0, *DFS]
    for row, want_params, want_gflops in zip(rows, params, gflops, strict=True):
        assert math.floor(row.params / 1e4) / 100 == pytest.approx(want_params, abs=1e-9), row
        assert row.gflops == pytest.approx(want_gflops, rel=5e-4), row


def test_original_3mm_flops_are_the_papers_fvcore_count():
    rows = stats_table(builtin_spec("3mm"), (), policy="paper")
    assert rows[0].gflops == pytest.approx(369.144, abs=5e-4)


def test_default_policy_leaves_the_head_and_counts_fewer_flops_at_low_df():
    spec = builtin_spec("3mm")
    paper = stats_table(spec, (0.9,), policy="paper")
    default = stats_table(spec, (0.9,), policy="default")
    assert paper[0] == default[0]  # the original is the same network
    # factorizing the 32→118 head at full resolution only adds work at DF 0.9
    assert default[1].gflops < paper[1].gflops


@pytest.mark.parametrize("expert", ["organs", "vertebrae", "cardiac", "muscles", "ribs"])
def test_each_expert_has_its_ts_output_count(expert):
    classes = {"organs": 24, "vertebrae": 26, "cardiac": 18, "muscles": 23, "ribs": 26}
    assert builtin_spec("1.5mm", expert).num_classes == classes[expert] + 1
