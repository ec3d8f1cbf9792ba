"""Layer exactness at DF 1.0 and the factorization's properties, for both methods."""

import pytest
import torch
from torch import nn
from TuckerSegmentLib.engine.compress import CompressionSettings, compress_network
from TuckerSegmentLib.engine.factorize import explained_variance, factorize
from TuckerSegmentLib.engine.tucker_block import CONV_TYPES, TuckerConv3d, mode_ranks

METHODS = ["hosvd", "hooi"]


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _layers():
    torch.manual_seed(0)
    return {
        "conv": (nn.Conv3d(12, 20, 3, padding=1), (1, 12, 9, 10, 11)),
        "strided conv": (nn.Conv3d(16, 24, 3, stride=2, padding=1), (1, 16, 12, 10, 14)),
        "transposed conv": (nn.ConvTranspose3d(24, 16, 2, stride=2), (1, 24, 5, 6, 7)),
        "first conv (C_in = 1)": (nn.Conv3d(1, 32, 3, padding=1), (1, 1, 8, 8, 8)),
        "anisotropic conv": (
            nn.Conv3d(8, 8, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            (1, 8, 6, 10, 10),
        ),
    }


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", list(_layers()))
def test_df_one_reproduces_the_layer(kind, method):
    conv, shape = _layers()[kind]
    x = torch.randn(shape)
    wrapper = nn.Sequential(conv)
    with torch.no_grad():
        expected = conv(x)
        compress_network(wrapper, CompressionSettings(df=1.0, method=method))
        block = wrapper[0]
        assert isinstance(block, TuckerConv3d)
        got = block(x)
    assert got.shape == expected.shape
    assert _relative_error(got, expected) < 1e-4


def _multiply_adds(module: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of every (transposed) conv inside ``module`` on ``x``, counted from the
    shapes each one sees: a conv does C_in·k per output value, a transposed conv C_out·k per
    input value."""
    total = 0

    def count(layer, inputs, output):  # noqa: ANN001
        nonlocal total
        kernel = layer.weight[0, 0].numel()
        if isinstance(layer, nn.ConvTranspose3d):
            total += inputs[0].numel() * layer.out_channels * kernel
        else:
            total += output.numel() * layer.in_channels * kernel

    hooks = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, CONV_TYPES)]
    with torch.no_grad():
        module(x)
    for hook in hooks:
        hook.remove()
    return total


@pytest.mark.parametrize("ranks", [(2, 3), (7, 9), (12, 16)])
@pytest.mark.parametrize("kind", list(_layers()))
def test_a_composed_block_is_the_same_function_with_the_share_of_work_it_saves(kind, ranks):
    conv, shape = _layers()[kind]
    rank_in, rank_out = min(ranks[0], conv.in_channels), min(ranks[1], conv.out_channels)
    block = TuckerConv3d(conv, rank_in, rank_out)
    torch.manual_seed(2)
    for weight in (block.first.weight, block.core.weight, block.last.weight):
        nn.init.normal_(weight)
    x = torch.randn(shape)
    dense = block.composed()
    assert type(dense) is type(conv)
    assert dense.weight.shape == conv.weight.shape
    with torch.no_grad():
        assert _relative_error(dense(x), block(x)) < 1e-5
    assert block.work_share() == pytest.approx(_multiply_adds(block, x) / _multiply_adds(dense, x))


@pytest.mark.parametrize("method", METHODS)
def test_requested_rank_above_unfolding_rank_works(method):
    # C_in = 1: the output-channel unfolding is 32 × 27 (rank ≤ 27) but DF 1 asks for 32
    conv = nn.Conv3d(1, 32, 3)
    factors = factorize(conv.weight, mode_ranks(conv, 1, 32), method)
    assert factors.u0.shape == (32, 32)
    eye = torch.eye(32, dtype=factors.u0.dtype)
    assert torch.allclose(factors.u0.T @ factors.u0, eye, atol=1e-8)
    assert explained_variance(conv.weight, factors) == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_low_rank_block_equals_its_reconstructed_weight(method):
    torch.manual_seed(1)
    conv = nn.Conv3d(16, 24, 3, padding=1)
    factors = factorize(conv.weight, mode_ranks(conv, 5, 7), method)
    block = TuckerConv3d(conv, 5, 7)
    block.load_factors(factors, conv.bias)
    approx = nn.Conv3d(16, 24, 3, padding=1)
    with torch.no_grad():
        approx.weight.copy_(factors.reconstruct().float())
        approx.bias.copy_(conv.bias)
        x = torch.randn(1, 16, 6, 7, 8)
        assert _relative_error(block(x), approx(x)) < 1e-5
    variance = explained_variance(conv.weight, factors)
    assert 0.0 < variance < 1.0


def test_hooi_explains_at_least_as_much_as_hosvd():
    torch.manual_seed(2)
    weight = nn.Conv3d(32, 48, 3).weight
    hosvd = explained_variance(weight, factorize(weight, (12, 10), "hosvd"))
    hooi = explained_variance(weight, factorize(weight, (12, 10), "hooi"))
    assert hooi >= hosvd - 1e-9


def test_explained_variance_is_the_papers_formula():
    torch.manual_seed(3)
    weight = torch.randn(10, 6, 3, 3, 3)
    factors = factorize(weight, (4, 3), "hosvd")
    w = weight.double()
    expected = 1 - float((w - factors.reconstruct()).norm() ** 2 / w.norm() ** 2)
    assert explained_variance(weight, factors) == pytest.approx(expected, rel=1e-12)


def test_default_policy_keeps_pointwise_heads_and_paper_mode_factorizes_them():
    head = nn.Conv3d(32, 118, 1)
    kept = nn.Sequential(nn.Conv3d(8, 32, 3), head)
    layers = compress_network(kept, CompressionSettings(df=0.5))
    assert [layer.name for layer in layers] == ["0"]
    assert kept[1] is head
    paper = nn.Sequential(nn.Conv3d(8, 32, 3), nn.Conv3d(32, 118, 1))
    layers = compress_network(paper, CompressionSettings(df=0.5, policy="paper"))
    assert [layer.name for layer in layers] == ["0", "1"]
    assert isinstance(paper[1], TuckerConv3d)


def test_shared_references_are_all_replaced():
    conv = nn.Conv3d(4, 8, 3)
    net = nn.Module()
    net.conv = conv
    net.all_modules = nn.Sequential(conv, nn.ReLU())  # nnU-Net keeps both references
    compress_network(net, CompressionSettings(df=0.5))
    assert isinstance(net.conv, TuckerConv3d)
    assert net.all_modules[0] is net.conv


@pytest.mark.parametrize("method", ["hosvd", "hooi"])
def test_explained_variance_equals_the_reconstruction_error(method):
    """The shortcut ‖W − Ŵ‖² = ‖W‖² − ‖core‖² holds for both methods' factors."""
    weight = torch.randn(24, 12, 3, 3, 3, dtype=torch.float64)
    factors = factorize(weight, (7, 5), method)
    residual = float((weight - factors.reconstruct()).pow(2).sum())
    expected = 1.0 - residual / float(weight.pow(2).sum())
    assert explained_variance(weight, factors) == pytest.approx(expected, rel=1e-9)


def test_remembered_bases_give_the_same_factors_without_a_second_eigendecomposition(
    monkeypatch,
):
    """The warm worker keeps HOSVD's bases (they don't depend on the ranks): a second DF of
    the same weight slices them — the factors equal a cold decomposition bit for bit — and
    other weights get their own."""
    from TuckerSegmentLib.engine import factorize as module

    torch.manual_seed(3)
    weight = torch.randn(48, 32, 3, 3, 3)
    other = torch.randn(48, 32, 3, 3, 3)
    cold = {r: factorize(weight, r, "hosvd") for r in ((12, 8), (30, 20))}
    calls = []
    real = torch.linalg.eigh
    monkeypatch.setattr(torch.linalg, "eigh", lambda m: calls.append(1) or real(m))
    module.remember_bases()
    try:
        warm = {r: factorize(weight, r, "hosvd") for r in ((30, 20), (12, 8))}
        assert len(calls) == 2  # one basis per channel mode, for both rank pairs
        for r in cold:
            for name in ("core", "u0", "u1"):
                assert torch.equal(getattr(warm[r], name), getattr(cold[r], name)), (r, name)
        factorize(other, (12, 8), "hosvd")
        assert len(calls) == 4
        warm[(30, 20)].u0.mul_(0)  # a caller's factors are never a view of a kept basis
        assert torch.equal(factorize(weight, (30, 20), "hosvd").u0, cold[(30, 20)].u0)
    finally:
        module.remember_bases(False)
    factorize(weight, (12, 8), "hosvd")
    assert len(calls) == 6  # off: nothing kept
