"""`tucker-segment review`: the compare result in a real browser (Debian's Chromium, headless,
driven by Playwright) against the real server on 127.0.0.1. What the views show is read back
from the page's pixels and checked against the label files."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import SEGMENT_CPU, needs_shared, start_serving, stop_serving

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _start_review(result: Path, *args: str, env: dict) -> tuple[subprocess.Popen, str]:
    process, address, _ = start_serving(
        "review", str(result), "--port", "0", "--no-browser", *args, env=env
    )
    return process, address


@pytest.fixture(scope="module")
def review_env(isolated_home) -> dict:
    import os

    return {**os.environ, **isolated_home}


@pytest.fixture(scope="module")
def segment_review(tmp_path_factory, review_env) -> tuple[Path, str, int]:
    """`segment --compare --review` of the 3 mm test model at DF 0.3 on a phantom it was not
    trained on (structures agree to various degrees): the result it wrote, what it printed,
    and the status of the page it then served."""
    import nibabel as nib
    from TuckerSegmentLib.demo.phantom import make_phantom

    folder = tmp_path_factory.mktemp("review")
    ct = folder / "ct.nii.gz"
    image, _ = make_phantom(4343, spacing=3.0).to_nifti()
    nib.save(image, str(ct))
    out = folder / "result" / "seg.seg.nrrd"
    out.parent.mkdir()
    process, address, printed = start_serving(
        *SEGMENT_CPU,
        "-i",
        str(ct),
        "-o",
        str(out),
        "--fast",
        "--df",
        "0.3",
        "--compare",
        "--review",
        env=review_env,
    )
    try:
        status = urllib.request.urlopen(address, timeout=60).status
    finally:
        stop_serving(process)
    return out, printed, status


@pytest.fixture(scope="module")
def result(segment_review) -> Path:
    return segment_review[0]


def test_segment_review_serves_the_result_it_just_wrote(segment_review, review_env, tmp_path):
    """`segment --compare --review` writes the result, prints its table, then serves it;
    --review without --compare is one line before any work."""
    out, printed, status = segment_review
    assert status == 200 and "mean Dice" in printed and out.is_file()
    exe = Path(sys.executable).with_name("tucker-segment")
    run = subprocess.run(
        [str(exe), *SEGMENT_CPU, "-i", "x.nii.gz", "-o", str(tmp_path / "o.nii.gz"), "--review"],
        capture_output=True,
        text=True,
        env=review_env,
        timeout=120,
    )
    assert run.returncode == 1
    assert run.stderr.strip() == "tucker-segment: error: --review shows a comparison: add --compare"


@pytest.fixture(scope="module")
def server(result, review_env):
    process, address = _start_review(result, env=review_env)
    yield address
    stop_serving(process)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "Debian's chromium is needed for the browser tests: .ci/setup installs it"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


class Page:
    """One browser tab on the review page, recording console errors and every request."""

    def __init__(self, browser, address: str) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        self.errors: list[str] = []
        self.hosts: set[str] = set()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.hosts.add(r.url.split("/")[2]))
        self.response = self.page.goto(address)

    def wait_ready(self) -> None:
        self.page.wait_for_selector("#agreement-table tbody tr", timeout=120_000)
        self.settled("#view-original")
        self.settled("#view-compressed")

    def pixels(self, selector: str) -> np.ndarray:
        from PIL import Image

        shot = self.page.locator(selector).screenshot()
        return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(int)

    def settled(
        self,
        selector: str,
        timeout: float = 60,
        until: Callable[[np.ndarray], bool] = lambda pixels: True,
    ) -> np.ndarray:
        """The view's pixels once two looks 0.5 s apart agree and show what `until` expects.

        Two equal looks alone are not enough on a loaded machine: the server may not have
        started the render a click asked for, so both looks show the view before the click."""
        previous = self.pixels(selector)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.5)
            current = self.pixels(selector)
            if np.array_equal(current, previous) and current.std() > 1 and until(current):
                return current
            previous = current
        raise AssertionError(f"{selector} did not settle on the expected picture in {timeout} s")

    def slice_text(self) -> str:
        return self.page.locator("#slice-position").inner_text()

    def close(self) -> None:
        self.page.close()


def _mask(pixels: np.ndarray, color: tuple[int, int, int], tolerance: int = 3) -> np.ndarray:
    return np.abs(pixels - np.asarray(color)).max(axis=-1) <= tolerance


def _segments(path: Path) -> dict:
    import slicerio

    return slicerio.read_segmentation(str(path))


def _color255(segment: dict) -> tuple[int, int, int]:
    return tuple(round(255 * c) for c in segment["color"])


def _agreement(result: Path) -> list[dict]:
    import csv

    with open(result.with_name("seg.agreement.csv")) as handle:
        return list(csv.DictReader(handle))


def _slice_dice(result: Path, name: str, z: float) -> tuple[float, int, int]:
    """Dice of one structure on the axial slice at RAS z (mm), from the two label files."""
    masks = []
    for path in (result.with_name("seg.original.seg.nrrd"), result):
        seg = _segments(path)
        voxels = np.asarray(seg["voxels"])
        label = (
            next(s["labelValue"] for s in seg["segments"] if s["name"] == name)
            if any(s["name"] == name for s in seg["segments"])
            else None
        )
        ijk_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(seg["ijkToLPS"], dtype=float)
        k = int(round((np.linalg.inv(ijk_to_ras) @ [0.0, 0.0, z, 1.0])[2]))
        masks.append(
            np.zeros(voxels.shape[:2], bool) if label is None else voxels[:, :, k] == label
        )
    a, b = masks
    total = int(a.sum() + b.sum())
    return (2 * int((a & b).sum()) / total if total else 1.0), int(a.sum()), int(b.sum())


def test_the_page_shows_the_result_offline_with_slicers_names_and_colors(browser, server, result):
    """No console error, no request beyond 127.0.0.1; the table lists every structure present
    (names and colors exactly as the .seg.nrrd has them), the run's facts; both slice views
    show the segmentations' colors and the 3D view draws something."""
    page = Page(browser, server)
    try:
        page.wait_ready()
        rows = page.page.locator("#agreement-table tbody tr")
        present = [r for r in _agreement(result) if r["status"] != "absent"]
        assert rows.count() == len(present)
        colors = {
            s["name"]: "#{:02x}{:02x}{:02x}".format(*_color255(s))
            for path in (result, result.with_name("seg.original.seg.nrrd"))
            for s in _segments(path)["segments"]
        }
        shown = page.page.eval_on_selector_all(
            "#agreement-table tbody tr",
            "rows => rows.map(r => [r.cells[0].innerText.trim(), "
            "r.querySelector('.swatch').dataset.color])",
        )
        assert {name: color for name, color in shown} == {
            r["name"]: colors[r["name"]] for r in present
        }
        terms = {
            s["name"]: "{2} ({0} {1})".format(*s["terminology"]["type"])
            for s in _segments(result)["segments"]
        }
        shown_terms = dict(
            page.page.eval_on_selector_all(
                "#agreement-table tbody tr [data-term]",
                "spans => spans.map(s => [s.innerText.trim(), s.dataset.term])",
            )
        )
        assert terms and all(shown_terms[name] == term for name, term in terms.items())
        facts = page.page.locator("#facts").inner_text()
        assert "DF 0.3" in facts and "expert 3mm" in facts and "parameters" in facts
        for view in ("#view-original", "#view-compressed"):
            pixels = page.settled(view)
            seen = [
                n
                for n, c in colors.items()
                if _mask(pixels, tuple(int(c[i : i + 2], 16) for i in (1, 3, 5))).sum() >= 20
            ]
            assert len(seen) >= 3, (view, seen)
        three_d = page.settled("#view-3d")
        colored = (three_d.max(axis=-1) - three_d.min(axis=-1)) > 40  # the background is gray
        assert colored.mean() > 0.02, "the 3D view shows the surfaces"
        assert page.errors == []
        assert page.hosts == {server.split("/")[2]}
    finally:
        page.close()


def test_a_row_jumps_both_views_and_they_differ_as_dice_says(browser, server, result):
    """Sorted by Dice, the lowest-Dice structure's row moves both views to it; with the fill
    opaque and outlines off, the pixels of its color in the two views agree exactly as much
    as the label files do on that slice (pixel Dice ≈ voxel Dice), and differ when Dice < 1."""
    page = Page(browser, server)
    try:
        page.wait_ready()
        page.page.locator("#agreement-table thead th", has_text="Dice").click()
        first = page.page.locator("#agreement-table tbody tr").first
        cells = first.locator("td")
        name = cells.nth(0).inner_text().strip()
        table = {r["name"]: r for r in _agreement(result) if r["dice"]}
        lowest = min(table.values(), key=lambda r: float(r["dice"]))
        assert name == lowest["name"], "sorting by Dice puts the lowest first"
        before = page.slice_text()
        first.click()
        page.page.wait_for_function(
            f"document.querySelector('#slice-position').innerText.startsWith({json.dumps(name)})"
        )
        assert page.slice_text() != before
        z = float(re.search(r"z (-?[\d.]+) mm", page.slice_text()).group(1))
        page.page.uncheck("#outline")
        page.page.locator("#fill-opacity [role=slider]").focus()
        page.page.keyboard.press("End")  # opaque: the fill shows the segment's own color
        color = next(
            _color255(s)
            for s in _segments(result.with_name("seg.original.seg.nrrd"))["segments"]
            if s["name"] == name
        )
        voxel_dice, in_original, in_compressed = _slice_dice(result, name, z)
        assert in_original > 0, "the jump lands on the structure"
        left = _mask(page.settled("#view-original", until=lambda p: _mask(p, color).any()), color)
        right = _mask(
            page.settled(
                "#view-compressed", until=lambda p: _mask(p, color).any() == (in_compressed > 0)
            ),
            color,
        )
        assert left.shape == right.shape
        pixel_dice = 2 * (left & right).sum() / (left.sum() + right.sum())
        assert abs(pixel_dice - voxel_dice) <= 0.1, (name, pixel_dice, voxel_dice)
        assert float(lowest["dice"]) < 1 and pixel_dice < 1
        assert page.errors == []
    finally:
        page.close()


def test_scrolling_one_view_moves_both_and_the_filter_hides_the_rest(browser, server, result):
    """A mouse wheel over the left view changes the slice of both (Slicer's linked views);
    the structure filter keeps the table's and the views' other structures out."""
    page = Page(browser, server)
    try:
        page.wait_ready()
        before = page.slice_text()
        box = page.page.locator("#view-original").bounding_box()
        page.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        for _ in range(3):
            page.page.mouse.wheel(0, 120)
            time.sleep(0.3)
        page.page.wait_for_function(
            f"document.querySelector('#slice-position').innerText !== {json.dumps(before)}"
        )
        left, right = page.settled("#view-original"), page.settled("#view-compressed")
        assert left.shape == right.shape
        page.page.fill("#structure-filter", "both")  # names only, not the "found by" column
        page.page.wait_for_function(
            "document.querySelector('#agreement-table tbody').innerText.includes('No data')"
        )
        page.page.fill("#structure-filter", "liver")
        page.page.wait_for_function(
            "document.querySelectorAll('#agreement-table tbody tr').length === 1"
        )
        spleen = next(
            _color255(s)
            for s in _segments(result.with_name("seg.original.seg.nrrd"))["segments"]
            if s["name"] == "spleen"
        )
        liver = next(
            _color255(s)
            for s in _segments(result.with_name("seg.original.seg.nrrd"))["segments"]
            if s["name"] == "liver"
        )
        page.page.locator("#agreement-table tbody tr").first.click()
        for view in ("#view-original", "#view-compressed"):
            shown = page.settled(view, until=lambda p: _mask(p, liver).any())  # jumped to liver
            assert _mask(shown, spleen).sum() == 0, view
        assert page.errors == []
    finally:
        page.close()


def test_another_address_needs_the_flag_and_then_the_token(browser, result, review_env):
    """--host 0.0.0.0 is refused without --allow-remote; with it, a request without the
    printed token gets the refusal page, the printed address opens the page."""
    exe = Path(sys.executable).with_name("tucker-segment")
    refused = subprocess.run(
        [str(exe), "review", str(result), "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        env=review_env,
        timeout=120,
    )
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "tucker-segment: error: --host 0.0.0.0 would show the CT to other machines: add "
        "--allow-remote to listen there (the page then needs the access token printed at start)"
    ]
    process, address = _start_review(result, "--host", "0.0.0.0", "--allow-remote", env=review_env)
    try:
        port = address.split(":")[2].split("/")[0]
        token = address.split("token=")[1]
        local = f"http://127.0.0.1:{port}/"
        for bare in (local, local + "index.html", local + "ws", f"{local}?token=wrong"):
            with pytest.raises(urllib.error.HTTPError) as refusal:
                urllib.request.urlopen(bare, timeout=30)
            assert refusal.value.code == 403
            assert "Access token needed" in refusal.value.read().decode()
        page = Page(browser, f"{local}?token={token}")
        try:
            page.wait_ready()
            assert page.errors == []
        finally:
            page.close()
    finally:
        stop_serving(process)


@pytest.mark.parametrize("damage", ["missing", "not-compare", "no-original", "corrupt"])
def test_a_missing_or_broken_result_is_one_line(damage, result, review_env, tmp_path):
    """Before any server starts: a missing result, a run without --compare, a missing
    original, an unreadable segmentation — each one line and exit 1."""
    folder = tmp_path / "r"
    shutil.copytree(result.parent, folder)
    target = folder / result.name
    expected = {
        "missing": "result not found",
        "not-compare": "was not made with --compare",
        "no-original": "seg.original.* (the original networks' labels) is missing",
        "corrupt": "cannot read",
    }[damage]
    if damage == "missing":
        target = tmp_path / "nowhere" / "seg.seg.nrrd"
    elif damage == "not-compare":
        sidecar = json.loads((folder / "seg.json").read_text())
        del sidecar["comparison"]
        (folder / "seg.json").write_text(json.dumps(sidecar))
    elif damage == "no-original":
        (folder / "seg.original.seg.nrrd").unlink()
    else:
        (folder / "seg.seg.nrrd").write_bytes(b"NRRD0004\nnot really\n")
    exe = Path(sys.executable).with_name("tucker-segment")
    run = subprocess.run(
        [str(exe), "review", str(target), "--port", "0", "--no-browser"],
        capture_output=True,
        text=True,
        env=review_env,
        timeout=240,
    )
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 1 and len(lines) == 1 and expected in lines[0], run.stderr


def test_without_the_extra_review_says_how_to_install_it(cli, monkeypatch, result):
    monkeypatch.setitem(sys.modules, "trame_slicer.core", None)  # as if not installed
    run = cli("review", str(result), "--port", "0", "--no-browser")
    assert run.returncode == 1
    assert run.stderr.startswith(
        "tucker-segment: error: the review page needs the optional extra: "
        "pip install 'tuckersegment[review]'"
    )
    assert len(run.stderr.strip().splitlines()) == 1


@needs_shared
def test_a_dicom_series_ct_is_read_as_segment_reads_it(result):
    """A result made from a DICOM series shows that series: read by `segment`'s own reader
    into the scene (`--ct` names it here; a DICOM run's sidecar names it the same way)."""
    from conftest import SHARED
    from trame_slicer.core import SlicerApp
    from TuckerSegmentLib.pipeline.input_image import load_ct
    from TuckerSegmentLib.review.result_folder import open_result
    from TuckerSegmentLib.review.review_scene import ReviewScene

    series = SHARED / "example_ct_dicom"
    reviewed = open_result(result, ct=series)
    assert reviewed.ct == series.resolve()
    scene = ReviewScene(reviewed, SlicerApp())
    expected = load_ct(series).image
    image = scene.volume.GetImageData()
    assert list(image.GetDimensions()) == list(expected.shape[:3])
    assert list(scene.volume.GetSpacing()) == pytest.approx(
        [float(z) for z in expected.header.get_zooms()[:3]]
    )


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_a_port_that_cannot_exist_is_one_line(port, cli, tmp_path):
    result = cli("review", str(tmp_path / "any.nii.gz"), f"--port={port}", "--no-browser")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"tucker-segment: error: --port {port}: a port number from 0 to 65535 (0: any free port)"
    )
