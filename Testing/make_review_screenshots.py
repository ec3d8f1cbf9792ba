"""Screenshots of the review page for Resources/Screenshots/ and the README: real renderings
(Slicer's displayable managers through trame-slicer, in Debian's Chromium), not mock-ups.

    .venv/bin/python Testing/make_review_screenshots.py [--out Resources/Screenshots]

Runs `tucker-segment demo` (the synthetic CT, TS's default full mode, test models, offline) into
a temporary folder, serves its result with `tucker-segment review`, and saves
``review.png`` (the page as it opens) and ``review-lowest-dice.png`` (after sorting by Dice
and clicking the lowest row, fill opaque). Not a test: the tests check the same page's pixels.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _command(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _serve(result: Path, env: dict) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [_command("tucker-segment"), "review", str(result), "--port", "0", "--no-browser"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    for line in process.stdout:
        found = re.search(r"(http://\S+)", line)
        if found:
            return process, found.group(1)
    raise SystemExit("review ended without serving")


def _settle(page, seconds: float = 4.0) -> None:  # noqa: ANN001
    """Let the server's renders reach the page (the views stream images)."""
    time.sleep(seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "Resources" / "Screenshots"))
    args = parser.parse_args()
    out = Path(args.out)
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("Debian's chromium is needed (.ci/setup installs it)")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as work:
        env = {**os.environ, "HOME": work, "TUCKERSEGMENT_CACHE": f"{work}/cache"}
        demo = Path(work) / "demo"
        subprocess.run(
            [_command("tucker-segment"), "demo", "-o", str(demo), "--progress", "none"],
            check=True,
            env=env,
        )
        process, address = _serve(demo / "segmentation.nii.gz", env)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium)
                page = browser.new_page(viewport={"width": 1500, "height": 940})
                page.goto(address)
                page.wait_for_selector("#agreement-table tbody tr", timeout=120_000)
                _settle(page)
                page.screenshot(path=str(out / "review.png"))
                page.locator("#agreement-table thead th", has_text="Dice").click()
                page.locator("#agreement-table tbody tr").first.click()
                page.locator("#fill-opacity [role=slider]").focus()
                page.keyboard.press("End")
                _settle(page)
                page.screenshot(path=str(out / "review-lowest-dice.png"))
                browser.close()
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(f"wrote {out / 'review.png'} and {out / 'review-lowest-dice.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
