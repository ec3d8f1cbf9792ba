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
}


def is_default_df(df: float) -> bool:
    """Whether a DF (e.g. a slider's 0.30000000000000004) means the default."""
    return abs(df - DEFAULT_DF) < 1e-6


def default_df(model: str) -> float:
    """The DF a model runs at when the user gives none."""
    floor = ZERO_SHOT_FLOORS.get(model)
    return max(DEFAULT_DF, floor.df) if floor else DEFAULT_DF


def below_floor_warning(model: str, df: float) -> str | None:
    """A one-line warning when an explicitly chosen DF is below the model's zero-shot floor."""
    floor = ZERO_SHOT_FLOORS.get(model)
    if floor is None or df >= floor.df:
        return None
    return (
        f"DF {df:g} for {model} is below its zero-shot fidelity floor (DF {floor.df:g}: "
        f"{floor.basis}); use it with a fine-tuned model or check the agreement with --compare"
    )


def defaults_text() -> str:
    """``DF 0.3 (0.5 for the cardiac expert)``: the defaults in one phrase."""
    exceptions = {
        name: default_df(name) for name in ZERO_SHOT_FLOORS if default_df(name) != DEFAULT_DF
    }
    extra = ", ".join(f"{df:g} for the {name} expert" for name, df in exceptions.items())
    return f"DF {DEFAULT_DF:g}" + (f" ({extra})" if extra else "")
