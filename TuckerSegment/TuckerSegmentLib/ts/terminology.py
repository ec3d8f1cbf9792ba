"""Standard terminology (SNOMED CT codes) per TS structure, from TotalSegmentator's own mapping.

TS ships the codes it writes into DICOM-SEG (``totalsegmentator.dicom_utils.load_snomed_mapping``);
they are turned into Slicer's ``TerminologyEntry`` format here, so a segment in a ``.seg.nrrd``
or a segmentation node says what it is in DICOM terms, not only by its name.
"""

from __future__ import annotations

from functools import cache

CATEGORY_CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


def _code(entry: dict | None) -> list[str]:
    if not entry or not entry.get("value"):
        return ["", "", ""]
    return [entry["scheme"], entry["value"], entry["meaning"]]


@cache
def structure_terminology(task: str = "total") -> dict[int, dict]:
    """Label id → terminology (slicerio's dict form) for every structure of a task that TS has
    codes for."""
    from totalsegmentator.dicom_utils import load_snomed_mapping

    from .structures import structure_names

    codes = load_snomed_mapping()
    terms = {}
    for label, name in structure_names(task).items():
        entry = codes.get(name)
        if entry is None:
            continue
        term = {
            "contextName": CATEGORY_CONTEXT,
            "category": _code(entry["property_category"]),
            "type": _code(entry["property_type"]),
            "typeModifier": _code(entry["property_modifier"]),
            "anatomicContextName": ANATOMIC_CONTEXT,
            "anatomicRegion": _code(entry["anatomic_region"]),
            "anatomicRegionModifier": _code(entry["anatomic_modifier"]),
        }
        terms[label] = term
    return terms


def terminology_entry(label: int) -> str | None:
    """Slicer's ``TerminologyEntry`` tag value for a TS label id (None if TS has no codes)."""
    from slicerio.segmentation import terminology_entry_to_string

    term = structure_terminology().get(label)
    return None if term is None else terminology_entry_to_string(term)
