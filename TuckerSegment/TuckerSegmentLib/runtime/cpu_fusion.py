"""Fused CPU execution of a Tucker-compressed nnU-Net (same math, less memory traffic).

At full resolution a TS network is memory-bound on a CPU: every 1×1×1 conv, instance norm and
activation streams a tensor of 1.6 M voxels × C channels. Tucker blocks add two such passes per
conv, which is why the plain blocks barely beat the original there. This module runs the same
network with fewer passes, computing the same in fp32 (to fp32 tolerance); only the logits are
handed over rounded to fp16 (below):

- channels-last layout throughout, so 1×1×1 convs are plain matrix products (no reorders);
- instance norm folded into the Tucker block's last 1×1×1 conv: the output's mean and variance
  follow from the rank-R core output's mean and R×R Gram matrix (mean W·μ + b, variance
  diag(W Σ Wᵀ)), so the C-channel output is written once, normalized, then activated in place;
- in the decoder, transposed conv, skip concatenation and the next block's first 1×1×1 conv are
  one linear map, applied without building the concatenated tensor;
- the 1×1×1 segmentation head is one matrix product writing nnU-Net's layout directly, in the
  fp16 nnU-Net sums the logits in (precision.LOGITS_DTYPE), chunk by chunk from cache.

Applied by switching module classes (the state dict is unchanged). Only for fp32 on the CPU and
the PlainConvUNet layout TS uses; anything else runs the modules' own forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.tucker_block import TuckerConv3d
from .precision import LOGITS_DTYPE

_CL = torch.channels_last_3d


def _active(x: torch.Tensor) -> bool:
    """Fusion runs for fp32 CPU tensors outside autocast."""
    return (
        x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
    )


def _rows(x: torch.Tensor) -> torch.Tensor:
    """A (1, C, D, H, W) tensor as a (D·H·W, C) matrix (a view in channels-last layout)."""
    x = x.contiguous(memory_format=_CL)
    return x.permute(0, 2, 3, 4, 1).reshape(-1, x.shape[1])


def _volume(rows: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`_rows`: a channels-last (1, C, D, H, W) view."""
    return rows.view(1, *spatial, rows.shape[1]).permute(0, 4, 1, 2, 3)


def _matrix(conv: nn.Conv3d) -> torch.Tensor:
    """A 1×1×1 conv's weight as a (C_out, C_in) matrix."""
    return conv.weight.reshape(conv.weight.shape[0], -1)


_CHUNK_ELEMENTS = 1 << 18  # rows handled per step: a chunk's intermediates stay in cache


def _chunks(n_rows: int, channels: int) -> list[slice]:
    step = max(1024, _CHUNK_ELEMENTS // max(channels, 1))
    return [slice(start, min(n_rows, start + step)) for start in range(0, n_rows, step)]


def _gram_stats(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (C) and covariance (C×C) of the rows in float64, in one pass.

    Each chunk is shifted by the first chunk's mean before its fp32 Gram product (no
    cancellation when a channel's mean is large against its spread); sums are float64."""
    n, c = rows.shape
    parts = _chunks(n, c)
    shift = rows[parts[0]].mean(0)
    total = torch.zeros(c, dtype=torch.float64)
    gram = torch.zeros(c, c, dtype=torch.float64)
    for part in parts:
        centered = rows[part] - shift
        total += centered.sum(0, dtype=torch.float64)
        gram += (centered.T @ centered).double()
    offset = total / n
    return shift.double() + offset, gram / n - torch.outer(offset, offset)


def _norm_affine(norm: nn.Module, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    if norm.affine:
        return norm.weight.double(), norm.bias.double()
    ones = torch.ones(channels, dtype=torch.float64)
    return ones, torch.zeros(channels, dtype=torch.float64)


def _folded_pointwise(
    z: torch.Tensor, weight: torch.Tensor, norm: nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``norm(weight @ z + bias)`` as one affine map of z (instance norm).

    The bias cancels (instance norm removes each channel's mean)."""
    mean, cov = _gram_stats(z)
    w = weight.double()
    var = ((w @ cov) * w).sum(1).clamp_min(0)
    gamma, beta = _norm_affine(norm, w.shape[0])
    scale = gamma / torch.sqrt(var + norm.eps)
    folded_w = scale[:, None] * w
    folded_b = beta - scale * (w @ mean)
    return folded_w.float(), folded_b.float()


def _activate_(rows: torch.Tensor, nonlin: nn.Module) -> torch.Tensor:
    if isinstance(nonlin, nn.LeakyReLU):
        return torch.nn.functional.leaky_relu_(rows, nonlin.negative_slope)
    if isinstance(nonlin, nn.ReLU):
        return rows.relu_()
    return nonlin(rows)


@dataclass(frozen=True)
class Projection:
    """The 1×1×1 conv that consumes a block's activated output and nothing else (the next
    Tucker block's first conv, or the segmentation head): applied chunk by chunk while the
    output is in cache, so the output itself is never written to memory."""

    weight: torch.Tensor  # (K, C)
    bias: torch.Tensor | None = None
    channels_first: bool = False  # write (K, voxels), nnU-Net's layout for the head
    dtype: torch.dtype = torch.float32  # of what is written (the head: LOGITS_DTYPE)

    def empty(self, n_rows: int) -> torch.Tensor:
        k = self.weight.shape[0]
        return torch.empty((k, n_rows) if self.channels_first else (n_rows, k), dtype=self.dtype)

    def apply(self, chunk: torch.Tensor, out: torch.Tensor, part: slice) -> None:
        target = out[:, part] if self.channels_first else out[part]
        direct = target if out.dtype == torch.float32 else None  # else computed in cache, rounded
        if self.channels_first:
            result = torch.mm(self.weight, chunk.T, out=direct)
            bias = None if self.bias is None else self.bias[:, None]
        else:
            result = torch.mm(chunk, self.weight.T, out=direct)
            bias = self.bias
        if bias is not None:
            result.add_(bias)
        if direct is None:
            target.copy_(result)


def _pointwise_activated(
    rows: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    nonlin: nn.Module,
    then: Projection | None = None,
) -> torch.Tensor:
    """activation(rows @ weightᵀ + bias), chunk by chunk (the activation runs in cache),
    or its projection by ``then``."""
    n = rows.shape[0]
    width = weight.shape[0] if then is None else max(weight.shape[0], then.weight.shape[0])
    out = torch.empty(n, weight.shape[0], dtype=rows.dtype) if then is None else then.empty(n)
    for part in _chunks(n, width):
        chunk = torch.mm(rows[part], weight.T, out=out[part] if then is None else None)
        _activate_(chunk.add_(bias), nonlin)  # addmm's broadcast copy of the bias is slower
        if then is not None:
            then.apply(chunk, out, part)
    return out


def _normalize_activate_(
    rows: torch.Tensor, norm: nn.Module, nonlin: nn.Module, then: Projection | None = None
) -> torch.Tensor:
    """Instance norm and activation of a (voxels, C) matrix, in place, chunk by chunk; or,
    with ``then``, its projection."""
    mean, cov = _gram_stats(rows)
    gamma, beta = _norm_affine(norm, rows.shape[1])
    scale = gamma / torch.sqrt(torch.diagonal(cov).clamp_min(0) + norm.eps)
    shift = (beta - scale * mean).float()
    scale = scale.float()
    out = rows if then is None else then.empty(rows.shape[0])
    width = rows.shape[1] if then is None else max(rows.shape[1], then.weight.shape[0])
    for part in _chunks(rows.shape[0], width):
        chunk = _activate_(rows[part].mul_(scale).add_(shift), nonlin)
        if then is not None:
            then.apply(chunk, out, part)
    return out


DENSE_SHARE = 0.5  # a Tucker block doing more than this share of its conv's work runs densely


def runs_dense(conv: TuckerConv3d) -> bool:
    """True when the block's three convs cost more than DENSE_SHARE of the composed conv."""
    return conv.work_share() > DENSE_SHARE


def _dense_weight(conv: TuckerConv3d) -> torch.Tensor:
    """last·core·first as one conv weight (C_out, C_in, k…), cached until a weight changes."""
    weights = (conv.first.weight, conv.core.weight, conv.last.weight)
    key = tuple((id(w), w._version) for w in weights)
    cached = conv.__dict__.get("_dense_weight")
    if cached is None or cached[0] != key:
        dense = torch.einsum(
            "or,rsxyz,sc->ocxyz", _matrix(conv.last), conv.core.weight, _matrix(conv.first)
        )
        conv.__dict__["_dense_weight"] = cached = (key, dense)
    return cached[1]


def _supported_block(block: nn.Module) -> bool:
    conv, norm, nonlin = (getattr(block, k, None) for k in ("conv", "norm", "nonlin"))
    dropout = getattr(block, "dropout", None)
    core = conv.core if isinstance(conv, TuckerConv3d) else conv
    return (
        isinstance(conv, (nn.Conv3d, TuckerConv3d))
        and not (isinstance(conv, TuckerConv3d) and conv.transposed)
        and getattr(core, "padding_mode", "zeros") == "zeros"
        and isinstance(norm, nn.InstanceNorm3d)
        and not norm.track_running_stats
        and isinstance(nonlin, (nn.LeakyReLU, nn.ReLU))
        and (dropout is None or isinstance(dropout, nn.Dropout3d | nn.Dropout))
    )


def tucker_first(block: nn.Module | None) -> Projection | None:
    """The projection that starts ``block`` when it is a Tucker block run factorized."""
    conv = getattr(block, "conv", None)
    if isinstance(conv, TuckerConv3d) and not runs_dense(conv):
        return Projection(_matrix(conv.first))
    return None


def block_forward(
    block: nn.Module,
    x: torch.Tensor | None,
    first_rows: torch.Tensor | None = None,
    spatial: tuple[int, ...] = (),
    then: Projection | None = None,
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """conv → instance norm → activation of one ConvDropoutNormReLU, fused (eval mode).

    ``first_rows``/``spatial``: the Tucker block's first 1×1×1 conv output and its grid, when
    the caller computed them already (then ``x`` is not needed). Returns the output volume
    (channels-last) and its grid; with ``then``, the projected rows instead of the volume."""
    conv = block.conv
    if isinstance(conv, TuckerConv3d) and (first_rows is not None or not runs_dense(conv)):
        if first_rows is None:
            first_rows = _rows(x) @ _matrix(conv.first).T
            spatial = tuple(x.shape[2:])
        z = conv.core(_volume(first_rows, spatial))
        z_rows = _rows(z)
        w, b = _folded_pointwise(z_rows, _matrix(conv.last), block.norm)
        out = _pointwise_activated(z_rows, w, b, block.nonlin, then)
        grid = tuple(z.shape[2:])
        return (out if then is not None else _volume(out, grid)), grid
    x = x.contiguous(memory_format=_CL)
    if isinstance(conv, TuckerConv3d):  # the bias is left out: instance norm removes it
        core = conv.core
        y = F.conv3d(x, _dense_weight(conv), None, core.stride, core.padding, core.dilation)
    else:
        y = conv(x)
    grid = tuple(y.shape[2:])
    out = _normalize_activate_(_rows(y), block.norm, block.nonlin, then)
    return (out if then is not None else _volume(out, grid)), grid


def run_blocks(
    blocks: list[nn.Module],
    x: torch.Tensor | None,
    first_rows: torch.Tensor | None = None,
    spatial: tuple[int, ...] = (),
    then: Projection | None = None,
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Blocks in sequence; each output that only feeds the next Tucker block's first conv (or
    ``then`` after the last block) is projected in cache instead of written out."""
    for i, block in enumerate(blocks):
        last = i == len(blocks) - 1
        projection = then if last else tucker_first(blocks[i + 1])
        out, spatial = block_forward(block, x, first_rows, spatial, projection)
        if projection is None:
            x, first_rows = out, None
        else:
            x, first_rows = None, out
    return (x if x is not None else first_rows), spatial


class FusedConvBlock(nn.Module):
    """Class swapped onto nnU-Net's ConvDropoutNormReLU instances (see :func:`fuse`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _active(x) or x.shape[0] != 1 or self.training:
            return super().forward(x)
        return block_forward(self, x)[0]


class FusedStack(nn.Module):
    """Class swapped onto nnU-Net's StackedConvBlocks: its blocks chained (see run_blocks)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = list(self.convs)
        if not _active(x) or x.shape[0] != 1 or self.training:
            return super().forward(x)
        return run_blocks(blocks, x)[0]


class FusedHead(nn.Conv3d):
    """A 1×1×1 segmentation head as one matrix product writing (1, C, D, H, W) contiguous, in
    the dtype fuse() set (LOGITS_DTYPE); outside the fused path (a batch, autocast) the conv's
    own forward and dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _active(x) or x.shape[0] != 1:
            return super().forward(x)
        rows = _rows(x)
        head = _head_projection(self)
        out = head.empty(rows.shape[0])
        for part in _chunks(rows.shape[0], self.out_channels):
            head.apply(rows[part], out, part)
        return out.view(1, self.out_channels, *x.shape[2:])


def skip_merge_weights(
    tconv: TuckerConv3d, block: TuckerConv3d
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """first(cat(last·t + b, skip)) = merged·t + U₂·skip + U₁·b for a decoder stage whose
    transposed conv and next block are Tucker blocks (t: the transposed block's core output,
    first = [U₁ U₂] split at the upsampled channels): (merged, U₂, U₁·b or None). Used by the
    fused runtime's decoder step and by OpenVINO's converted graph (openvino_runtime.SkipMerge)."""
    u = _matrix(block.first)  # a Tucker block's first conv has no bias
    u1, u2 = u[:, : tconv.out_channels], u[:, tconv.out_channels :]
    constant = None if tconv.last.bias is None else u1 @ tconv.last.bias
    return u1 @ _matrix(tconv.last), u2, constant


def _decoder_step(
    decoder: nn.Module,
    s: int,
    low: torch.Tensor | None,
    low_rows: torch.Tensor | None,
    low_grid: tuple[int, ...],
    skip: torch.Tensor,
    then: Projection | None,
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """transposed conv → concatenation with the skip → the stage's blocks (→ ``then``).

    ``low_rows``: the transposed conv's first 1×1×1 conv output, when the previous stage
    computed it in cache (then ``low`` is None)."""
    tconv = decoder.transpconvs[s]
    blocks = list(decoder.stages[s].convs)
    head = blocks[0]
    if (
        isinstance(tconv, TuckerConv3d)
        and isinstance(head.conv, TuckerConv3d)
        and not runs_dense(head.conv)
    ):
        # first(cat(L·t + b, skip)) = (U₁L)·t + U₂·skip + U₁b: no concatenated tensor
        if low_rows is None:
            low_rows = _rows(low) @ _matrix(tconv.first).T
        t = tconv.core(_volume(low_rows, low_grid))
        merged, u2, constant = skip_merge_weights(tconv, head.conv)
        rows = _rows(skip) @ u2.T
        rows.addmm_(_rows(t), merged.T)
        if constant is not None:
            rows += constant
        return run_blocks(blocks, None, rows, tuple(skip.shape[2:]), then)
    if low is None:  # low_rows came from the Tucker transposed conv's first conv
        up = tconv.last(tconv.core(_volume(low_rows, low_grid)))
    else:
        up = tconv(low.contiguous(memory_format=_CL))
    return run_blocks(blocks, torch.cat((up.contiguous(memory_format=_CL), skip), 1), then=then)


def _head_projection(head: nn.Module) -> Projection | None:
    if type(head) in (nn.Conv3d, FusedHead) and head.kernel_size == (1, 1, 1):
        dtype = getattr(head, "logits_dtype", LOGITS_DTYPE)  # set by fuse()
        return Projection(_matrix(head), head.bias, channels_first=True, dtype=dtype)
    return None


class FusedDecoder(nn.Module):
    """Class swapped onto nnU-Net's UNetDecoder (inference without deep supervision)."""

    def forward(self, skips):  # noqa: ANN001, ANN201
        if self.deep_supervision or not _active(skips[-1]) or skips[-1].shape[0] != 1:
            return super().forward(skips)
        low, low_rows, grid = skips[-1], None, tuple(skips[-1].shape[2:])
        stages = len(self.stages)
        for s in range(stages):
            if s == stages - 1:
                then = _head_projection(self.seg_layers[-1])
            else:
                nxt = self.transpconvs[s + 1]
                then = Projection(_matrix(nxt.first)) if isinstance(nxt, TuckerConv3d) else None
            out, grid = _decoder_step(self, s, low, low_rows, grid, skips[-(s + 2)], then)
            low, low_rows = (None, out) if then is not None else (out, None)
        if low is not None:
            return self.seg_layers[-1](low)
        return low_rows.view(1, -1, *grid)  # the head's (K, voxels) output is nnU-Net's layout


def _swap_class(module: nn.Module, mixin: type) -> None:
    base = type(module)
    fused = type(f"Fused{base.__name__}", (mixin, base), {"__module__": __name__})
    _CLASSES.setdefault((mixin, base), fused)
    module.__class__ = _CLASSES[(mixin, base)]


_CLASSES: dict[tuple[type, type], type] = {}


def fusable(network: nn.Module) -> bool:
    """True for nnU-Net's PlainConvUNet layout with instance norm (what TS's models are)."""
    decoder = getattr(network, "decoder", None)
    encoder = getattr(network, "encoder", None)
    if decoder is None or encoder is None or not hasattr(decoder, "transpconvs"):
        return False
    blocks = [m for m in network.modules() if hasattr(m, "all_modules") and hasattr(m, "conv")]
    heads = list(getattr(decoder, "seg_layers", []))
    return (
        bool(blocks)
        and all(_supported_block(b) for b in blocks)
        and bool(heads)
        and isinstance(heads[-1], nn.Conv3d)
        and heads[-1].kernel_size == (1, 1, 1)
    )


def fuse(network: nn.Module, logits: torch.dtype = LOGITS_DTYPE) -> bool:
    """Switch ``network`` (in place) to fused CPU execution, its head writing ``logits``; False
    if its layout is not supported."""
    if not fusable(network):
        return False
    for module in network.modules():
        if hasattr(module, "all_modules") and hasattr(module, "conv"):
            if not isinstance(module, FusedConvBlock):
                _swap_class(module, FusedConvBlock)
    for module in network.modules():
        if hasattr(module, "convs") and all(isinstance(b, FusedConvBlock) for b in module.convs):
            if not isinstance(module, FusedStack):
                _swap_class(module, FusedStack)
    if not isinstance(network.decoder, FusedDecoder):
        _swap_class(network.decoder, FusedDecoder)
    head = network.decoder.seg_layers[-1]
    if type(head) is nn.Conv3d:
        head.__class__ = FusedHead
    head.logits_dtype = logits
    return True
