"""Built-in descriptions of TotalSegmentator's two `total` architectures, for counting and
benchmarks when no weights are installed.

They are written as nnU-Net plans in the old format TS ships, and go through nnU-Net's own
``PlansManager`` conversion, exactly like a real TS model folder.
"""

from __future__ import annotations

from typing import Any

from ..errors import TuckerSegmentError
from .network_spec import NetworkSpec

# TS experts of the 1.5 mm `total` task: (dataset id, expert name, classes without background)
EXPERTS: dict[str, tuple[int, int]] = {
    "organs": (291, 24),
    "vertebrae": (292, 26),
    "cardiac": (293, 18),
    "muscles": (294, 23),
    "ribs": (295, 26),
}
FAST_DATASET = 297
FAST_CLASSES = 117
MODELS = ("3mm", "1.5mm")


def old_format_plans(
    features: list[int],
    strides: list[int],
    patch_size: list[int],
    spacing: list[float],
    dataset_name: str,
) -> dict[str, Any]:
    """nnU-Net plans (old format, as TS ships them) for a PlainConvUNet with 3×3×3 kernels."""
    n_stages = len(features)
    configuration = {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": list(patch_size),
        "median_image_size_in_voxels": list(patch_size),
        "spacing": list(spacing),
        "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False],
        "UNet_class_name": "PlainConvUNet",
        "UNet_base_num_features": features[0],
        "n_conv_per_stage_encoder": [2] * n_stages,
        "n_conv_per_stage_decoder": [2] * (n_stages - 1),
        "num_pool_per_axis": [n_stages - 1] * 3,
        "pool_op_kernel_sizes": [[s, s, s] for s in strides],
        "conv_kernel_sizes": [[3, 3, 3]] * n_stages,
        "unet_max_num_features": max(features),
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {
            "is_seg": False,
            "order": 3,
            "order_z": 0,
            "force_separate_z": None,
        },
        "resampling_fn_seg_kwargs": {
            "is_seg": True,
            "order": 1,
            "order_z": 0,
            "force_separate_z": None,
        },
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {
            "is_seg": False,
            "order": 1,
            "order_z": 0,
            "force_separate_z": None,
        },
        "batch_dice": False,
    }
    return {
        "dataset_name": dataset_name,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing),
        "original_median_shape_after_transp": list(patch_size),
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": configuration},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 3071.0,
                "mean": 100.0,
                "median": 80.0,
                "min": -1024.0,
                "percentile_00_5": -1000.0,
                "percentile_99_5": 1500.0,
                "std": 300.0,
            }
        },
    }


def spec_from_plans(plans: dict[str, Any], num_outputs: int, name: str) -> NetworkSpec:
    """Network spec of a one-channel (CT) model from its plans, via nnU-Net's PlansManager."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    configuration = PlansManager(plans).get_configuration("3d_fullres")
    return NetworkSpec.from_configuration(configuration, 1, num_outputs, name=name)


def builtin_plans(model: str, expert: str = "organs") -> dict[str, Any]:
    """Plans of TS's 3 mm model (Dataset297) or one 1.5 mm expert (Datasets 291–295)."""
    if model == "3mm":
        return old_format_plans(
            [32, 64, 128, 256, 320],
            [1, 2, 2, 2, 2],
            [112, 112, 128],
            [3.0, 3.0, 3.0],
            f"Dataset{FAST_DATASET}_TotalSegmentator_total_3mm_1559subj",
        )
    if model == "1.5mm":
        dataset_id, _ = _expert(expert)
        return old_format_plans(
            [32, 64, 128, 256, 320, 320],
            [1, 2, 2, 2, 2, 2],
            [128, 128, 128],
            [1.5, 1.5, 1.5],
            f"Dataset{dataset_id}_TotalSegmentator_part_{expert}",
        )
    raise TuckerSegmentError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")


def _expert(expert: str) -> tuple[int, int]:
    if expert not in EXPERTS:
        raise TuckerSegmentError(f"unknown expert {expert!r}; choose one of {', '.join(EXPERTS)}")
    return EXPERTS[expert]


def builtin_spec(model: str, expert: str = "organs") -> NetworkSpec:
    """Architecture of TS's 3 mm model or one 1.5 mm expert, for counting and benchmarks."""
    plans = builtin_plans(model, expert)
    classes = FAST_CLASSES if model == "3mm" else _expert(expert)[1]
    return spec_from_plans(plans, classes + 1, "3mm" if model == "3mm" else f"1.5mm-{expert}")
