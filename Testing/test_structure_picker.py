"""The panel's ROI subset picker (Qt-free part): TS's names, search, the stored string."""

from __future__ import annotations

from TuckerSegmentLib.panel.structure_picker import (
    format_subset,
    matches,
    parse_subset,
    structure_choices,
    subset_summary,
)


def test_the_choices_are_tss_117_structures_alphabetical():
    from TuckerSegmentLib.ts.structures import structure_names

    names = structure_choices()
    assert len(names) == 117 == len(set(names)) and names == sorted(names)
    assert set(names) == set(structure_names().values())


def test_search_matches_every_word_with_underscores_as_spaces():
    names = structure_choices()
    assert [n for n in names if matches(n, "kid left")] == ["kidney_cyst_left", "kidney_left"]
    assert [n for n in names if matches(n, "Cyst_Left")] == ["kidney_cyst_left"]
    assert "vertebrae_L1" in [n for n in names if matches(n, "l1")]
    assert all(matches(n, "") for n in names)
    assert not any(matches(n, "nothing like this") for n in names)


def test_the_subset_survives_the_parameter_node_string():
    text = format_subset(["liver", "spleen", "liver"])
    assert text == "liver spleen"
    assert parse_subset(text) == ("liver", "spleen")
    assert parse_subset(" liver, spleen;kidney_left ") == ("liver", "spleen", "kidney_left")
    assert parse_subset("") == ()


def test_the_summary_says_all_or_which():
    assert subset_summary((), 117).startswith("All 117 structures")
    many = subset_summary(("a", "b", "c", "d", "e", "f"), 117)
    assert many.startswith("6 of 117: a, b, c, d and 2 more.")
