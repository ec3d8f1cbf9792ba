"""The Tucker block that replaces one Conv3d or ConvTranspose3d.

first: 1×1×1 conv C_in→R_in, core: the original (transposed) conv R_in→R_out with the same
stride, padding, dilation and output_padding, last: 1×1×1 conv R_out→C_out carrying the bias.
"""

from __future__ import annotations

import torch
from torch import nn

from .factorize import TuckerFactors

CONV_TYPES = (nn.Conv3d, nn.ConvTranspose3d)


def _pointwise(in_ch: int, out_ch: int, bias: bool, like: nn.Module) -> nn.Conv3d:
    w = like.weight
    return nn.Conv3d(in_ch, out_ch, kernel_size=1, bias=bias, device=w.device, dtype=w.dtype)


def _shaped_like(conv: nn.Module, bias: bool) -> dict:
    """The keyword arguments that build a (transposed) conv with ``conv``'s kernel, stride,
    padding, dilation, device and dtype (channels given apart)."""
    w = conv.weight
    kwargs = dict(
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=bias,
        device=w.device,
        dtype=w.dtype,
    )
    if isinstance(conv, nn.ConvTranspose3d):
        kwargs["output_padding"] = conv.output_padding
    else:
        kwargs["padding_mode"] = conv.padding_mode
    return kwargs


class TuckerConv3d(nn.Module):
    """Three convolutions equivalent (at full rank) to one 3D (transposed) convolution."""

    def __init__(self, conv: nn.Module, rank_in: int, rank_out: int) -> None:
        """Build an empty block shaped for ``conv`` (weights are set by :meth:`load_factors`)."""
        super().__init__()
        if not isinstance(conv, CONV_TYPES):
            raise TypeError(f"expected Conv3d or ConvTranspose3d, got {type(conv).__name__}")
        if conv.groups != 1:
            raise ValueError("grouped convolutions are not supported")
        self.transposed = isinstance(conv, nn.ConvTranspose3d)
        self.rank_in, self.rank_out = int(rank_in), int(rank_out)
        self.first = _pointwise(conv.in_channels, self.rank_in, False, conv)
        self.core = type(conv)(self.rank_in, self.rank_out, **_shaped_like(conv, bias=False))
        self.last = _pointwise(self.rank_out, conv.out_channels, conv.bias is not None, conv)

    @property
    def in_channels(self) -> int:
        return self.first.in_channels

    @property
    def out_channels(self) -> int:
        return self.last.out_channels

    @torch.no_grad()
    def load_factors(self, factors: TuckerFactors, bias: torch.Tensor | None) -> None:
        """Set the three weights from factors of the original weight (modes 0, 1 of its layout)."""
        dtype = self.core.weight.dtype
        device = self.core.weight.device
        pointwise = (..., None, None, None)
        # Conv3d weight: (C_out, C_in, k..); ConvTranspose3d weight: (C_in, C_out, k..).
        u_in, u_out = (factors.u0, factors.u1) if self.transposed else (factors.u1, factors.u0)
        self.first.weight.copy_(u_in.T[pointwise].to(device, dtype))
        self.core.weight.copy_(factors.core.to(device, dtype))
        self.last.weight.copy_(u_out[pointwise].to(device, dtype))
        if bias is not None:
            self.last.bias.copy_(bias.to(device, dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.core(self.first(x)))

    def work_share(self) -> float:
        """Multiply-adds of the three convs over those of the one composed conv, per output
        voxel. Above a runtime's measured break-even (0.5 for the fused runtime, 0.8 for
        OpenVINO) it runs :meth:`composed` instead: the 1×1×1 convs' passes over memory cost
        more than the ranks save."""
        kernel = self.core.weight[0, 0].numel()
        stride = 1
        for step in self.core.stride:
            stride *= step
        c_in, c_out, r_in, r_out = self.in_channels, self.out_channels, self.rank_in, self.rank_out
        if self.transposed:  # first and core run on the input grid, stride times smaller
            tucker = (c_in * r_in + r_in * r_out * kernel) / stride + r_out * c_out
            return tucker / (c_in * c_out * kernel / stride)
        tucker = c_in * r_in * stride + r_in * r_out * kernel + r_out * c_out  # first: pre-stride
        return tucker / (c_in * c_out * kernel)

    @torch.no_grad()
    def composed(self) -> nn.Module:
        """The block as one (transposed) convolution with weight last·core·first: the same
        function (up to rounding) with the original layer's shape."""
        first = self.first.weight.reshape(self.rank_in, self.in_channels)
        last = self.last.weight.reshape(self.out_channels, self.rank_out)
        core = self.core
        shape = _shaped_like(core, bias=self.last.bias is not None)
        conv = type(core)(self.in_channels, self.out_channels, **shape)
        if self.transposed:  # weight (C_in, C_out, k…)
            conv.weight.copy_(torch.einsum("rc,rsxyz,os->coxyz", first, core.weight, last))
        else:  # weight (C_out, C_in, k…)
            conv.weight.copy_(torch.einsum("os,srxyz,rc->ocxyz", last, core.weight, first))
        if conv.bias is not None:
            conv.bias.copy_(self.last.bias)
        return conv.train(self.training)

    def extra_repr(self) -> str:
        kind = "transposed" if self.transposed else "conv"
        return f"{kind}, ranks (in={self.rank_in}, out={self.rank_out})"


def mode_ranks(conv: nn.Module, rank_in: int, rank_out: int) -> tuple[int, int]:
    """Ranks for modes (0, 1) of ``conv.weight``'s layout."""
    return (rank_in, rank_out) if isinstance(conv, nn.ConvTranspose3d) else (rank_out, rank_in)
