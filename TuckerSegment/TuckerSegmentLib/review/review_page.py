"""The review page: trame (Vue 3 + Vuetify 3, every asset from the installed packages) around
the review scene's remote views, which Slicer's own displayable managers render on the server.

Left drawer: the run's facts, a structure filter, fill opacity and outline toggles, and the
agreement table (sortable by Dice, NSD, volume difference; a click on a row centers both slice
views on that structure). Main area: original and compressed slice views side by side, a slice
slider that moves both, and the 3D view.
"""

from __future__ import annotations

from typing import Any

from .result_folder import ReviewResult
from .review_scene import COMPRESSED_VIEW, ORIGINAL_VIEW, THREE_D_VIEW, ReviewScene

TITLE = "TuckerSegment review"
FILL_OPACITY = 0.5  # Slicer's default 2D fill: the CT stays readable under the segments
HEADERS = [
    {"title": "structure", "key": "name", "sortable": True},
    {"title": "Dice", "key": "dice", "sortable": True, "align": "end"},
    {"title": "NSD", "key": "nsd", "sortable": True, "align": "end"},
    {"title": "ΔV ml", "key": "volume_difference_ml", "sortable": True, "align": "end"},
    {"title": "found by", "key": "status", "sortable": True},
]
PRESENT_IN = {"both": "both", "only_a": "original only", "only_b": "compressed only"}


def table_rows(result: ReviewResult) -> list[dict[str, Any]]:
    """One row per structure present in either result (absent-in-both ones say nothing)."""
    rows = []
    for s in result.agreement:
        if s.status == "absent":
            continue
        rows.append(
            {
                "name": s.name,
                "label": s.label,
                "dice": None if s.dice is None else round(s.dice, 4),
                "nsd": None if s.nsd is None else round(s.nsd, 4),
                "volume_difference_ml": round(s.volume_b_ml - s.volume_a_ml, 3),
                "status": PRESENT_IN.get(s.status, s.status),
            }
        )
    return rows


def quiet_offscreen_vtk() -> None:
    """Without a display, render with EGL at once: VTK would first try X and print a warning."""
    import os

    from .serve import has_display

    if not has_display():
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


def _noop_view_ui(*_: Any) -> None:
    """No per-view toolbar: the page's own controls act on both views at once."""


class ReviewPage:
    """The trame server, the scene it shows, and the page's controls bound to it."""

    def __init__(self, result: ReviewResult, server: Any = None, image_format: str = "png") -> None:
        from trame.app import get_server
        from trame_slicer.core import SlicerApp
        from trame_slicer.rca_view import register_rca_factories

        self.server = server or get_server("tuckersegment-review", client_type="vue3")
        self.result = result
        quiet_offscreen_vtk()
        self.app = SlicerApp()
        from vtkmodules.vtkCommonCore import vtkObject

        # VTK's deprecation notes (trame-slicer's resize observers) are not the reader's business
        vtkObject.GlobalWarningDisplayOff()
        register_rca_factories(
            self.app.view_manager,
            self.server,
            slice_view_ui_f=_noop_view_ui,
            three_d_view_ui_f=_noop_view_ui,
            rca_encoder=image_format,
        )
        self.scene = ReviewScene(result, self.app)
        self.views = self.scene.create_views()
        self._bind_state()
        self._build_ui()

    # state ↔ scene ---------------------------------------------------------------------

    def _bind_state(self) -> None:
        state = self.server.state
        low, high, step = self.scene.slice_range()
        state.update(
            {
                "trame__title": TITLE,
                "rows": table_rows(self.result),
                "facts": [{"label": k, "value": v} for k, v in self.result.facts()],
                "structure_filter": "",
                "fill_opacity": FILL_OPACITY,
                "outline": True,
                "slice_min": low,
                "slice_max": high,
                "slice_step": step or 1.0,
                "slice_offset": self.scene.slice_offset(),
                "jumped_to": "",
                "terms": self.scene.segment_terms(),
                "colors": {
                    name: "#{:02x}{:02x}{:02x}".format(*rgb)
                    for name, rgb in self.scene.segment_colors().items()
                },
            }
        )
        self.scene.set_fill_opacity(FILL_OPACITY)
        state.change("structure_filter")(self._on_filter)
        state.change("fill_opacity")(
            lambda fill_opacity, **_: self._apply(self.scene.set_fill_opacity, fill_opacity)
        )
        state.change("outline")(lambda outline, **_: self._apply(self.scene.set_outline, outline))
        state.change("slice_offset")(self._on_slice_offset)
        self.server.trigger("jump")(self.jump)
        # a scroll or drag in either view moves the other (Slicer's link logic): the slider follows
        self.scene.slice_nodes()[0].AddObserver("ModifiedEvent", self._on_slice_node_modified)

    def _render(self) -> None:
        for view in self.views.values():
            view.schedule_render()

    def _apply(self, setter: Any, value: Any) -> None:
        setter(value)
        self._render()

    def _on_filter(self, structure_filter: str, **_: Any) -> None:
        text = (structure_filter or "").strip().lower()
        names = (
            None
            if not text
            else {row["name"] for row in self.server.state.rows if text in row["name"].lower()}
        )
        self._apply(self.scene.show_structures, names)

    def _on_slice_offset(self, slice_offset: float, **_: Any) -> None:
        if slice_offset is not None and abs(slice_offset - self.scene.slice_offset()) > 1e-6:
            self._apply(self.scene.set_slice_offset, slice_offset)

    def _on_slice_node_modified(self, *_: Any) -> None:
        offset = self.scene.slice_offset()
        if abs(offset - (self.server.state.slice_offset or 0.0)) > 1e-6:
            with self.server.state:
                self.server.state.slice_offset = offset

    def jump(self, name: str) -> None:
        """Center both slice views on ``name`` (a click on its row)."""
        if self.scene.jump_to(name) is not None:
            with self.server.state:
                self.server.state.jumped_to = name
                self.server.state.slice_offset = self.scene.slice_offset()
        self._render()

    # the page ---------------------------------------------------------------------------

    def _view(self, side: str, element_id: str, **style: str) -> None:
        from trame.widgets import client, html
        from trame_slicer.app.logic import get_view_trame_id

        with html.Div(
            id=element_id,
            style="position: relative; " + " ".join(f"{k}: {v};" for k, v in style.items()),
        ):
            html.Div(
                side.lower() if side != THREE_D_VIEW else "3D: both",
                style="position: absolute; z-index: 2; left: 6px; top: 4px; color: #fff; "
                "font: 13px sans-serif; text-shadow: 0 0 3px #000; pointer-events: none;",
            )
            client.ServerTemplate(name=get_view_trame_id(self.server, self.views[side]))

    def _build_ui(self) -> None:
        from trame.ui.vuetify3 import SinglePageWithDrawerLayout
        from trame.widgets import html
        from trame.widgets import vuetify3 as v3

        row_click = (
            "(data) => ({ onClick: () => trigger('jump', [data.item.name]), "
            "class: data.item.name === jumped_to ? 'bg-blue-grey-darken-3' : '', "
            "style: 'cursor: pointer', 'data-structure': data.item.name })"
        )
        with SinglePageWithDrawerLayout(self.server, theme=("'dark'",)) as layout:
            layout.title.set_text(f"{TITLE}: {self.result.name}")
            layout.drawer.width = 540
            layout.footer.hide()
            with layout.drawer:
                with html.Table(
                    id="facts",
                    style="font: 13px sans-serif; margin: 8px 16px; border-spacing: 0 2px;",
                ):
                    with html.Tr(v_for="fact in facts", key="fact.label"):
                        html.Td(
                            "{{ fact.label }}",
                            style="opacity: 0.7; padding-right: 12px; white-space: nowrap;",
                        )
                        html.Td("{{ fact.value }}")
                with v3.VContainer(classes="py-1"):
                    v3.VTextField(
                        v_model=("structure_filter",),
                        label="filter structures",
                        density="compact",
                        clearable=True,
                        hide_details=True,
                        id="structure-filter",
                    )
                    with html.Div(id="fill-opacity"):
                        v3.VSlider(
                            v_model=("fill_opacity",),
                            min=0,
                            max=1,
                            step=0.05,
                            label="fill opacity",
                            density="compact",
                            hide_details=True,
                        )
                    v3.VSwitch(
                        v_model=("outline",),
                        label="outline",
                        density="compact",
                        hide_details=True,
                        id="outline",
                    )
                with v3.VDataTable(
                    headers=("headers", HEADERS),
                    items=("rows",),
                    search=("structure_filter",),
                    filter_keys=("['name']",),  # the filter matches names, as in the views
                    item_value="name",
                    density="compact",
                    items_per_page=-1,
                    hide_default_footer=True,
                    row_props=(row_click,),
                    id="agreement-table",
                ):
                    # the segment's color from the segmentation file, as Slicer shows it
                    with v3.Template(raw_attrs=['v-slot:item.name="{ item }"']):
                        html.Span(
                            classes="swatch",
                            style=(
                                "`display: inline-block; width: 12px; height: 12px; "
                                "margin-right: 6px; background: ${colors[item.name]}`",
                            ),
                            raw_attrs=[':data-color="colors[item.name]"'],
                        )
                        html.Span(
                            "{{ item.name }}",
                            raw_attrs=[
                                ':title="terms[item.name]"',
                                ':data-term="terms[item.name]"',
                            ],
                        )
                    with v3.Template(raw_attrs=['v-slot:item.dice="{ item }"']):
                        html.Span("{{ item.dice === null ? '—' : item.dice.toFixed(3) }}")
                    with v3.Template(raw_attrs=['v-slot:item.nsd="{ item }"']):
                        html.Span("{{ item.nsd === null ? '—' : item.nsd.toFixed(3) }}")
            with layout.content:
                with html.Div(style="display: flex; flex-direction: column; height: 100%;"):
                    with html.Div(style="display: flex; flex: 3; min-height: 0;"):
                        self._view(ORIGINAL_VIEW, "view-original", flex="1", margin="2px")
                        self._view(COMPRESSED_VIEW, "view-compressed", flex="1", margin="2px")
                    with html.Div(style="padding: 0 16px; display: flex; align-items: center;"):
                        html.Div(
                            "{{ jumped_to ? jumped_to + ' · ' : '' }}z {{ slice_offset.toFixed(1) }} mm",
                            id="slice-position",
                            style="min-width: 220px; font: 13px sans-serif;",
                        )
                        v3.VSlider(
                            v_model=("slice_offset",),
                            min=("slice_min",),
                            max=("slice_max",),
                            step=("slice_step",),
                            label="slice (mm)",
                            thumb_label=True,
                            density="compact",
                            hide_details=True,
                            id="slice-slider",
                        )
                    with html.Div(style="display: flex; flex: 2; min-height: 0;"):
                        self._view(THREE_D_VIEW, "view-3d", flex="1", margin="2px")
        self.layout = layout
