"""The fused CPU runtime computes what the plain modules compute (fp32 tolerance)."""

import copy

import pytest
import torch
from TuckerSegmentLib.engine.compress import (
    CompressionSettings,
    _replace_everywhere,
    compress_network,
)
from TuckerSegmentLib.engine.layer_policy import should_factorize
from TuckerSegmentLib.engine.tucker_block import TuckerConv3d
from TuckerSegmentLib.runtime.cpu_fusion import FusedConvBlock, _gram_stats, fusable, fuse
from TuckerSegmentLib.ts.architectures import builtin_spec, old_format_plans, spec_from_plans

PATCH = (1, 1, 40, 32, 48)  # not a cube, so a transposed axis would show


def _spec():
    plans = old_format_plans(
        [16, 32, 64, 64], [1, 2, 2, 2], [40, 32, 48], [1.5] * 3, "Dataset999_fusion"
    )
    return spec_from_plans(plans, 9, "fusion")


def _nonzero_norms(network: torch.nn.Module, seed: int) -> None:
    """Instance-norm affine parameters as a trained network has them (not 1 and 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.InstanceNorm3d):
                module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=generator))
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.3)


def _outputs(network, x):
    """The plain network's output and the fused one's, its logits in fp32 (the math, checked
    to fp32 tolerance; the fp16 handover is tested on its own)."""
    fused = copy.deepcopy(network)
    assert fuse(fused, logits=torch.float32)
    with torch.no_grad():
        return network(x), fused(x)


def _close(got, want):
    scale = want.abs().max()
    assert got.shape == want.shape and got.is_contiguous()
    assert (got - want).abs().max() <= 2e-5 * scale, float((got - want).abs().max() / scale)


@pytest.mark.parametrize("df", [1.0, 0.5, 0.3, 0.1])
def test_fused_tucker_network_matches_the_plain_blocks(df):
    network = _spec().build("cpu", seed=5).eval()
    _nonzero_norms(network, 5)
    compress_network(network, CompressionSettings(df=df, rank_floor=4))
    x = torch.randn(PATCH, generator=torch.Generator().manual_seed(1)) * 300 + 40
    want, got = _outputs(network, x)
    _close(got, want)


def test_fused_original_network_matches_the_original():
    network = _spec().build("cpu", seed=6).eval()
    _nonzero_norms(network, 6)
    want, got = _outputs(network, torch.randn(PATCH))
    _close(got, want)


def test_fused_mixed_network_matches_when_some_layers_stay_original():
    """The latency policy leaves some original convs between Tucker blocks."""
    network = _spec().build("cpu", seed=7).eval()
    _nonzero_norms(network, 7)
    originals = {n: m for n, m in network.named_modules() if should_factorize(m)}
    layers = compress_network(network, CompressionSettings(df=0.3, rank_floor=4))
    modules = dict(network.named_modules())
    for layer in layers[::2]:  # every other layer back to the original conv
        _replace_everywhere(network, modules[layer.name], originals[layer.name])
    kinds = {type(m) for m in network.modules()}
    assert TuckerConv3d in kinds and torch.nn.ConvTranspose3d in kinds
    want, got = _outputs(network, torch.randn(PATCH))
    _close(got, want)


def test_fused_logits_are_handed_over_in_fp16():
    """By default the head writes nnU-Net's fp16: the fp32 logits rounded (one fp16 step at
    most, where the product's order of summation differed)."""
    network = _spec().build("cpu", seed=10).eval()
    _nonzero_norms(network, 10)
    compress_network(network, CompressionSettings(df=0.3, rank_floor=4))
    full, half = copy.deepcopy(network), copy.deepcopy(network)
    assert fuse(full, logits=torch.float32) and fuse(half)
    x = torch.randn(PATCH)
    with torch.no_grad():
        want, got = full(x), half(x)
    assert got.dtype == torch.float16 and got.shape == want.shape and got.is_contiguous()
    step = torch.finfo(torch.float16).eps * want.abs().clamp_min(2**-14)
    assert ((got.float() - want).abs() <= step).all()
    with torch.no_grad():  # the head alone (no fused stage before it) writes fp16 too
        head = half.decoder.seg_layers[-1]
        assert head(torch.randn(1, head.in_channels, 8, 8, 8)).dtype == torch.float16


def test_fusion_keeps_the_state_dict_and_survives_copies():
    network = _spec().build("cpu", seed=8).eval()
    compress_network(network, CompressionSettings(df=0.5, rank_floor=4))
    keys = list(network.state_dict())
    fused = copy.deepcopy(network)
    fuse(fused)
    assert list(fused.state_dict()) == keys
    assert any(isinstance(m, FusedConvBlock) for m in fused.modules())
    again = copy.deepcopy(fused)
    again.load_state_dict(network.state_dict())  # what nnU-Net's predictor does
    x = torch.randn(PATCH)
    with torch.no_grad():
        assert torch.equal(again(x), fused(x))


def test_outside_fp32_cpu_the_modules_own_forward_runs():
    network = _spec().build("cpu", seed=9).eval()
    compress_network(network, CompressionSettings(df=0.5, rank_floor=4))
    fused = copy.deepcopy(network)
    fuse(fused)
    x = torch.randn(PATCH)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(fused(x), network(x))
    with torch.no_grad():  # batch of two: instance norm per sample, the plain path
        assert torch.equal(fused(x.repeat(2, 1, 1, 1, 1)), network(x.repeat(2, 1, 1, 1, 1)))


def test_gram_statistics_stay_exact_when_the_mean_dwarfs_the_spread():
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(300_000, 6, generator=generator) * 0.05 + torch.arange(6) * 500.0
    mean, cov = _gram_stats(rows)
    reference = rows.double()
    assert torch.allclose(mean, reference.mean(0), rtol=1e-9, atol=1e-9)
    want = torch.cov(reference.T, correction=0)
    assert torch.allclose(cov, want, rtol=1e-3, atol=1e-7)


def test_ts_architectures_are_fusable():
    for name, expert in (("3mm", "organs"), ("1.5mm", "organs")):
        network = builtin_spec(name, expert).build("meta")
        assert fusable(network), name
