"""The panel's ROI subset picker, without Qt: TS's structure names, the search filter, and the
chosen names as the one string the parameter node keeps.

The panel lists `structure_choices()` as checkable rows, hides the rows `matches` rejects for the
search text, and stores the checked names with `format_subset`; the run reads them back with
`parse_subset` and passes them to `segment --roi-subset` (TS's --roi_subset).
"""

from __future__ import annotations

import re
from collections.abc import Iterable


def structure_choices() -> list[str]:
    """TS's 117 structure names, alphabetical (TotalSegmentator must be installed)."""
    from ..ts.structures import structure_names

    return sorted(structure_names().values())


def matches(name: str, query: str) -> bool:
    """Whether a structure belongs in the filtered list: every word of the query appears in the
    name, underscores read as spaces (``kid left`` finds kidney_left, ``L1`` vertebrae_L1)."""
    words = query.lower().replace("_", " ").split()
    text = name.lower().replace("_", " ")
    return all(word in text for word in words)


def parse_subset(text: str) -> tuple[str, ...]:
    """The names in the stored string (spaces or commas between them), each once, in order."""
    names = [n for n in re.split(r"[\s,;]+", text or "") if n]
    return tuple(dict.fromkeys(names))


def format_subset(names: Iterable[str]) -> str:
    return " ".join(dict.fromkeys(names))


def subset_summary(names: tuple[str, ...], total: int) -> str:
    """What the label under the picker says: all structures, or which ones."""
    if not names:
        return f"All {total} structures (check some to segment only those, faster)."
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return f"{len(names)} of {total}: {shown}. TS's 6 mm model finds them first; only they are segmented."
