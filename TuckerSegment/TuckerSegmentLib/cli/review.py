"""`tucker-segment review RESULT`: the compare result in the browser, drawn by Slicer's own
rendering (trame-slicer): original and compressed side by side, 3D, the agreement table.

    tucker-segment review ct_seg.seg.nrrd            # http://127.0.0.1:8080/
    tucker-segment review ct_seg.seg.nrrd --host 0.0.0.0 --allow-remote   # prints a token URL
"""

from __future__ import annotations

import argparse

from ..errors import TuckerSegmentError

# the defaults serve.py uses (no heavy import: trame loads only when the page starts)
DEFAULT_PORT = 8080
IMAGE_FORMATS = ("png", "jpeg", "webp")

MISSING_EXTRA = (
    "the review page needs the optional extra: pip install 'tuckersegment[review]' && pip "
    "install --no-deps slicer-core==5.11.0.6 slicer-layer-dm==2.0.0 vtk==9.6.0 (README, Review "
    "in the browser; .ci/setup does both)"
)


def add_review(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "review",
        help="review a `segment --compare` result in the browser (original | compressed, 3D, "
        "agreement table)",
        description="Serve a local page for a `segment --compare` result: linked axial views "
        "of the original and the compressed segmentation, a 3D view, the per-structure "
        "agreement table (sortable; a click on a row jumps both views to the structure), "
        "and the run's facts. Rendered by Slicer's own classes through trame-slicer; every "
        "web asset comes from the installed packages (works offline). Ctrl-C stops it.",
    )
    p.add_argument(
        "result",
        help="the compressed segmentation `segment --compare` wrote (or its .json, or the "
        "folder holding one result)",
    )
    p.add_argument("--ct", help="the CT, if it is no longer where the run read it")
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port (0: any free port; default 8080)"
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only); any other needs "
        "--allow-remote and the printed access token",
    )
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow --host other than this machine (the page then asks for a token)",
    )
    p.add_argument(
        "--image-format",
        choices=IMAGE_FORMATS,
        default="png",
        help="how views travel to the page: png (lossless, default), jpeg/webp (slow links)",
    )
    p.add_argument("--no-browser", action="store_true", help="only print the address")
    p.set_defaults(run=run_review)


def check_review_extra() -> None:
    """One line before any work when the optional extra is not installed."""
    try:
        import trame_slicer.core  # noqa: F401  (also needs slicer-core 5.11's layer DM)
        import trame_vuetify  # noqa: F401
    except ImportError as error:
        raise TuckerSegmentError(f"{MISSING_EXTRA}: {error}") from None


def run_review(args: argparse.Namespace) -> int:
    from ..review.access import access_token
    from ..review.result_folder import open_result
    from ..review.serve import check_port, serve

    token = access_token(args.host, args.allow_remote)  # each refused before any slow work
    check_port(args.host, args.port)
    check_review_extra()
    result = open_result(args.result, args.ct)
    serve(
        result,
        host=args.host,
        port=args.port,
        token=token,
        image_format=args.image_format,
        open_browser=False if args.no_browser else None,
    )
    return 0
