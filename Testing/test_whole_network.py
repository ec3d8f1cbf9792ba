"""A TS-architecture network with random weights gives the same output at DF 1.0."""

import pytest
import torch
from TuckerSegmentLib.engine.compress import CompressionSettings, compress_network
from TuckerSegmentLib.engine.tucker_block import TuckerConv3d
from TuckerSegmentLib.ts.architectures import builtin_spec


# HOOI's DF-1 exactness is checked on every layer kind in test_tucker_block; here the wiring of
# whole networks (method-independent) with HOSVD: HOOI on TS's 320-channel layers takes minutes.
@pytest.mark.parametrize(("model", "method"), [("3mm", "hosvd"), ("1.5mm", "hosvd")])
def test_df_one_network_equals_original(model, method):
    spec = builtin_spec(model)
    network = spec.build("cpu", seed=7)
    torch.manual_seed(0)
    # fully convolutional: any size divisible by the total stride, with ≥ 2 voxels at the bottom
    size = 32 if model == "3mm" else 64
    x = torch.randn(1, 1, size, size, size)
    with torch.no_grad():
        expected = network(x)
        layers = compress_network(network, CompressionSettings(df=1.0, method=method))
        got = network(x)
    assert len(layers) == sum(isinstance(m, TuckerConv3d) for m in network.modules())
    assert len(layers) == (22 if model == "3mm" else 27)
    assert float((got - expected).norm() / expected.norm()) < 1e-4
    assert torch.equal(got.argmax(1), expected.argmax(1))
