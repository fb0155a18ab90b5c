"""What an operator does in the Dagster UI, in a real browser, against the embedded default.

1. the asset graph shows the eight assets and exactly the twelve lineage edges
   (the seven of the build graph, and guest_source -- the cheap observation
   of the guest's source -- into freebsd_source and every build and stage)
   (read from the rendered SVG: each edge path's endpoints land on its two
   nodes' boxes);
2. *Materialize all* → partition ``amd64`` → *Launch 1 run*; the run page
   reaches *Success* (and the instance agrees);
3. ``kernel_stage``'s page shows ``size_bytes``, ``tree_sha256`` and
   ``sha256:boot/kernel/kernel`` equal to the latest materialization in the
   instance;
4. the automation page lists the ``nightly_build`` schedule.

Screenshots: ``graph.png`` and ``asset.png`` in the module's tmp dir
(printed with ``-s``; failure screenshots land there too).
"""

from __future__ import annotations

import math
import re
from urllib.parse import quote

import dagster as dg
from playwright.sync_api import Locator, Page, expect

from fruix_dagster.defs.records import latest

ASSETS = ["guest_source", "freebsd_source", "world_build", "kernel_build", "world_stage", "kernel_stage",
          "headers_slice", "bootloader_slice"]
# guest_source is observed (by the sensor), never materialized
MATERIALIZED = ASSETS[1:]
EXPECTED_EDGES = {
    ("freebsd_source", "world_build"),
    ("freebsd_source", "kernel_build"),
    ("world_build", "kernel_build"),
    ("world_build", "world_stage"),
    ("kernel_build", "kernel_stage"),
    ("world_stage", "headers_slice"),
    ("world_stage", "bootloader_slice"),
    # guest_source is a direct upstream of each asset whose staleness follows
    # the guest's source (defs/assets.py: Dagster 1.13 reads staleness from
    # direct upstreams only)
    *(("guest_source", a) for a in ("freebsd_source", "world_build", "kernel_build",
                                    "world_stage", "kernel_stage")),
}
GROUP_FILTER = 'group:"fruix_build"'
PARTITION = "amd64"
RUN_TIMEOUT_MS = 240_000
KERNEL_KEYS = ("size_bytes", "tree_sha256", "sha256:boot/kernel/kernel")


def graph_node(page: Page, asset: str) -> Locator:
    """The node box of ``asset`` in the rendered lineage graph (an SVG foreignObject)."""
    return page.locator("svg foreignObject").filter(has=page.get_by_text(asset, exact=True))


def edge_paths(page: Page) -> Locator:
    """The rendered lineage edges: SVG paths ending in an arrowhead marker."""
    return page.locator("svg path[marker-end]")


def _rect_distance(px: float, py: float, box: tuple[float, float, float, float]) -> float:
    x, y, w, h = box
    dx = max(x - px, 0.0, px - (x + w))
    dy = max(y - py, 0.0, py - (y + h))
    return math.hypot(dx, dy)


def rendered_edges(page: Page) -> set[tuple[str, str]]:
    """(upstream, downstream) for every drawn edge, from the geometry of the SVG.

    Nodes and edges share one SVG coordinate system: an edge path starts on
    its upstream node's box and its arrow ends just outside the downstream
    node's box.  Each endpoint is attributed to the nearest box and must be
    within a few units of it.
    """
    boxes: dict[str, tuple[float, float, float, float]] = {}
    for asset in ASSETS:
        node = graph_node(page, asset)
        expect(node).to_have_count(1)
        boxes[asset] = tuple(float(node.get_attribute(a)) for a in ("x", "y", "width", "height"))  # type: ignore[assignment]
    edges = set()
    for d in edge_paths(page).evaluate_all("ps => ps.map(p => p.getAttribute('d'))"):
        nums = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", d)]
        assert len(nums) >= 4, d
        ends = []
        for px, py in ((nums[0], nums[1]), (nums[-2], nums[-1])):
            dist, name = min((_rect_distance(px, py, box), name) for name, box in boxes.items())
            assert dist <= 12, f"edge {d!r}: endpoint ({px}, {py}) is {dist:.1f} from the nearest node {name}"
            ends.append(name)
        edges.add((ends[0], ends[1]))
    return edges


def open_graph(page: Page, dagster_ui) -> None:
    """Lineage, filtered to the build group (the URL the UI itself produces for that filter).

    Typing the filter into the CodeMirror search raced with its autocomplete
    under load (``group:"fruix"`` was accepted mid-word), so the test opens
    the filtered view by its address, as a bookmark would.
    """
    page.goto(dagster_ui.url(f"/asset-groups~{quote(GROUP_FILTER, safe='')}/"))
    page.mouse.move(0, 0)      # hovering a node would draw its edges a second time, highlighted
    expect(page).to_have_url(re.compile(re.escape(quote(GROUP_FILTER, safe=""))))
    for asset in ASSETS:
        expect(graph_node(page, asset)).to_be_visible()
    expect(edge_paths(page)).to_have_count(len(EXPECTED_EDGES))
    expect(page.get_by_text("Join the Dagster community")).to_have_count(0)


def metadata_value_cell(page: Page, key: str) -> Locator:
    """The value cell of ``key`` in the asset page's metadata table (Key | Timestamp | Value)."""
    row = page.locator("tr", has=page.locator("td:first-child").get_by_text(key, exact=True))
    return row.locator("td").nth(2)


def test_asset_graph_shows_all_assets_and_lineage(page: Page, dagster_ui, ui_artifacts):
    open_graph(page, dagster_ui)
    assert rendered_edges(page) == EXPECTED_EDGES
    shot = ui_artifacts / "graph.png"
    page.screenshot(path=str(shot))
    print(f"\ngraph screenshot: {shot}")


def test_materialize_all_for_amd64_then_kernel_stage_figures_match_the_instance(page: Page, dagster_ui,
                                                                                  ui_artifacts):
    # 2. Materialize all -> partition amd64 -> launch
    open_graph(page, dagster_ui)
    page.get_by_role("button", name=re.compile(r"\bMaterialize all")).click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    expect(dialog).to_contain_text(f"materialize {len(MATERIALIZED)} assets")
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_role("menuitem", name=PARTITION).click()
    expect(dialog).to_contain_text("1 partition")
    launch = dialog.get_by_role("button", name="Launch 1 run")
    expect(launch).to_be_enabled()
    launch.click()

    # the toast names the run; follow it to the run page and wait for the end state
    view = page.get_by_role("link", name="View", exact=True)
    expect(view).to_be_visible()
    href = view.get_attribute("href")
    assert href and re.fullmatch(r"/runs/[0-9a-f-]{36}", href), href
    run_id = href.rsplit("/", 1)[1]
    view.click()
    expect(page).to_have_url(re.compile(re.escape(href) + "$"))
    expect(page.get_by_text(f"partition: {PARTITION}")).to_be_visible()
    final = page.get_by_role("img", name=re.compile(r"^run_(success|failure|canceled)$")).first
    expect(final).to_be_visible(timeout=RUN_TIMEOUT_MS)
    status_tag = page.locator(".BaseTag", has=page.get_by_role("img", name="run_success"))
    expect(status_tag).to_have_text("Success")

    with dagster_ui.instance() as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS, run
        assert run.tags.get("dagster/partition") == PARTITION
        recs = {a: latest(instance, a, PARTITION) for a in MATERIALIZED}
        assert {a: (r.run_id if r else None) for a, r in recs.items()} == {a: run_id for a in MATERIALIZED}
        kernel = recs["kernel_stage"].metadata
    assert kernel["size_bytes"] > 0
    assert re.fullmatch(r"[0-9a-f]{64}", kernel["tree_sha256"])
    assert re.fullmatch(r"[0-9a-f]{64}", kernel["sha256:boot/kernel/kernel"])

    # 3. kernel_stage's page shows the instance's figures
    page.goto(dagster_ui.url("/assets/kernel_stage"))
    expect(page.get_by_text("Latest materialization")).to_be_visible()
    shown = {}
    for key in KERNEL_KEYS:
        cell = metadata_value_cell(page, key)
        expect(cell).to_have_text(str(kernel[key]))
        shown[key] = cell.inner_text().strip()
    assert shown == {k: str(kernel[k]) for k in KERNEL_KEYS}
    shot = ui_artifacts / "asset.png"
    page.screenshot(path=str(shot))
    print(f"\nasset screenshot: {shot}\nkernel_stage in the UI: {shown}")


def test_automation_page_lists_nightly_build_schedule(page: Page, dagster_ui):
    page.goto(dagster_ui.url("/automation"))
    loaded = page.get_by_text("No automations").or_(page.locator('a[href*="/schedules/"], a[href*="/sensors/"]'))
    expect(loaded.first).to_be_visible()
    schedule = page.locator('a[href$="/schedules/nightly_build"]')
    expect(schedule).to_be_visible(timeout=5_000)
    expect(schedule).to_contain_text("nightly_build")
