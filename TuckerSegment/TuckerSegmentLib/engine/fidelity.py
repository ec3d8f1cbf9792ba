"""The default DF of each TS model, and why: the lowest DF trusted without fine-tuning.

A clinical default is a fidelity decision, not a speed decision. The Tucker paper (Radiology: AI
2025, Results and Supplement D) finds zero-shot (no fine-tuning) quality holding only down to a
moderate DF on the 1.5 mm experts, with the cardiac group collapsing first as DF falls and
lung_upper_lobe_left, rib_right_11/12 and subclavian_artery_right unstable; the authors' code
(ClinicalDataScience/tucker-cnn) defaults to a rank factor of 1/3 with a rank floor of 16 and
fine-tunes at DF 0.3 with a rank floor of 8. Hence the floors below. Lower DFs run faster (the
benchmark shows by how much) and are for fine-tuned models, or for a user whose own agreement
report (`segment --compare`) supports them: they are never recommended on speed alone.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DF = 0.3  # the one home of the default DF (CLI, Slicer panel, demo, recommendation)


@dataclass(frozen=True)
class Floor:
    """The lowest zero-shot DF for one TS model, and its basis."""

    df: float
    basis: str


ZERO_SHOT_FLOORS: dict[str, Floor] = {
    "3mm": Floor(0.3, "fast model; the authors' default rank factor 1/3"),
    "organs": Floor(0.3, "paper: quality holds to a moderate DF; authors' rank factor 1/3"),
    "vertebrae": Floor(0.3, "paper: quality holds to a moderate DF; authors' rank factor 1/3"),
    "muscles": Floor(0.3, "paper: quality holds to a moderate DF; authors' rank factor 1/3"),
    "ribs": Floor(
        0.3, "paper: rib_right_11/12 unstable below moderate DFs; authors' rank factor 1/3"
    ),
    "cardiac": Floor(0.5, "paper: the cardiac group is the first to collapse as DF falls"),
    # the networks TS's command line adds (tucker-totalsegmentator)
    "6mm": Floor(
        0.3,
        "TS's 6 mm model, the 3 mm model's family (authors' rank factor 1/3); as the crop model of "
        "--roi_subset its mask only places a box that TS widens by 20 voxels",
    ),
    "body": Floor(
        0.3,
        "two large classes (body trunk, extremities); as the crop model of --body_seg its mask "
        "only places a box",
    ),
}
# every other task's models (lung_vessels, cerebral_bleed, hip_implant, …)
OTHER_TASKS_FLOOR = Floor(
    0.5,
    "not studied in the paper; many are thin or small structures (vessels, bleeds, effusions, "
    "lesions), the kind that fails first as DF falls — the cardiac group's floor",
)


def is_default_df(df: float) -> bool:
    """Whether a DF (e.g. a slider's 0.30000000000000004) means the default."""
    return abs(df - DEFAULT_DF) < 1e-6


def floor_of(model: str) -> Floor:
    """A model's zero-shot floor (a task the paper did not study: OTHER_TASKS_FLOOR)."""
    return ZERO_SHOT_FLOORS.get(model, OTHER_TASKS_FLOOR)


def default_df(model: str) -> float:
    """The DF a model runs at when the user gives none."""
    return max(DEFAULT_DF, floor_of(model).df)


def below_floor_warning(model: str, df: float) -> str | None:
    """A one-line warning when an explicitly chosen DF is below the model's zero-shot floor."""
    floor = floor_of(model)
    if df >= floor.df:
        return None
    return (
        f"DF {df:g} for {model} is below its zero-shot fidelity floor (DF {floor.df:g}: "
        f"{floor.basis}); use it with a fine-tuned model or check the agreement with --compare"
    )


def defaults_text(other_tasks: bool = False) -> str:
    """``DF 0.3 (0.5 for the cardiac expert)``: the defaults in one phrase (``other_tasks``: also
    the default of the models of TS's other tasks)."""
    exceptions = {
        name: default_df(name) for name in ZERO_SHOT_FLOORS if default_df(name) != DEFAULT_DF
    }
    extra = [f"{df:g} for the {name} expert" for name, df in exceptions.items()]
    if other_tasks:
        extra.append(f"{max(DEFAULT_DF, OTHER_TASKS_FLOOR.df):g} for other tasks' models")
    return f"DF {DEFAULT_DF:g}" + (f" ({', '.join(extra)})" if extra else "")
