"""OpenVINO, Intel's CPU inference runtime, running the Tucker network.

What a CPU user would reach for first, and on the CPUs measured it runs the Tucker network
(plain blocks, composed back into one conv where that is cheaper) faster than this project's
hand-written fused runtime at DF ≤ 0.7 (README, Performance). The torch network is converted
once per compressed model and OpenVINO version — at a small patch with dynamic spatial axes, which
keeps the conversion's memory small (tracing at the full patch took 11.8 GB) — and
saved beside the compressed model in the cache; a damaged or stale conversion (the weights changed)
is rebuilt, never used. The compiled model plugs into nnU-Net's predictor where the torch network
did: TS's pipeline is unchanged. fp32, or bf16 with ``--runtime openvino-bf16``: the same
conversion, compiled with OpenVINO's bf16 hint, which it follows only on CPUs with native bf16
(AVX512_BF16, AMX: where OpenVINO reports BF16) and otherwise runs in f32; the compiled model
says which it ran. The logits leave it in fp16 (:data:`~.precision.LOGITS_DTYPE`: what nnU-Net
accumulates them in), converted by OpenVINO at its output.

Privacy: ``import openvino`` sends a usage event to Google Analytics unless the user opted out
(its model converter's telemetry, found by this project's network guard). OpenVINO falls back to
its own no-op telemetry stub when ``openvino_telemetry`` cannot be imported, so
:func:`import_openvino` makes that import fail for this process before OpenVINO is loaded.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch
from torch import nn

from ..engine.tucker_block import TuckerConv3d
from ..errors import TuckerSegmentError, first_line
from .cpu_fusion import skip_merge_weights
from .precision import LOGITS_DTYPE

if TYPE_CHECKING:
    from .calibration import CalibrationRecipe

CONVERT_PATCH = 32  # voxels per axis of the example input used for tracing, at least
# A Tucker block doing more than this share of its conv's work is converted as one composed conv.
# Measured on one 3 mm patch against the original as TS runs it: DF 0.7 (shares 0.54–1.57) ran
# 1.54× at 0.8, 1.44× with plain blocks, 1.19× at the fused runtime's break-even of 0.5; DF 0.9
# (0.88–1.98) 1.07× composed, 0.87× plain; DF 0.5 alike at any of them (README, Performance).
DENSE_SHARE = 0.8
# what a conversion is made by; a change reconverts
CONVERTER = f"example-{CONVERT_PATCH}-dynamic-spatial-dense-{DENSE_SHARE}-skip-merged-v3"
# NNCF's int8 settings (its defaults), recorded with each quantized model: a change requantizes.
# Tried against them on 2026-12-01 (labels vs OpenVINO fp32 on six held-out phantom patches, mean
# Dice over the structures present; DF 0.3 timed in one process on the full-size 3 mm network):
# the MIXED preset with the instance norms' inputs left in fp32 agreed better (3 mm test model
# 0.52 → 0.53, organs expert 0.50 → 0.65, 3 mm original 0.75 → 0.91) but took 1865 ms instead
# of 1262 (fp32: 2057–2402), each half of it alone ~1670 ms; NNCF's SmoothQuant for convs gave
# 0.68 on the 3 mm model and 0.59 on the organs expert. None comes near the 0.99 that would make
# int8 a default, so the option stays the fast one.
INT8_RECIPE = "nncf-defaults-fast-bias-correction"
FOLDER = "openvino"


def import_openvino():  # noqa: ANN201
    """``openvino``, loaded with its telemetry replaced by its own no-op stub (no connection)."""
    import sys

    if sys.modules.get("openvino_telemetry") is not None:
        raise TuckerSegmentError(
            "OpenVINO's telemetry was imported before TuckerSegment could switch it off"
        )
    sys.modules["openvino_telemetry"] = None  # None in sys.modules: its import raises ImportError
    import openvino
    import openvino.tools.ovc.telemetry_utils as telemetry

    if not telemetry.tm.__name__.endswith("telemetry_stub"):  # OpenVINO changed its fallback
        raise TuckerSegmentError("could not switch OpenVINO's telemetry off; not using OpenVINO")
    return openvino


def import_nncf():  # noqa: ANN201
    """``nncf`` (OpenVINO's quantization library), with its telemetry — Google Analytics through
    the same ``openvino_telemetry`` — left as its own no-op stub."""
    import_openvino()  # blocks openvino_telemetry first
    import nncf
    from nncf.telemetry import wrapper

    if not isinstance(wrapper.telemetry, wrapper.NNCFTelemetryStub):  # its stub: a MagicMock
        raise TuckerSegmentError("could not switch NNCF's telemetry off; not quantizing")
    return nncf


def installed() -> bool:
    """Whether OpenVINO is installed, without importing it (0.35 s a process that may not use
    it); whether it can be used safely is known when it is imported."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def version() -> str | None:
    """OpenVINO's version, or None when it is not installed or cannot be used safely."""
    try:
        return import_openvino().__version__
    except (ImportError, TuckerSegmentError):
        return None


def _weights_digest(network: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class OpenVINONetwork(nn.Module):
    """A compiled OpenVINO model behind a torch module's forward (CPU; fp32, or bf16 where
    asked for and native: ``ran_in`` says which).

    nnU-Net predicts every patch at the plan's patch size (smaller images are padded to it), so
    the model is also compiled for that one static shape: OpenVINO's first inference of a new
    shape on the dynamic model costs seconds (measured 5.3 s against 1.5 s afterwards for the
    3 mm patch), a static compile 0.07 s. Other shapes use the dynamic model."""

    def __init__(  # noqa: ANN001
        self,
        model,
        out_channels: int,
        static_shape: tuple[int, ...] | None,
        precision: str = "fp32",
        logits: torch.dtype = LOGITS_DTYPE,
    ) -> None:
        super().__init__()
        if logits not in (torch.float16, torch.float32):
            raise ValueError(f"logits are handed over in fp16 or fp32, not {logits}")
        self.out_channels = out_channels
        self.precision = precision
        self.logits = logits
        self.ran_in: str | None = None
        self._model = model
        self._requests: dict[tuple[int, ...] | None, Any] = {}
        self._static_shape = tuple(static_shape) if static_shape else None
        self._tensor = import_openvino().Tensor  # looked up once, not per patch
        if self._static_shape:
            self._request_for(self._static_shape)

    def _request_for(self, shape: tuple[int, ...]) -> Any:
        key = shape if shape == self._static_shape else None
        if key not in self._requests:
            model = self._model.clone()
            if key is not None:
                model.reshape(list(key))
            if self.logits == torch.float16:
                model = _logits_in_fp16(model)
            compiled = _compile(model, self.precision)
            # what OpenVINO runs in on this CPU: f32, or bf16 where asked for and native
            self.ran_in = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
            self._requests[key] = compiled.create_infer_request()
        return self._requests[key]

    def release(self) -> None:
        """Free the compiled models and the memory their first pass set up (about 1.5 GB for a
        1.5 mm expert's patch); the next pass compiles again (0.2 s). A run of TS's five experts
        releases each when the next is loaded, so their memory is not held five times."""
        self._requests.clear()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape)
        request = self._request_for(shape)
        inputs = {0: x.detach().float().cpu().numpy()}
        if shape != self._static_shape:
            result = request.infer(inputs, share_inputs=True)
            return torch.from_numpy(next(iter(result.values())).copy())
        # The static request writes into a tensor of ours: OpenVINO's own output buffer is
        # overwritten by the next pass (nnU-Net's mirroring sums several), and copying it out
        # cost a pass over the logits (380 MB in fp16 for the 3 mm patch) per patch.
        out = torch.empty(tuple(request.get_output_tensor(0).shape), dtype=self.logits)
        request.set_output_tensor(0, self._tensor(out.numpy(), shared_memory=True))
        request.infer(inputs, share_inputs=True)
        return out


OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}  # our name → OpenVINO's hint
# The --runtime names that run under OpenVINO, and the inference precision each asks for.
OPENVINO_RUNTIMES = {"openvino": "fp32", "openvino-bf16": "bf16", "openvino-int8": "fp32"}


def native_bf16() -> bool:
    """Whether OpenVINO runs bf16 natively on this CPU (e.g. AVX512_BF16, AMX), by its own
    report; elsewhere a bf16 hint runs f32."""
    core = import_openvino().Core()
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _logits_in_fp16(model):  # noqa: ANN001, ANN202
    """``model`` with its output converted to fp16 by OpenVINO (the network still computes in
    its own precision). Half the bytes written per patch (with the skip merges, 3.47× → 4.19×
    the original at DF 0.3), and nnU-Net's accumulation of fp16 logits into its fp16 sum ran
    ~10× faster on the CPU than of fp32 ones (mixed dtypes take PyTorch's slow path; 43 against
    560 ms per 3 mm patch, measured 2026-12-01)."""
    ov = import_openvino()
    steps = ov.preprocess.PrePostProcessor(model)
    steps.output(0).tensor().set_element_type(ov.Type.f16)
    return steps.build()


def _compile(model, precision: str = "fp32"):  # noqa: ANN001, ANN202
    core = import_openvino().Core()
    hint = OPENVINO_PRECISIONS[precision]
    return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint})


Calibration = Union["CalibrationRecipe", list[np.ndarray], None]  # noqa: UP007 - a runtime alias


def _calibration_digest(calibration: Calibration) -> str | None:
    """The cache key of a calibration: a recipe's key (no patches made), or the patches' bytes."""
    if calibration is None:
        return None
    if hasattr(calibration, "key"):
        return calibration.key()
    digest = hashlib.sha256()
    for patch in calibration:
        digest.update(np.ascontiguousarray(patch).tobytes())
    return digest.hexdigest()


def _quantize(model, calibration: list[np.ndarray]):  # noqa: ANN001, ANN202
    """NNCF's post-training int8 quantization of the converted model, calibrated on
    ``calibration`` (runtime/calibration.py); the activations' ranges come from them."""
    import contextlib
    import logging
    import sys

    nncf = import_nncf()
    nncf.set_log_level(logging.ERROR)
    # NNCF draws progress bars on stdout, which carries the JSON of --json / --progress json
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.filterwarnings("ignore", category=UserWarning, module=r"nncf")
        return nncf.quantize(
            model,
            nncf.Dataset(calibration),
            subset_size=len(calibration),
            fast_bias_correction=True,  # INT8_RECIPE
        )


def example_size(network: nn.Module) -> list[int]:
    """The tracing input's size per axis: CONVERT_PATCH, or larger where the encoder's strides
    would leave fewer than 2 voxels at the bottleneck (instance norm needs more than one; TS's
    1.5 mm experts halve 5 times: 64 voxels)."""
    strides = getattr(getattr(network, "encoder", None), "strides", None) or []
    size = [CONVERT_PATCH] * 3
    for axis in range(3):
        factor = 1
        for stride in strides:
            factor *= int(stride[axis] if isinstance(stride, (list, tuple)) else stride)
        size[axis] = max(size[axis], 2 * factor)
    return size


def with_dense_blocks(network: nn.Module) -> nn.Module:
    """``network``, or a copy of it in which each Tucker block that would do more than
    DENSE_SHARE of its conv's work is one composed conv (the same function up to rounding).

    OpenVINO runs each of a block's three convs as its own pass over memory, so at DF 0.9 the
    plain blocks ran slower than the original under OpenVINO (0.94× against 1.13×, README); the
    first conv (one input channel) and the transposed convs count more work as blocks than
    composed at any DF ≥ 0.7. The fused runtime applies the same count at its own break-even."""

    def dear(module: nn.Module) -> bool:
        return isinstance(module, TuckerConv3d) and module.work_share() > DENSE_SHARE

    if not any(dear(module) for module in network.modules()):
        return network
    import copy

    copied = copy.deepcopy(network)  # keeps nnU-Net's shared references (decoder.encoder)
    composed: dict[int, nn.Module] = {}
    for name, module in list(copied.named_modules(remove_duplicate=False)):
        if dear(module):
            parent_name, _, child = name.rpartition(".")
            parent = copied.get_submodule(parent_name) if parent_name else copied
            setattr(parent, child, composed.setdefault(id(module), module.composed()))
    return copied


class SkipMerge(nn.Module):
    """One decoder stage's transposed Tucker block, skip concatenation and the next Tucker
    block's first 1×1×1 conv as two 1×1×1 convs summed: first(cat(last·t + b, skip)) =
    (U₁·last)·t + U₂·skip + U₁·b, with t the transposed block's core output. The same function
    (up to rounding) without the concatenated tensor or the upsampled C-channel one (the fused
    runtime's decoder step, here written into the OpenVINO graph). Measured on one DF 0.3 3 mm
    patch: the concatenations alone were 4.7 % of OpenVINO's time (its generic copy: a
    channels-last concat cannot be done in place)."""

    def __init__(self, tconv: TuckerConv3d, block: TuckerConv3d) -> None:
        super().__init__()
        with torch.no_grad():
            merged, u2, constant = skip_merge_weights(tconv, block)
            self.up_first, self.up_core = tconv.first, tconv.core
            self.low = nn.Conv3d(merged.shape[1], merged.shape[0], 1, bias=constant is not None)
            self.skip = nn.Conv3d(u2.shape[1], u2.shape[0], 1, bias=False)
            self.low.weight.copy_(merged[..., None, None, None])
            if constant is not None:
                self.low.bias.copy_(constant)
            self.skip.weight.copy_(u2[..., None, None, None])

    def forward(self, low: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.low(self.up_core(self.up_first(low))) + self.skip(skip)


def _mergeable_stages(decoder: nn.Module) -> list[int]:
    """The decoder stages whose transposed conv and first block are both Tucker blocks (run as
    blocks, not composed)."""
    if getattr(decoder, "deep_supervision", True) or not hasattr(decoder, "transpconvs"):
        return []
    return [
        s
        for s, stage in enumerate(decoder.stages)
        if isinstance(decoder.transpconvs[s], TuckerConv3d)
        and isinstance(getattr(stage.convs[0], "conv", None), TuckerConv3d)
    ]


class SkipMergedDecoder(nn.Module):
    """Class swapped onto the converted copy's nnU-Net UNetDecoder: its forward (inference, no
    deep supervision) with each mergeable stage's :class:`SkipMerge` in place of the transposed
    conv, the concatenation and the first block's first conv."""

    def forward(self, skips):  # noqa: ANN001, ANN201
        low = skips[-1]
        for s, stage in enumerate(self.stages):
            skip = skips[-(s + 2)]
            if str(s) in self.skip_merges:
                block = stage.convs[0]
                x = self.skip_merges[str(s)](low, skip)
                x = block.all_modules[1:](block.conv.last(block.conv.core(x)))
                low = stage.convs[1:](x)
            else:
                low = stage(torch.cat((self.transpconvs[s](low), skip), 1))
        return self.seg_layers[-1](low)


def with_skip_merges(network: nn.Module, in_place: bool = False) -> nn.Module:
    """A copy of ``network`` (``in_place``: ``network`` itself, already a copy) with its
    decoder's concatenations merged away where :func:`_mergeable_stages` finds Tucker blocks on
    both sides; ``network`` unchanged when none."""
    decoder = getattr(network, "decoder", None)
    if decoder is None or not _mergeable_stages(decoder):
        return network
    import copy

    copied = network if in_place else copy.deepcopy(network)
    decoder = copied.decoder
    decoder.skip_merges = nn.ModuleDict(
        {
            str(s): SkipMerge(decoder.transpconvs[s], decoder.stages[s].convs[0].conv)
            for s in _mergeable_stages(decoder)
        }
    )
    base = type(decoder)
    decoder.__class__ = type(f"SkipMerged{base.__name__}", (SkipMergedDecoder, base), {})
    return copied


def _convert(network: nn.Module, in_channels: int, folder: Path, calibration: Calibration) -> None:
    ov = import_openvino()

    from ..storage.atomic_dir import atomic_directory

    example = torch.zeros(1, in_channels, *example_size(network))
    shape = ov.PartialShape([1, in_channels, -1, -1, -1])
    with torch.no_grad(), warnings.catch_warnings():
        # OpenVINO traces with torch.jit: its deprecation and tracer notes are not the user's
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        try:
            dense = with_dense_blocks(network)  # a copy where any block was composed
            model = ov.convert_model(
                with_skip_merges(dense, in_place=dense is not network).eval(),
                example_input=example,
                input=[shape],
            )
        except Exception as error:  # noqa: BLE001 - OpenVINO's errors are pages of traceback
            cause = error  # OpenVINO wraps the tracer's error: the innermost one says why
            while cause.__cause__ is not None:
                cause = cause.__cause__
            why = first_line(cause)
            raise TuckerSegmentError(f"OpenVINO could not convert this network: {why}") from error
    if calibration is not None:
        patches = calibration.patches() if hasattr(calibration, "patches") else calibration
        model = _quantize(model, patches)
    with atomic_directory(folder) as staging:
        ov.save_model(model, str(staging / "model.xml"), compress_to_fp16=False)
        (staging / "source.json").write_text(
            json.dumps(
                {
                    "weights_sha256": _weights_digest(network),  # the blocks' weights
                    "openvino": version(),
                    "converter": CONVERTER,
                    "int8_calibration_sha256": _calibration_digest(calibration),
                    "nncf": import_nncf().__version__ if calibration is not None else None,
                    "int8_recipe": INT8_RECIPE if calibration is not None else None,
                }
            )
        )


def _load(folder: Path, digest: str, calibration: str | None):  # noqa: ANN202
    ov = import_openvino()

    source = json.loads((folder / "source.json").read_text())
    recorded = (
        source.get("weights_sha256"),
        source.get("openvino"),
        source.get("converter"),
        source.get("int8_calibration_sha256"),
        source.get("int8_recipe"),
    )
    recipe = INT8_RECIPE if calibration is not None else None
    if recorded != (digest, version(), CONVERTER, calibration, recipe):
        raise ValueError("stale conversion")
    return ov.Core().read_model(str(folder / "model.xml"))


def openvino_network(
    network: nn.Module,
    in_channels: int,
    out_channels: int,
    cache_dir: Path,
    patch_size: list[int] | tuple[int, ...] | None = None,
    calibration: Calibration = None,
    precision: str = "fp32",
    logits: torch.dtype = LOGITS_DTYPE,
) -> tuple[OpenVINONetwork, bool]:
    """The OpenVINO version of ``network``, converted once into ``cache_dir``/openvino, and
    compiled for ``patch_size`` (nnU-Net's patch) as well. With ``calibration`` (a
    CalibrationRecipe, or patches of network input) it is NNCF's int8 quantization instead, in
    ``cache_dir``/openvino-int8; a recipe makes its patches only when quantizing. ``precision``
    (fp32, bf16) is a compile-time hint: one conversion serves both; so is ``logits``, the dtype
    the logits are handed over in.
    Returns the network and whether the conversion came from the cache."""
    if version() is None:
        raise TuckerSegmentError(
            "--runtime openvino: OpenVINO is not installed (pip install openvino)"
        )
    calibration_digest = _calibration_digest(calibration)
    if calibration is not None:
        try:
            import_nncf()
        except ImportError:
            raise TuckerSegmentError(
                "--runtime openvino-int8 needs NNCF (pip install tuckersegment[int8])"
            ) from None
    folder = Path(cache_dir) / (FOLDER if calibration is None else f"{FOLDER}-int8")
    digest = _weights_digest(network)
    hit = True
    static = (1, in_channels, *patch_size) if patch_size else None
    try:
        # compiling (the patch shape, else the dynamic model) is what finds a damaged file
        converted = OpenVINONetwork(
            _load(folder, digest, calibration_digest), out_channels, static, precision, logits
        )
        converted._request_for(static or (1, in_channels, *example_size(network)))
    except Exception:  # noqa: BLE001 - missing, damaged or stale: rebuild, never use it
        hit = False
        _convert(network, in_channels, folder, calibration)
        converted = OpenVINONetwork(
            _load(folder, digest, calibration_digest), out_channels, static, precision, logits
        )
        converted._request_for(static or (1, in_channels, *example_size(network)))  # ran_in
    return converted, hit
